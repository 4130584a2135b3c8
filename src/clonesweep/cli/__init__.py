"""The ``clonesweep`` command: parsing and printing only; the work lives in the orchestrator."""

from clonesweep.cli.main import main

__all__ = ["main"]
