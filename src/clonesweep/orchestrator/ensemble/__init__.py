"""Seeded ensembles: running the members (``run.py``), scoring (``score.py``) and export
(``export.py``)."""
