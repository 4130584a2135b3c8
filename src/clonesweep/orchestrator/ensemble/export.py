"""Score a finished ensemble and write it out: members, the averaged model, the manifest.

Layout of ``<run folder>/ensemble/`` (``<run folder>/<study>/`` for a study named with
``--study``)::

    members/member-00.keras   each held member, trained (index = member index)
    averaged.keras            one model averaging the held members (loads in safe mode)
    manifest.json             ensemble seed, params and, per member, seeds, config hash,
                              file and its sha256
    ensemble.json             members asked/held, the metric table, per-member scores

The table also goes on the ensemble study as user attributes (``ensemble``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonesweep.orchestrator.ensemble.run import EnsembleOutcome, check_targets, member_file
from clonesweep.orchestrator.ensemble.score import MetricRow, summarize
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.study.storage import load_study
from clonesweep.spec.model import SweepSpec

__all__ = ["EnsembleReport", "ensemble_folder", "finish"]


@dataclass(frozen=True)
class EnsembleReport:
    asked: int
    held: int
    folder: Path
    rows: list[MetricRow]
    members: list[dict[str, Any]]
    averaged: Path | None
    payload: dict[str, Any]

    @property
    def complete(self) -> bool:
        return self.held == self.asked


def ensemble_folder(spec: SweepSpec, outcome: EnsembleOutcome) -> Path:
    default = outcome.study == f"{spec.name}-ensemble"
    return spec.run_folder / ("ensemble" if default else outcome.study)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finish(spec: SweepSpec, outcome: EnsembleOutcome) -> EnsembleReport:
    """Score the held members and the ensemble, export them, record the table."""
    folder = RunFolder(ensemble_folder(spec, outcome))
    held = outcome.held
    y = check_targets(outcome.members)
    preds = [m.output.val_pred for m in held if m.output is not None]
    ensemble, scores, rows = summarize(spec.training.loss, y, preds)
    files = []
    for m in held:
        assert m.output is not None
        files.append(folder.write_bytes(str(member_file(Path("."), m.index)),
                                        m.output.model_bytes))
    averaged = None
    if files:
        from clonesweep.workers.averaged import average_models

        try:
            averaged = average_models(files, folder.root / "averaged.keras")
        except ValueError:  # members no Functional model can wrap: the member files stay
            averaged = None
    members = [_member_row(m, s, f) for m, s, f in zip(held, scores, files, strict=True)]
    failed = [{"index": m.index, "trial": m.number,
               "reason": m.result.reason.value if m.result and m.result.reason else "unknown",
               "message": (m.result.message if m.result else "")[:300]}
              for m in outcome.members if m not in held]
    manifest = {
        "study": outcome.study, "ensemble_seed": outcome.seed, "params": outcome.params,
        "source": outcome.source, "fused": outcome.fused,
        "members": [{k: r[k] for k in ("index", "trial", "member_seed", "seeds",
                                       "config_hash", "file", "sha256")} for r in members],
        "averaged": None if averaged is None else {"file": str(averaged),
                                                   "sha256": _sha256(averaged)},
    }
    folder.write_json("manifest.json", manifest)
    payload = {
        "study": outcome.study, "storage": outcome.storage, "members_asked":
        len(outcome.members), "members_held": len(held),
        "complete": len(held) == len(outcome.members), "fused": outcome.fused,
        "fused_note": outcome.fused_note, "ensemble_seed": outcome.seed,
        "params": outcome.params, "source": outcome.source, "loss": spec.training.loss,
        "ensemble": ensemble, "table": [dataclasses.asdict(r) for r in rows],
        "members": members, "failed": failed, "retried": outcome.retried,
        "wall_s": round(outcome.wall_s, 3), "averaged_model": str(averaged) if averaged else None,
    }
    folder.write_json("ensemble.json", payload)
    study = load_study(outcome.study, outcome.storage_url)
    study.set_user_attr("ensemble", {k: payload[k] for k in (
        "members_asked", "members_held", "complete", "fused", "fused_note", "ensemble_seed",
        "source", "ensemble", "table")})
    study.set_user_attr("params", outcome.params)
    return EnsembleReport(len(outcome.members), len(held), folder.root, rows, members,
                          averaged, payload)


def _member_row(m: Any, scores: dict[str, float], file: Path) -> dict[str, Any]:
    assert m.result is not None
    return {"index": m.index, "trial": m.number, "member_seed": m.spec.seed,
            "seeds": m.result.seeds, "config_hash": m.result.config_hash,
            "file": str(file), "sha256": _sha256(file), "scores": scores,
            "objective": m.result.value, "fused": bool(m.output and m.output.fused),
            "attempt": m.result.attempt}
