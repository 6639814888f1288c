"""What a self-drafter can buy on this engine: the ceiling per exit layer (``draft_ceiling.py``) from the measured
costs and the skill a drafter head reaches offline (``learnability.py``), priced under ideal policies
(``policies.py``, pure)."""
