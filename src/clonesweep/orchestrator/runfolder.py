"""The run folder of a sweep: ``<run_dir>/<name>/``.

Layout::

    study.log             the Optuna study: a journal file (default storage; any URL can
                          replace it; a folder from before the journal may hold study.db)
    sweep.yaml            the sweep file as run
    base_config.json      the base model config, as shipped to the workers
    trials/00003.json     per trial: materialized model config, params, seeds, outcome
    best.keras            the best trial's trained model
    summary.json          written when the sweep ends

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clonesweep.spec.settings import mask_url

__all__ = ["RunFolder", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolder:
    """Owns the files of one sweep's run folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._created = False

    @property
    def exists(self) -> bool:
        return self.root.exists()

    def create(self, sweep_file: Path, base_config: dict[str, Any]) -> None:
        """Create the folder (once everything has been validated)."""
        self._created = not self.root.exists()
        (self.root / "trials").mkdir(parents=True, exist_ok=True)
        # The copy masks any password in a storage URL: the run folder is meant to be shared.
        text = mask_url(sweep_file.read_text(encoding="utf-8"))
        write_atomic(self.root / "sweep.yaml", text.encode("utf-8"))
        self.write_json("base_config.json", base_config)

    def remove_if_new(self) -> None:
        """Undo :meth:`create` when the sweep could not start (nothing half-made stays)."""
        if self._created and self.root.exists():
            shutil.rmtree(self.root)

    def write_json(self, name: str, payload: Any) -> Path:
        path = self.root / name
        write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
                     .encode())
        return path

    def write_trial(self, number: int, payload: dict[str, Any]) -> Path:
        return self.write_json(f"trials/{number:05d}.json", payload)

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.root / name
        write_atomic(path, data)
        return path
