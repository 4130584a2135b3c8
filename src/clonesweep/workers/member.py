"""What an ensemble member leaves on its worker, and the fused group a worker trains at once.

An ensemble member is an ordinary trial (a :class:`~clonesweep.trials.TrialSpec` whose seed is
the member seed). A worker started with ``WorkerJob(keep_members=True)`` keeps, for every
member it completes, a :class:`MemberOutput`: the member's validation predictions, the
validation targets it used and the trained model as ``.keras`` bytes. The driver fetches it
with the backend's ``fetch_member(number)``, once the member's result has arrived. Plain
numpy arrays and bytes cross the process boundary, never a Keras object.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clonesweep.errors import RebuildError
from clonesweep.trials import (
    EngineFallback,
    FailReason,
    FallbackReason,
    Timings,
    TrialResult,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.arrays import as_arrays, length, window
from clonesweep.workers.oom import oom_reason

if TYPE_CHECKING:
    import keras

    from clonesweep.workers.job import WorkerState
    from clonesweep.workers.materialize import Materialized

__all__ = ["FusedGroup", "GroupRun", "MemberOutput", "guarded_group", "member_output",
           "model_bytes", "predict"]


@dataclass(frozen=True)
class FusedGroup:
    """Members trained as one program on one worker (:mod:`clonesweep.workers.engines.fused`
    on TensorFlow, :mod:`clonesweep.workers.engines.jaxgroup` on JAX).

    Attributes:
        number: The group's key: the first member's trial number. The group yields one
            :class:`~clonesweep.trials.TrialResult` with this number; each member's own
            result is in its :class:`MemberOutput`.
        members: The members' specs, same params, each its own member seed.
        attempt: 0 for the first run, 1.. for retries of the whole group.
    """

    number: int
    members: tuple[TrialSpec, ...]
    attempt: int = 0

    def as_spec(self) -> TrialSpec:
        """A stand-in spec for the group's own (failed) result."""
        first = self.members[0]
        return TrialSpec(self.number, dict(first.params), first.seed, self.attempt)

    def retry(self) -> FusedGroup:
        return FusedGroup(self.number, tuple(m.retry() for m in self.members),
                          self.attempt + 1)


@dataclass(frozen=True)
class MemberOutput:
    """A completed member, as its worker kept it.

    Attributes:
        val_pred: The trained model's predictions on the validation inputs: an array, or a
            dict / list of arrays for a model of several outputs (its outputs' structure).
        y_val: The validation targets they are scored against, in the same structure (the
            driver checks that every
            member saw the same ones: a data loader that splits differently per process would
            make the ensemble metric meaningless).
        model_bytes: The trained member as a ``.keras`` archive.
        result: The member's own result when it was trained in a group (its own history,
            value and seeds); None for a member run as its own trial (its result came back
            through ``poll``).
        fused: True when the member was trained inside a fused model.
    """

    val_pred: Any
    y_val: Any
    model_bytes: bytes
    result: TrialResult | None = None
    fused: bool = False


@dataclass(frozen=True)
class GroupRun:
    """What a fused engine's ``run_group`` (:mod:`clonesweep.workers.engines.fused` on
    TensorFlow, :mod:`clonesweep.workers.engines.jaxgroup` on JAX) did with a group.

    Attributes:
        result: The group's own result: COMPLETE when its members were trained (each
            member's outcome is in its output), FAIL with a reason when the group as a whole
            failed (a retry of the group may help: ``oom``, ``worker_died``).
        outputs: The trained members' outputs, by trial number.
        unfused: Set when the members cannot be fused, or the fused engine failed inside
            for a reason that is not an out-of-memory error: the caller trains them one by
            one (with this as each one's fallback); ``result`` and ``outputs`` are then
            empty.
    """

    result: TrialResult | None
    outputs: dict[int, MemberOutput]
    unfused: EngineFallback | None = None


