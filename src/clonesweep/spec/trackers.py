"""The ``trackers`` block: MLflow and Weights & Biases, told each finished trial.

Settings only (no import of either library here): the orchestrator builds Optuna's
integration callbacks from them (:mod:`clonesweep.orchestrator.trackers`). A relative path
(``tracking_uri: mlruns``, ``file:mlruns``, ``dir: wandb``) resolves against the sweep file's
folder, as every path of a sweep file does.
"""

from __future__ import annotations

from pathlib import Path

from clonesweep.spec._fields import Block, resolve_path
from clonesweep.spec.model import MlflowSpec, TrackersSpec, WandbSpec

__all__ = ["MLFLOW_SCHEMES", "WANDB_MODES", "parse_trackers"]

#: Tracking URI schemes MLflow's client takes (a path without one is a file store).
MLFLOW_SCHEMES = ("file:", "http://", "https://", "databricks", "sqlite:///", "postgresql",
                  "mysql", "mssql")
WANDB_MODES = ("online", "offline", "disabled")
_HINT = "docs/sweep-file.md#trackers"


def parse_trackers(block: Block, base: Path) -> TrackersSpec:
    """Read ``trackers: {mlflow: {...}, wandb: {...}}`` (each one optional; ``{}`` or
    ``true`` takes the defaults)."""
    block.only(("mlflow", "wandb"))
    return TrackersSpec(mlflow=_mlflow(block, base) if block.has("mlflow") else None,
                        wandb=_wandb(block, base) if block.has("wandb") else None)


def _sub(block: Block, key: str) -> Block:
    """``key: true`` (the defaults) or a mapping; ``false`` is refused, leave the key out."""
    raw = block.raw(key)
    if raw is True:
        return Block.of(block.file, block.field(key), {})
    if raw is False:
        block.fail(key, f"'{key}: false' is not needed", raw,
                   f"leave '{key}' out to not use it; see {_HINT}")
    return block.sub(key)


def _mlflow(block: Block, base: Path) -> MlflowSpec:
    sub = _sub(block, "mlflow")
    sub.only(("tracking_uri", "experiment"))
    uri = sub.string("tracking_uri", None)
    if uri is not None:
        uri = _tracking_uri(sub, uri.strip(), base)
    return MlflowSpec(tracking_uri=uri, experiment=sub.string("experiment", None))


def _tracking_uri(sub: Block, uri: str, base: Path) -> str:
    if "://" in uri and not uri.startswith(MLFLOW_SCHEMES):
        sub.fail("tracking_uri", "not a tracking URI MLflow takes", uri,
                 f"one of {', '.join(MLFLOW_SCHEMES)}..., or a folder path (a file store); "
                 f"see {_HINT}")
    if uri.startswith(MLFLOW_SCHEMES) and not uri.startswith("file:"):
        return uri
    path = uri[len("file:"):] if uri.startswith("file:") else uri
    if path.startswith("//"):  # file:///abs or file://host/abs: as written
        return uri
    folder = resolve_path(base / Path(path).expanduser(), file=sub.file,
                          field=sub.field("tracking_uri"), value=uri)
    return folder.as_uri()


def _wandb(block: Block, base: Path) -> WandbSpec:
    sub = _sub(block, "wandb")
    sub.only(("project", "entity", "mode", "dir"))
    mode = sub.string("mode", "online")
    if mode not in WANDB_MODES:
        sub.fail("mode", "unknown W&B mode", mode,
                 f"one of {', '.join(WANDB_MODES)} (offline writes files only; "
                 "`wandb sync` uploads them later)")
    given = sub.string("dir", None)
    folder = None if given is None else resolve_path(
        base / Path(given).expanduser(), file=sub.file, field=sub.field("dir"), value=given)
    return WandbSpec(project=sub.string("project", None), entity=sub.string("entity", None),
                     mode=mode, dir=folder)
