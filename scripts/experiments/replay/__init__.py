"""Recorded greedy outputs replayed without decoding: online DVI learning (``online.py``) and the lookup drafter
chains (``lookup.py``)."""
