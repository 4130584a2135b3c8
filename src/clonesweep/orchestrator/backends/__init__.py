"""Execution backends: the contract (``base.py``), its in-process twin, and Ray (``ray/``)."""
