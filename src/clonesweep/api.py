"""The Python API: a sweep or an ensemble from a notebook or a script, in one call.

``clonesweep.run`` and ``clonesweep.ensemble`` do what ``clonesweep run`` and ``clonesweep
ensemble`` do, and take what a notebook holds: the sweep as a file path or a dict (the same
keys as the YAML file), an in-memory Keras model instead of ``model:`` and in-memory arrays
instead of ``data:``. They return result objects that read the study: ``.best``,
``.best_model()``, ``.dataframe()``, ``.history(trial)``, ``.study``. docs/api.md has the
guide; the example there runs in tests/unit/test_api.py.

How in-memory things travel: the model is serialized once (``serialize_keras_object``, as a
config file would be) and written to a temporary folder the sweep reads it from; the run
folder keeps it as ``base_config.json`` and the study holds it, as for any sweep. The arrays
go to the workers as the data loader's argument: on Ray they are put in the object store
once (never pickled per trial or per worker); the in-process backend hands them over as they
are.

Longer than most modules (~350 lines): the two entry points share the resolution of the
sweep, and their result types are what they return; splitting them would scatter one
public surface over several files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clonesweep.errors import SpecError
from clonesweep.spec.loader import parse_sweep, read_sweep_file
from clonesweep.spec.model import DataSpec, SweepSpec

if TYPE_CHECKING:
    import keras

    from clonesweep.orchestrator.ensemble.export import EnsembleReport
    from clonesweep.orchestrator.ensemble.run import EnsembleOutcome
    from clonesweep.orchestrator.sweep import BestTrial, SweepOutcome

__all__ = ["EnsembleResult", "SweepResult", "ensemble", "run"]

Sweep = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run` did, and a way into its study.

    Attributes:
        spec: The validated sweep, as run.
        outcome: Counts, best trial, timings and files (what ``clonesweep run`` prints).
    """

    spec: SweepSpec
    outcome: SweepOutcome

    @property
    def best(self) -> BestTrial | None:
        """The best feasible trial (``number``, ``value``, ``params``), None if none completed."""
        return self.outcome.best

    @property
    def run_folder(self) -> Path:
        return self.outcome.run_folder

    @property
    def study(self) -> Any:
        """The sweep's ``optuna.Study``, loaded from its storage (read it; the sweep's driver
        is its only writer while a sweep runs)."""
        return _load_study(self.spec.name, self.spec)

    def best_model(self) -> keras.Model:
        """The best trial's trained model, loaded from ``best.keras`` in safe mode.

        Raises:
            LookupError: no trial completed, so there is no best model.
        """
        if self.outcome.best_model is None:
            raise LookupError(f"sweep {self.spec.name!r} has no best model: no trial completed")
        import keras

        return keras.saving.load_model(self.outcome.best_model, safe_mode=True)

    def history(self, trial: int) -> dict[str, list[float]]:
        """Trial ``trial``'s per-epoch metrics, e.g. ``{"loss": [...], "val_accuracy": [...]}``."""
        return _history(self.study, trial)

    def dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per trial: number, state, value, seconds, each
        param (``params.<key>``), seed, fail reason and message. Needs pandas."""
        return _dataframe(self.study, self.spec.objective.metric)


@dataclass(frozen=True)
class EnsembleResult:
    """What :func:`ensemble` did: the members, their scores and the averaged model.

    Attributes:
        spec: The validated sweep the members were cloned from.
        outcome: The members, where their params came from, timings.
        report: The score table (``rows``: the ensemble's metric and the members' mean, std,
            min and max), the exported files and ``payload`` (``ensemble.json``).
    """

    spec: SweepSpec
    outcome: EnsembleOutcome
    report: EnsembleReport

    @property
    def scores(self) -> dict[str, float]:
        """The ensemble's own metrics (its averaged predictions scored on the validation data)."""
        return dict(self.report.payload["ensemble"])

    @property
    def study(self) -> Any:
        """The ensemble's ``optuna.Study``: member ``i`` is one of its trials."""
        return _load_study(self.outcome.study, self.spec)

    def averaged_model(self) -> keras.Model:
        """One Keras model holding every member; its output is their averaged prediction
        (``averaged.keras``, see docs/ensembles.md).

        Raises:
            LookupError: no member completed.
        """
        if self.report.averaged is None:
            raise LookupError("the ensemble holds no member: there is no averaged model")
        import keras

        return keras.saving.load_model(self.report.averaged, safe_mode=True)

    def history(self, member: int) -> dict[str, list[float]]:
        """Member ``member``'s per-epoch metrics."""
        number = next(m.number for m in self.outcome.members if m.index == member)
        return _history(self.study, number)

    def dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per member trial. Needs pandas."""
        return _dataframe(self.study, self.spec.objective.metric)


def run(sweep: Sweep, *, model: keras.Model | None = None, data: Any = None,
        backend: str = "ray", address: str | None = None, progress: bool = True,
        verbose: bool = False, **overrides: Any) -> SweepResult:
    """Run a sweep to its budget of finished trials (or continue it) and return the result.

    Args:
        sweep: A sweep file's path, or a dict with the same keys (relative paths in a dict
            resolve against the working directory).
        model: A Keras model to sweep instead of the sweep's ``model:`` (which may then be
            left out). Its config is what the search-space paths address.
        data: ``(x_train, y_train, x_val, y_val)`` arrays instead of the sweep's ``data:``.
        backend: ``"ray"`` (a local Ray, or ``address``) or ``"inprocess"`` (one trial at a
            time in this process: small sweeps, debugging).
        address: A Ray cluster's address (default: ``$RAY_ADDRESS``, else a local Ray).
        progress: Print a line per finished trial (and a status line every 30 s).
        verbose: Leave Optuna's and Ray's own logging as they are.
        **overrides: ``sweep.<key>`` settings, e.g. ``trials=8, parallel=2``.

    Raises:
        SpecError: a bad sweep, model, data or override: the checks ``clonesweep run``
            makes (``validate --data``'s), before anything is created.
        SweepFailed: no trial could run, or a failure repeated (see the message), or Ray
            cannot start.

    Example:
        >>> result = clonesweep.run("configs/digits_mlp.yaml", trials=4, backend="inprocess")
        >>> result.best.params, result.history(result.best.number)["val_accuracy"]
    """
    from clonesweep.orchestrator.model import base_model_config
    from clonesweep.orchestrator.packing import resolve_packing
    from clonesweep.orchestrator.sweep import run_sweep

    _quiet(verbose)
    with _native_lines_muted(verbose), _resolved(sweep, model, data, overrides) as spec:
        base = base_model_config(spec)
        spec = resolve_packing(spec, base, can_pack=backend == "ray")
        view = _progress_view(spec, progress)
        try:
            outcome = run_sweep(spec, base, _backend(spec, backend, address), view)
        finally:
            getattr(view, "close", lambda: None)()  # a live view comes down on errors too
    return SweepResult(spec, outcome)


def ensemble(sweep: Sweep, *, members: int, model: keras.Model | None = None,
             data: Any = None, trial: int | str | None = None, fused: bool = False,
             seed: int | None = None, study: str | None = None, backend: str = "ray",
             address: str | None = None, verbose: bool = False,
             **overrides: Any) -> EnsembleResult:
    """Train ``members`` independently seeded clones, score the ensemble, export it.

    Args:
        sweep, model, data, backend, address, verbose, overrides: as in :func:`run`.
        members: How many clones.
        trial: Take the params of this trial of the sweep's study, or ``"best"``; None: the
            base model with the sweep's constant params.
        fused: Train members as one stacked model per worker where the config allows it.
        seed: The ensemble seed (default: ``sweep.seed``); member ``i`` derives its own.
        study: The ensemble study's name (default ``<name>-ensemble``; a used one is refused).

    Raises:
        SpecError: bad input (the checks ``clonesweep run`` makes, before anything is
            created), a missing trial, or an ensemble study that holds trials.

    Example:
        >>> ens = clonesweep.ensemble("configs/digits_mlp.yaml", members=4, trial="best")
        >>> ens.scores["val_accuracy"], ens.averaged_model()
    """
    from clonesweep.orchestrator.ensemble.export import finish
    from clonesweep.orchestrator.ensemble.run import (
        EnsembleRequest,
        check_study_unused,
        resolve_params,
        run_ensemble,
    )
    from clonesweep.orchestrator.model import base_model_config

    _quiet(verbose)
    request = EnsembleRequest(members=members, seed=seed, fused=fused, study=study,
                              trial=trial)
    with _native_lines_muted(verbose), _resolved(sweep, model, data, overrides) as spec:
        resolve_params(spec, trial)  # refused before any worker starts
        check_study_unused(spec, study or f"{spec.name}-ensemble")
        outcome = run_ensemble(spec, base_model_config(spec),
                               _backend(spec, backend, address), request)
        report = finish(spec, outcome)
    return EnsembleResult(spec, outcome, report)


# -- the sweep, from what the caller holds ----------------------------------------------------
@contextlib.contextmanager
def _resolved(sweep: Sweep, model: Any, data: Any,
              overrides: Mapping[str, Any]) -> Iterator[SweepSpec]:
    """The validated spec, with the model and data given in memory; the temporary folder
    holding the model's config (and the sweep as run) lives while the block runs."""
    if isinstance(sweep, Mapping):
        raw, file, base = _plain(sweep), "<dict>", Path.cwd()
    else:
        file = os.fspath(sweep)
        raw, base = read_sweep_file(file), Path(file).expanduser().resolve().parent
    if not isinstance(raw, dict):
        raise SpecError("a sweep is a mapping of keys (name, model, parameters, ...)",
                        file=file, value=type(raw).__name__)
    raw = dict(raw)
    if overrides:
        settings = raw.get("sweep") or {}
        raw["sweep"] = {**(settings if isinstance(settings, dict) else {}), **overrides}
    with tempfile.TemporaryDirectory(prefix="clonesweep-api-") as tmp:
        if model is not None:
            raw["model"] = {**_other_model_keys(raw), "config": _write_model(model, Path(tmp))}
        spec = parse_sweep(raw, file=file, base=base)
        if data is not None:
            from clonesweep.workers.given import GIVEN_LOADER

            spec = dataclasses.replace(spec, data=DataSpec(GIVEN_LOADER,
                                                           {"arrays": _four(data, file)}))
        if file == "<dict>" or model is not None or overrides:
            # The run folder keeps a copy of the sweep as run: this one.
            copy = Path(tmp) / "sweep.yaml"
            copy.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
            spec = dataclasses.replace(spec, file=copy)
        yield _validated(spec, file, Path(tmp), data_given=data is not None)


def _validated(spec: SweepSpec, shown: str, tmp: Path, *, data_given: bool) -> SweepSpec:
    """``clonesweep run``'s checks (``validate --data``'s) before anything exists: storage,
    places, sampler and pruner, imports, the rebuild at every corner, the training names, one
    call of the data loader (or a look at the arrays given). A refusal names the caller's
    file (not the temporary copy), ``<model>`` for a model given in memory and ``data`` for
    arrays given. Returns ``spec`` holding the loader's checked arrays (see
    :meth:`ValidationReport.with_data`): the loader is not called again on the driver."""
    from clonesweep.orchestrator.commands.validate import validate_sweep
    from clonesweep.workers.given import GIVEN_LOADER

    try:
        return validate_sweep(spec, data=True).with_data(spec)
    except SpecError as exc:
        file = exc.file
        if file == str(spec.file):
            file = shown
        elif file is not None and Path(file).is_relative_to(tmp):
            file = "<model>"
        message, field = exc.message, exc.field
        kwargs: dict[str, Any] = {"value": exc.value} if exc.has_value else {}
        if data_given and field == "data.loader":
            field = "data"
            message = message.replace("the data loader returns", "data= holds", 1)\
                .replace("the data loader", "data=", 1)
            if kwargs.get("value") == GIVEN_LOADER:
                kwargs.pop("value")
        raise type(exc)(message, file=file, field=field, hint=exc.hint, **kwargs) from None


def _plain(sweep: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy as plain dicts and lists (what YAML would have given)."""
    try:
        plain: dict[str, Any] = json.loads(json.dumps(sweep))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"the sweep dict holds a value that a sweep file could not: {exc}",
                        file="<dict>", hint="use numbers, strings, booleans, lists and dicts; "
                                            "pass a model with model= and arrays with data=")\
            from exc
    return plain


def _other_model_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """The sweep's ``model:`` keys that still apply to a model given in memory."""
    block = raw.get("model")
    return {k: v for k, v in block.items() if k == "imports"} if isinstance(block, dict) else {}


def _write_model(model: Any, folder: Path) -> str:
    import keras

    if not isinstance(model, keras.Model):
        raise SpecError(f"model= takes a keras.Model, not {type(model).__name__}",
                        file="<model>", field="model", value=type(model).__name__)
    from clonesweep.orchestrator.model import serialized

    path = folder / "model.json"
    path.write_text(json.dumps(serialized(model)), encoding="utf-8")
    return str(path)


def _four(data: Any, file: str) -> tuple[Any, Any, Any, Any]:
    if not isinstance(data, tuple | list) or len(data) != 4:
        raise SpecError("data= takes (x_train, y_train, x_val, y_val)", file=file,
                        field="data", value=type(data).__name__,
                        hint="four arrays (or tuples/dicts of arrays), as a data loader returns")
    return (data[0], data[1], data[2], data[3])


def _backend(spec: SweepSpec, name: str, address: str | None) -> Any:
    if name == "inprocess":
        from clonesweep.orchestrator.backends.base import InProcessBackend

        return InProcessBackend()
    if name != "ray":
        raise SpecError("unknown backend", field="backend", value=name, file="<call>",
                        hint="'ray' or 'inprocess'")
    from clonesweep.orchestrator.backends.ray.backend import RayBackend
    from clonesweep.orchestrator.packing import worker_keras_backend

    return RayBackend(address=address, resources=spec.sweep.resources,
                      trial_timeout=spec.sweep.trial_timeout,
                      resource_wait=spec.sweep.resource_wait,
                      keras_backend=worker_keras_backend(spec))


def _progress_view(spec: SweepSpec, progress: bool) -> Any:
    from clonesweep.cli.progress import notebook_or_lines

    return notebook_or_lines(spec, progress)


def _quiet(verbose: bool) -> None:
    if not verbose:
        from clonesweep.cli.quiet import quiet_logs

        quiet_logs()


def _native_lines_muted(verbose: bool) -> contextlib.AbstractContextManager[None]:
    """TensorFlow's native log lines (oneDNN, CUDA probes, absl) kept off stderr for the
    call, unless ``verbose``; lines written before the call (the caller's own
    ``import keras``) are out of its reach."""
    if verbose:
        return contextlib.nullcontext()
    from clonesweep.cli.quiet import native_lines_filtered

    return native_lines_filtered()


# -- reading the study ------------------------------------------------------------------------
def _load_study(name: str, spec: SweepSpec) -> Any:
    from clonesweep.orchestrator.study.storage import load_study, storage_url

    return load_study(name, storage_url(spec))


def _history(study: Any, number: int) -> dict[str, list[float]]:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return dict(t.user_attrs.get("history") or {})
    raise LookupError(f"no trial {number} in study {study.study_name!r}")


def _dataframe(study: Any, metric: str) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("dataframe() needs pandas: pip install 'clonesweep[notebook]'")\
            from exc
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name.lower(),
            metric: t.values[0] if t.values else None,
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "train_s": a.get("train_s"), "seed": a.get("seed", a.get("member_seed")),
            "fail_reason": a.get("fail_reason"), "message": a.get("message"),
        }
        row.update({f"params.{k}": v for k, v in t.params.items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("number") if rows else pd.DataFrame()
