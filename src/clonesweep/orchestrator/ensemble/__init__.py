"""Seeded ensembles: running the members (``run.py``), the members as a policy of the one loop
(``members.py``), scoring (``score.py``) and export (``export.py``)."""
