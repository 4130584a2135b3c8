"""Example model factories used by the sweep files in ``configs/`` (and the docs)."""
