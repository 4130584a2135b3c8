"""Optuna's own log, lowered for a command line or a notebook: each trial's INFO line
("Trial 3 finished with value ...", "A new study created ...") says what the progress view
already shows. Warnings and errors still pass. ``--verbose`` (or not calling this) keeps
Optuna's default."""

from __future__ import annotations

import optuna

__all__ = ["quiet_optuna"]


def quiet_optuna() -> None:
    """Show Optuna's warnings and errors only (its INFO lines go)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
