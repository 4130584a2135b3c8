"""MLflow and Weights & Biases, told each finished trial (the sweep file's ``trackers``).

Both go through Optuna's own integration callbacks (the ``optuna-integration`` package:
``MLflowCallback``, ``WeightsAndBiasesCallback``), called on the driver with the trial's
:class:`~optuna.trial.FrozenTrial` right after the sweep's policy told the study
(:mod:`clonesweep.orchestrator.sweep_policy`), as ``study.optimize`` would call them:

* **MLflow**: one run per trial (named by its number) in the experiment ``experiment``
  (default: the sweep's name): the params, the objective value(s) under their metric names
  and the state and directions as tags, all by the callback. clonesweep adds what the
  callback has no hold of: the per-epoch values of the trial's history as ``epoch/<metric>``
  (step = epoch, from 1), and ``fail_reason`` / ``message`` tags.
* **W&B**: one run per trial (``as_multirun``: trials told out of order, as parallel trials
  are, would otherwise go to steps W&B drops), grouped by the sweep's name: the params in
  its config and the value(s) logged by the callback. clonesweep opens the run itself (as
  the callback's own ``track_in_wandb`` does) to put the state and fail reason in its
  summary. Per-epoch values are not sent to W&B: the callback logs its values at the step
  of the trial's number, after which W&B would drop epoch steps below it.

A tracker that fails (a server that does not answer, a missing login) never fails the sweep:
the first failure is warned about once and that tracker is told nothing more in this run
(a server that does not answer would cost MLflow's retries on every trial). Both libraries
are imported only when the sweep file names them: the ``mlflow`` and ``wandb`` extras.

An ensemble's members (``clonesweep ensemble``) go to the same trackers, each a run, once
its record is in the ensemble's study: in MLflow in the same experiment, tagged ``ensemble``
(the ensemble study's name) and ``member`` (its index); in W&B named ``member-<index>``
and grouped by the ensemble study's name.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import time
import warnings
from typing import Any, Protocol

import optuna

from clonesweep.errors import SpecError
from clonesweep.spec.model import MlflowSpec, SweepSpec, WandbSpec
from clonesweep.trials import TrialResult

__all__ = ["Trackers"]

_EXTRA = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


class _Tracker(Protocol):
    name: str

    def told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
             result: TrialResult, member: bool) -> None: ...

    def abort(self) -> None:
        """End a run left open (a failure or an interrupt inside ``told``), as failed."""
        ...


class Trackers:
    """The sweep's trackers, each behind a guard: a failure is warned about once, then that
    tracker is dropped. Called from the loop's thread only.

    Raises:
        SpecError: at construction, when a tracker's library (or optuna-integration) is not
            installed; nothing has been created then.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self._live: list[_Tracker] = []
        settings = spec.trackers
        if settings.mlflow is not None:
            _check_installed(spec, "mlflow")
            self._live.append(_Mlflow(settings.mlflow, spec))
        if settings.wandb is not None:
            _check_installed(spec, "wandb")
            self._live.append(_Wandb(settings.wandb, spec))

    @classmethod
    def of(cls, spec: SweepSpec) -> Trackers | None:
        """The sweep's trackers, or None when its file names none."""
        return cls(spec) if spec.trackers.any else None

    @property
    def names(self) -> list[str]:
        """The trackers still told (a failed one is dropped)."""
        return [t.name for t in self._live]

    def told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
             result: TrialResult, *, member: bool = False) -> None:
        """Tell every tracker the trial the study just recorded (``member``: an ensemble's
        member, its study the ensemble's)."""
        for tracker in list(self._live):
            try:
                tracker.told(study, trial, result, member)
            except Exception as exc:
                self._drop(tracker, exc)

    def close(self) -> None:
        """At the end of the run (or an interrupt): no run stays open."""
        for tracker in self._live:
            with contextlib.suppress(Exception):
                tracker.abort()

    def _drop(self, tracker: _Tracker, exc: Exception) -> None:
        self._live.remove(tracker)
        with contextlib.suppress(Exception):
            tracker.abort()
        warnings.warn(f"the {tracker.name} tracker failed ({type(exc).__name__}: "
                      f"{str(exc)[:300]}); the sweep goes on without it", RuntimeWarning,
                      stacklevel=2)


def _check_installed(spec: SweepSpec, name: str) -> None:
    module, extra = _EXTRA[name]
    for needed in ("optuna_integration", module):
        try:
            importlib.import_module(needed)
        except ImportError:
            raise SpecError(f"trackers.{name} needs the {needed.replace('_', '-')} package; "
                            "it is not installed here", file=str(spec.file),
                            field=f"trackers.{name}", value=needed,
                            hint=f"pip install 'clonesweep[{extra}]', or remove "
                                 f"trackers.{name}") from None