def guarded_group(group: FusedGroup, node: str, worker: str, fallback_engine: str,
                  train: Callable[[], list[MemberOutput]], message: str,
                  not_covered: type[Exception] | None = None,
                  engine: str | None = None) -> GroupRun:
    """Run a fused engine's ``train`` for ``group``; never raises.

    A rebuild error fails the group as ``invalid_config``; an out-of-memory error fails it
    with its reason (a retry may find room); ``not_covered`` (the engine's own refusal) and
    any other error come back as :attr:`GroupRun.unfused`, so the members train one by one,
    where each fails if the error was the user's and trains if it was the engine's.
    ``engine`` names the group's result (None: the first member's engine); ``message``
    follows "trained N members fused".
    """
    spec = group.as_spec()
    try:
        outputs = train()
    except RebuildError as exc:
        return GroupRun(TrialResult.failed(spec, FailReason.INVALID_CONFIG, str(exc)), {})
    except Exception as exc:
        if not_covered is not None and isinstance(exc, not_covered):
            return GroupRun(None, {}, EngineFallback(fallback_engine,
                                                     FallbackReason.NOT_COVERED, str(exc)))
        oom = oom_reason(exc)
        if oom is not None:
            return GroupRun(TrialResult.failed(spec, oom, f"{type(exc).__name__}: {exc}"[:2000]),
                            {})
        return GroupRun(None, {}, EngineFallback(fallback_engine, FallbackReason.ENGINE_ERROR,
                                                 f"{type(exc).__name__}: {str(exc)[:300]}"))
    kept = {out.result.number: out for out in outputs if out.result is not None}
    first = outputs[0].result if outputs else None
    return GroupRun(TrialResult(group.number, TrialState.COMPLETE, attempt=group.attempt,
                                node=node, worker=worker,
                                timings=first.timings if first else Timings(),
                                engine=engine or (first.engine if first else ""),
                                message=f"trained {len(outputs)} members fused{message}"), kept)


def member_output(state: WorkerState, spec: TrialSpec, mat: Materialized, model: keras.Model,
                  history: dict[str, list[float]], timings: Timings, val: tuple[Any, Any],
                  engine: str, message: str, fallback: EngineFallback | None = None,
                  val_pred: np.ndarray | None = None) -> MemberOutput:
    """A member a fused engine trained: its result (COMPLETE, or ``nan_loss`` when the
    objective or val_loss is not finite), validation predictions and ``.keras`` bytes.
    ``val_pred``: its validation predictions when the engine already made them with the
    member's final weights (else predicted here)."""
    import json

    metric = state.job.objective.metric
    value = history.get(metric, [float("nan")])[-1]
    loss = history.get("val_loss", [float("nan")])[-1]
    ok = bool(np.isfinite(value) and np.isfinite(loss))
    result = TrialResult(
        spec.number, TrialState.COMPLETE if ok else TrialState.FAIL,
        value=float(value) if ok else None,
        reason=None if ok else FailReason.NAN_LOSS,
        message=message if ok else f"{metric} or val_loss became {value}/{loss}",
        history=history, seeds=dict(mat.seeds), config_hash=mat.config_hash,
        config_json=json.dumps(mat.config, sort_keys=True),
        param_count=int(model.count_params()), timings=timings, node=state.node,
        worker=state.worker, attempt=spec.attempt, engine=engine, engine_fallback=fallback)
    pred = val_pred if val_pred is not None else \
        predict(model, val[0], state.job.training.validation_batch_size)
    return MemberOutput(pred, as_arrays(val[1]),
                        model_bytes(model, f"member-{spec.number}") if ok else b"",
                        result=result, fused=True)


def predict(model: keras.Model, x: Any, batch_size: int) -> Any:
    """Inference-mode predictions in chunks, called eagerly: no predict graph to trace. One
    array, or the outputs' dict / list of arrays for a model of several outputs."""
    import keras

    x = as_arrays(x)  # an array, or a dict / list / tuple of arrays (several inputs)
    chunks = []
    for start in range(0, length(x), batch_size):
        out = model(window(x, start, start + batch_size), training=False)
        chunks.append(keras.tree.map_structure(
            lambda t: np.asarray(keras.ops.convert_to_numpy(t)), out))
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts, axis=0), *chunks)


def predict_stream(model: Any, ds: Any, batch_size: int) -> tuple[Any, Any]:
    """Predictions over a validation dataset in one pass, with the targets it yielded
    alongside (a dataset that reshuffles gives them in another order each pass, so they
    are read in the same pass). An unbatched tf.data dataset is batched by ``batch_size``."""
    import keras

    from clonesweep.workers.streams import batched, is_tf_dataset

    if is_tf_dataset(ds):
        items: Any = (ds if batched(ds, model) else ds.batch(batch_size)).as_numpy_iterator()
    else:
        items = (ds[i] for i in range(len(ds)))
    preds, targets = [], []
    for item in items:
        x, y = item[0], item[1]
        preds.append(keras.tree.map_structure(
            lambda t: np.asarray(keras.ops.convert_to_numpy(t)), model(x, training=False)))
        targets.append(as_arrays(y))
    joined = [keras.tree.map_structure(lambda *parts: np.concatenate(parts, axis=0), *chunks)
              for chunks in (preds, targets)]
    return joined[0], joined[1]


def model_bytes(model: keras.Model, name: str = "member") -> bytes:
    """The model as a ``.keras`` archive, through a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()
