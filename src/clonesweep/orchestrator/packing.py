"""Packed trials on the driver: which params may differ inside a group, and the groups.

With ``training.pack.enabled`` the sweep asks up to ``training.pack.max_trials`` trials at
once (TPE runs with ``constant_liar``, so the pending ones count as observations), groups
those that share a structure and hands each group of two or more to one worker as a
:class:`~clonesweep.trials.PackedGroup`, trained as one vmapped program on Keras's JAX
backend (:mod:`clonesweep.workers.engines.packed`). A trial left alone in its group runs as
an ordinary trial.

What may differ inside a group is decided here, from the sweep file and the base model,
never by trying: the seed, ``optimizer.learning_rate``, ``optimizer.weight_decay`` (both
stack as optimizer variables), and ``rate`` keys whose every target is a top-level plain
``Dropout`` layer without a ``noise_shape`` (its keep probability becomes a weight). Every
other param (units, kernel sizes, activations, other optimizer settings, which are Python
floats inside Keras's optimizers, the dropout of attention layers, ``train.*``) and a
structural search's ``model.*`` arguments put trials with other values in other groups.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from clonesweep.orchestrator.loop import AskedFailed, Policy, Work
from clonesweep.spec.configpaths import (
    PathKind,
    index_layers,
    is_layer_graph,
    parse_key,
    resolve,
)
from clonesweep.spec.model import SweepSpec
from clonesweep.spec.params import Distribution
from clonesweep.trials import Intermediate, PackedGroup, TrialResult, TrialSpec

__all__ = ["PackingPolicy", "auto_refusal", "group_key", "packable_keys", "packing",
           "packing_note", "resolve_packing", "worker_keras_backend"]

log = logging.getLogger(__name__)

#: Optimizer settings that are optimizer variables in the packed step.
_OPTIMIZER_KEYS = ("learning_rate", "weight_decay")


def auto_refusal(spec: SweepSpec, base_config: dict[str, Any], *,
                 arrays: bool | None = None, trials: int | None = None) -> str | None:
    """Why ``training.pack: auto`` leaves this sweep unpacked, or None: it packs.

    Auto packs where packing measured faster end to end (bench/README.md, "Real models
    against the anchors": 16 trials of a CNN+BatchNorm and of a Transformer where only the
    learning rate, a Dropout rate and the weight decay vary, packed 1.12-1.32x faster than
    the default path on an idle 2-core machine, a first sweep): every sampled param may
    differ inside a group (so every batch of asks is one group), the sweep holds at least
    two groups' worth of trials (the JAX workers' compilations are paid once per worker),
    and nothing sends the trials to Keras's fit anyway (callbacks, class weights, a
    learning-rate schedule, ``steps_per_execution``, datasets). ``KERAS_BACKEND`` set to
    another backend than JAX keeps the workers where the user put them; trials that ask for
    GPUs are not packed by auto (not measured there; JAX needs its CUDA plugin). ``trials``:
    the run's budget when the command line overrides ``sweep.trials``. ``arrays``: whether
    the data are arrays (None: the spec holds the arrays checked on the driver, as ``run``
    hands them on).
    """
    import os

    from clonesweep.workers.given import CHECKED_LOADER, GIVEN_LOADER

    tr, pack = spec.training, spec.training.pack
    backend = os.environ.get("KERAS_BACKEND", "")
    sampled = [p.path for p in spec.parameters if not p.is_fixed]
    why = None
    if backend not in ("", "jax"):
        why = f"KERAS_BACKEND is {backend}"
    elif spec.sweep.resources.gpu > 0:
        # Not measured on a GPU, and a worker whose JAX has no CUDA plugin would train on
        # its CPU: `enabled: true` packs on GPUs (deploy/gpu_check.py checks it there).
        why = "trials ask for GPUs (sweep.resources.gpu)"
    elif not sampled:
        why = "no param is sampled"
    elif (budget := trials or spec.sweep.trials) < 2 * pack.max_trials:
        why = (f"the budget of {budget} trials is under two groups of "
               f"training.pack.max_trials ({pack.max_trials})")
    elif tr.callbacks or tr.class_weight is not None or tr.steps_per_execution != 1 or \
            isinstance(tr.optimizer_config.get("learning_rate"), dict):
        why = ("callbacks, class_weight, steps_per_execution or a learning-rate schedule "
               "train on Keras's fit")
    elif not (arrays if arrays is not None else
              spec.data.loader in (CHECKED_LOADER, GIVEN_LOADER)):
        why = "the data are not arrays checked on the driver (datasets train on Keras's fit)"
    else:
        packable = packable_keys(spec, base_config)
        unpackable = [k for k in sampled if k not in packable]
        if unpackable:
            why = f"{', '.join(unpackable)} may not differ inside a group"
    return why


def packing_note(spec: SweepSpec, base_config: dict[str, Any], *,
                 arrays: bool | None = None) -> str:
    """How ``spec`` would pack on Ray, for ``validate``: ``on``, ``off``, or auto's
    decision with its reason."""
    pack = spec.training.pack
    if pack.enabled is not None:
        return f"on, by up to {pack.max_trials}" if pack.enabled else "off"
    why = auto_refusal(spec, base_config, arrays=arrays)
    return (f"auto: on, by up to {pack.max_trials} on JAX workers" if why is None
            else f"auto: off ({why})")


def resolve_packing(spec: SweepSpec, base_config: dict[str, Any], *,
                    can_pack: bool = True, trials: int | None = None) -> SweepSpec:
    """``spec`` with ``training.pack.enabled`` decided: the file's true or false as they
    are; ``auto`` (the default) on where :func:`auto_refusal` finds nothing against it and
    the backend runs packed groups (``can_pack``: Ray, not the in-process backend)."""
    import dataclasses

    pack = spec.training.pack
    if pack.enabled is not None:
        return spec
    why = auto_refusal(spec, base_config, trials=trials) if can_pack else \
        "the backend runs Keras in process"
    if why is None:
        log.info("training.pack: auto packs this sweep (every sampled param may differ "
                 "inside a group); `pack: {enabled: false}` turns it off")
    else:
        log.debug("training.pack: auto leaves this sweep unpacked: %s", why)
    on = dataclasses.replace(pack, enabled=why is None)
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, pack=on))


def worker_keras_backend(spec: SweepSpec) -> str | None:
    """``jax`` for a packing sweep's workers (Keras fixes its backend per process); None:
    the usual one (``KERAS_BACKEND``, else TensorFlow)."""
    return "jax" if spec.training.pack.enabled else None


def packing(policy: Any, spec: SweepSpec, base_config: dict[str, Any], backend: Any) -> Any:
    """``policy`` wrapped in a :class:`PackingPolicy` when the sweep packs and the backend
    can run packed groups (the Ray backend); else ``policy`` itself."""
    pack = spec.training.pack
    if not pack.enabled:
        return policy
    if not hasattr(backend, "submit_packed"):
        log.warning("training.pack is enabled but the %s backend runs no packed groups (it "
                    "runs Keras in this process): every trial trains alone",
                    type(backend).__name__)
        return policy
    keys = packable_keys(spec, base_config)
    if not keys:
        log.warning("training.pack: no param of this sweep may differ inside a group "
                    "(packable: optimizer.learning_rate, optimizer.weight_decay, rates of "
                    "plain Dropout layers); trials that share every param value and differ "
                    "in their seed only are still packed")
    continuous = [p.path for p in spec.parameters if p.path not in keys and p.distribution
                  in (Distribution.UNIFORM, Distribution.LOG_UNIFORM_VALUES)]
    if keys and continuous:
        log.warning("training.pack: %s may not differ inside a group (packable: "
                    "optimizer.learning_rate, optimizer.weight_decay, rates of plain Dropout "
                    "layers) and %s a new value in every trial: almost every trial will train "
                    "alone; make %s `values: [...]` to let trials share groups",
                    ", ".join(continuous), "takes" if len(continuous) == 1 else "take",
                    "it" if len(continuous) == 1 else "them")
    return PackingPolicy(policy, keys, pack.max_trials, pack.mode)


def packable_keys(spec: SweepSpec, base_config: dict[str, Any]) -> tuple[str, ...]:
    """The search-space keys whose values may differ between trials of one group."""
    keys = []
    for param in spec.parameters:
        parsed = parse_key(param.path)
        optimizer = parsed.kind is PathKind.OPTIMIZER and parsed.subkey in _OPTIMIZER_KEYS
        if optimizer or (parsed.kind is PathKind.LAYER
                         and _plain_dropout_rate(base_config, param.path)):
            keys.append(param.path)
    return tuple(keys)


def _plain_dropout_rate(base_config: dict[str, Any], key: str) -> bool:
    if not is_layer_graph(base_config):
        return False
    index = index_layers(base_config)
    for target in resolve(base_config, key):
        entry = index[target.layer_path]
        if ("/" in target.layer_path or target.keys != ("rate",)
                or entry.get("class_name") != "Dropout" or entry.get("module") != "keras.layers"
                or entry.get("config", {}).get("noise_shape") is not None):
            return False
    return True


def group_key(spec: TrialSpec, packable: tuple[str, ...]) -> str | None:
    """Trials with the same key may train in one group; None: this one trains alone."""
    if spec.structure is not None:
        return None
    fixed = {k: v for k, v in spec.params.items() if k not in packable}
    return json.dumps(fixed, sort_keys=True, default=str)


class PackingPolicy:
    """A sweep's policy whose ``ask`` hands out packed groups; everything else is the
    wrapped policy's. Asked trials wait here until a slot takes them (they are RUNNING in
    the study, as TPE's constant liar expects); a stopping loop abandons them too.

    Args:
        inner: The sweep's policy (:class:`~clonesweep.orchestrator.sweep_policy.SweepPolicy`).
        packable: :func:`packable_keys`.
        max_trials: The most trials asked at once and put in one group.
        mode: The packed step's mode (``training.pack.mode``).
    """

    def __init__(self, inner: Any, packable: tuple[str, ...], max_trials: int,
                 mode: str) -> None:
        self.inner: Policy = inner
        self.packable, self.max_trials, self.mode = packable, max_trials, mode
        self.queue: deque[TrialSpec | PackedGroup | AskedFailed] = deque()

    def ask(self, running: int) -> Work | PackedGroup | AskedFailed | None:
        if not self.queue:
            self._ask_batch(running)
        return self.queue.popleft() if self.queue else None

    def _ask_batch(self, running: int) -> None:
        groups: dict[str | None, list[TrialSpec]] = {}
        alone: list[TrialSpec] = []
        asked = 0
        while asked < self.max_trials:
            work = self.inner.ask(running + asked)  # the budget counts the batch as running
            if work is None:
                break
            asked += 1
            if isinstance(work, AskedFailed):
                self.queue.append(work)
                continue
            assert isinstance(work, TrialSpec)
            key = group_key(work, self.packable)
            if key is None:
                alone.append(work)
            else:
                groups.setdefault(key, []).append(work)
        for trials in groups.values():
            if len(trials) == 1:
                self.queue.append(trials[0])
            else:
                self.queue.append(PackedGroup(tuple(trials), self.packable, self.mode))
        self.queue.extend(alone)

    def abandon(self, running: list[Work], cause: BaseException | None) -> None:
        waiting: list[Work] = []
        for item in self.queue:
            if isinstance(item, PackedGroup):
                waiting.extend(item.trials)
            elif isinstance(item, TrialSpec):
                waiting.append(item)
        self.queue.clear()
        self.inner.abandon([*running, *waiting], cause)

    # -- the rest is the wrapped policy's ------------------------------------------------------
    def after_fill(self) -> None:
        self.inner.after_fill()

    def report(self, event: Intermediate) -> bool:
        return self.inner.report(event)

    def retried(self, again: Work, result: TrialResult) -> None:
        self.inner.retried(again, result)

    def tell(self, work: Work, result: TrialResult) -> None:
        self.inner.tell(work, result)

    def requeue(self, work: Work, result: TrialResult) -> None:
        self.inner.requeue(work, result)

    def tick(self, running: int) -> None:
        self.inner.tick(running)

    def storage_check(self) -> None:
        self.inner.storage_check()
