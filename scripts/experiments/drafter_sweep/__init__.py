"""The drafter's settings chosen by measured tokens/s (``sweep.py``): the online phase (one DVI run per trained
configuration), the deployed phase (``deployed.py``: every variant frozen on Spec-Bench) and their report
(``report.py``)."""