def _metric_names(spec: SweepSpec) -> list[str]:
    return [o.metric for o in spec.objectives]


class _Mlflow:
    name = "mlflow"

    def __init__(self, settings: MlflowSpec, spec: SweepSpec) -> None:
        self.settings, self.metrics = settings, _metric_names(spec)
        self.experiment = settings.experiment or spec.name
        self._callback: Any = None

    def _start(self) -> Any:
        import mlflow
        from optuna_integration import MLflowCallback

        uri = self.settings.tracking_uri
        if uri is not None and uri.startswith("file:"):
            # MLflow 3 refuses its file store unless this is set; the sweep file asked for
            # one by name (a path or a file: URI), so that is the user's opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if uri is not None and uri.startswith(("http://", "https://")):
            _reachable(uri)
        if uri is not None:
            mlflow.set_tracking_uri(uri)
        found = mlflow.get_experiment_by_name(self.experiment)
        experiment_id = (found.experiment_id if found is not None
                         else mlflow.create_experiment(self.experiment))
        # The trial's user attributes (its whole history, environment) are not tags: the
        # history goes in as metrics below, the fail reason as a tag of its own.
        with warnings.catch_warnings():
            # Deprecated since optuna-integration 4.9 (removal announced for 6.0, which the
            # mlflow extra stays below); it works unchanged, and the user cannot act on it.
            warnings.simplefilter("ignore", FutureWarning)
            return MLflowCallback(tracking_uri=uri, metric_name=self.metrics,
                                  create_experiment=False,
                                  mlflow_kwargs={"experiment_id": experiment_id},
                                  tag_trial_user_attrs=False)

    def told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
             result: TrialResult, member: bool) -> None:
        import mlflow
        from mlflow.entities import Metric, RunTag

        if self._callback is None:
            self._callback = self._start()
        self._callback(study, trial)
        run = mlflow.last_active_run()  # the run the callback just ended
        if run is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(f"epoch/{key}", float(value), now, epoch + 1)
                   for key, values in result.history.items()
                   for epoch, value in enumerate(values) if math.isfinite(value)]
        tags = [RunTag("fail_reason", result.reason.value)] if result.reason else []
        if result.message:
            tags.append(RunTag("message", result.message[-4000:]))
        if member:
            tags += [RunTag("ensemble", study.study_name), RunTag("member", str(trial.number))]
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics, tags=tags)

    def abort(self) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")


def _reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise OSError when nothing answers at ``uri``: MLflow's client retries a refused
    connection with back-off for minutes (measured: 4.5 min against a closed loopback port,
    machine loaded), which would hold the driver's loop. Any HTTP answer (401, 404) will do."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # it answered


class _Wandb:
    name = "wandb"

    def __init__(self, settings: WandbSpec, spec: SweepSpec) -> None:
        self.settings, self.metrics, self.sweep = settings, _metric_names(spec), spec.name
        self.dir = settings.dir or spec.run_folder
        self._callback: Any = None

    def _kwargs(self) -> dict[str, Any]:
        import wandb

        s = self.settings
        # console="off": W&B would otherwise wrap the process's stdout and stderr, where
        # the live view draws; silent: no banner per run.
        return {"project": s.project or self.sweep, "entity": s.entity, "mode": s.mode,
                "dir": str(self.dir), "group": self.sweep, "reinit": "finish_previous",
                "settings": wandb.Settings(console="off", silent=True)}

    def told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
             result: TrialResult, member: bool) -> None:
        import wandb
        from optuna_integration import WeightsAndBiasesCallback

        kwargs = self._kwargs()
        if self._callback is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():  # deprecated since 4.9, as MLflowCallback
                warnings.simplefilter("ignore", FutureWarning)
                self._callback = WeightsAndBiasesCallback(
                    metric_name=self.metrics, wandb_kwargs=kwargs, as_multirun=True)
        if member:
            kwargs["group"] = study.study_name
        run = wandb.init(**kwargs, name=f"{'member' if member else 'trial'}-{trial.number}")
        run.summary["state"] = trial.state.name.lower()
        if result.reason is not None:
            run.summary["fail_reason"] = result.reason.value
        self._callback(study, trial)  # logs params and values into this run, finishes it

    def abort(self) -> None:
        import wandb

        if wandb.run is not None:
            wandb.run.finish(exit_code=1)
