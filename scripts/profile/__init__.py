"""The parts of ``scripts/profile_block.py``: the block cost model and its report (pure), and the timing."""
