"""The corners of a search space, and rebuilding the model at each (``clonesweep validate``).

A corner is one complete assignment of the search space, made the way a trial is sampled
(parents first; a conditional key only where its ``when`` holds, else its ``otherwise``):

* ``all-low`` and ``all-high``: every numeric key at its lower / upper bound, every
  categorical key at its first / last choice;
* then, for every value not yet seen active in a corner (each categorical choice, each
  bound of a conditional numeric key, every value of a ``model.<argument>`` int range), a
  corner that forces it, with the keys its ``when`` reads set so that it is active.

:func:`build_corners` rebuilds the model at each corner through
:func:`clonesweep.workers.rebuild.rebuild` (safe mode, the same path a worker takes) and
counts its parameters; a corner that does not build is a :class:`SpecError` naming
``parameters.<key>`` and the value that breaks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clonesweep.errors import CloneSweepError, SpecError
from clonesweep.spec.model import Distribution, ParamSpec, SweepSpec
from clonesweep.spec.params import walk
from clonesweep.spec.searchspace import check_parameters, config_params

__all__ = ["Corner", "build_corners", "corners"]

#: A ``model.<argument>`` int range up to this many values is enumerated (each structure).
_MAX_ENUMERATED = 32
_DEFAULT_HINT = ("narrow the key's range or drop that value; clonesweep validate rebuilds "
                 "the model at every corner of the search space")


@dataclass(frozen=True)
class Corner:
    """One assignment of the search space and, once built, its model's parameter count.

    Attributes:
        label: ``all-low``, ``all-high`` or ``<key>=<value>`` (the value it forces).
        params: Every active key's value (and ``otherwise`` values), as a trial gets them.
        param_count: The rebuilt model's parameter count (None until built).
    """

    label: str
    params: dict[str, Any] = field(hash=False)
    param_count: int | None = None

    @property
    def structure(self) -> dict[str, Any]:
        """The factory arguments (``model.<argument>`` values) of this corner."""
        return {k[len("model."):]: v for k, v in self.params.items() if k.startswith("model.")}


def _targets(p: ParamSpec) -> list[Any]:
    """The values of ``p`` every corner set must cover."""
    if p.distribution in (Distribution.CONSTANT, Distribution.CATEGORICAL):
        return list(p.values)
    assert p.low is not None and p.high is not None
    ints = p.distribution in (Distribution.INT_UNIFORM, Distribution.INT_LOG_UNIFORM_VALUES)
    step = int(p.step or 1)
    if p.path.startswith("model.") and ints and (p.high - p.low) // step < _MAX_ENUMERATED:
        return list(range(int(p.low), int(p.high) + 1, step))
    return [p.low, p.high]


def _walk(parameters: tuple[ParamSpec, ...], high: bool,
          forced: dict[str, Any]) -> dict[str, Any]:
    """The params of one corner, sampled define-by-run like :class:`TrialMaker` does."""
    def value_of(p: ParamSpec) -> Any:
        if p.path in forced:
            return forced[p.path]
        if p.values:
            return p.values[-1] if high else p.values[0]
        return p.high if high else p.low

    return walk(parameters, value_of)


def _force(by_key: dict[str, ParamSpec], key: str, value: Any, forced: dict[str, Any]) -> None:
    """Set ``key`` to ``value`` and each key its ``when`` reads to a value that holds."""
    forced.setdefault(key, value)
    for cond in by_key[key].when:
        if cond.key not in forced:
            _force(by_key, cond.key, cond.values[0], forced)


def corners(spec: SweepSpec) -> list[Corner]:
    """The corners of ``spec``'s search space (not built), deduplicated, in a stable order.

    Example:
        >>> [c.label for c in corners(load_sweep("configs/digits_mlp.yaml"))]  # doctest: +SKIP
        ['all-low', 'all-high']
    """
    parameters = spec.parameters
    by_key = {p.path: p for p in parameters}
    found: list[Corner] = []
    seen: set[str] = set()

    def add(label: str, params: dict[str, Any]) -> None:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            found.append(Corner(label, params))

    add("all-low", _walk(parameters, False, {}))
    add("all-high", _walk(parameters, True, {}))
    for p in parameters:
        for value in _targets(p):
            if any(p.path in c.params and _same(c.params[p.path], value) for c in found):
                continue
            forced: dict[str, Any] = {}
            _force(by_key, p.path, value, forced)
            params = _walk(parameters, value == p.high, forced)
            if p.path in params:  # conditions that can never hold together stay uncovered
                add(f"{p.path}={value!r}", params)
    return found


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)


def build_corners(spec: SweepSpec, base_config: dict[str, Any],
                  build_structure: Callable[[dict[str, Any]], dict[str, Any]],
                  seed: int) -> list[Corner]:
    """Rebuild the model at every corner (safe mode, on this process's CPU); count params.

    ``build_structure`` turns factory arguments into a structure's config (structural
    sweeps only); each distinct structure is built once.

    Raises:
        SpecError: A corner does not build; it names the file, ``parameters.<key>``, the
            value and a hint (``model.*`` when the base model itself does not build).
    """
    from clonesweep.workers.rebuild import rebuild

    structures: dict[str, dict[str, Any]] = {}
    built: list[Corner] = []
    _check_base(spec, base_config, rebuild, seed)
    for corner in corners(spec):
        config = base_config
        if spec.structural:
            key = json.dumps(corner.structure, sort_keys=True)
            if key not in structures:
                structures[key] = _structure(spec, corner, build_structure)
            config = structures[key]
            _check_paths(spec, corner, config)
        params = config_params(corner.params, structural=spec.structural)
        try:
            model = rebuild(config, params, seed=seed).model
        except CloneSweepError as exc:
            raise _culprit(spec, corner, config, params, exc, rebuild, seed) from exc
        built.append(Corner(corner.label, corner.params, int(model.count_params())))
    return built


def _check_base(spec: SweepSpec, config: dict[str, Any], rebuild: Any, seed: int) -> None:
    """The base model must rebuild with no params at all (custom layers, Lambda, ...)."""
    try:
        rebuild(config, {}, seed=seed)
    except CloneSweepError as exc:
        field_name = f"model.{spec.model.source.value}"
        message, hint = _split_hint(exc)
        raise SpecError(f"the base model does not rebuild in safe mode: {message}",
                        file=str(spec.file), field=field_name, value=spec.model.ref,
                        hint=hint or "check the model's custom layers and model.imports")\
            from exc


def _structure(spec: SweepSpec, corner: Corner,
               build_structure: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    try:
        return build_structure(corner.structure)
    except SpecError as exc:
        key, value = next(((f"model.{k}", v) for k, v in corner.structure.items()),
                          ("model.factory", spec.model.ref))
        raise SpecError(f"the model factory fails at corner '{corner.label}': {exc.message}",
                        file=str(spec.file), field=f"parameters.{key}" if corner.structure
                        else "model.factory", value=value,
                        hint=f"arguments {corner.structure!r}; {exc.hint or _DEFAULT_HINT}")\
            from exc


def _check_paths(spec: SweepSpec, corner: Corner, config: dict[str, Any]) -> None:
    active = tuple(p for p in spec.parameters if p.path in corner.params)
    try:
        check_parameters(active, config, str(spec.file))
    except SpecError as exc:
        raise SpecError(f"{exc.message} in the structure {corner.structure!r} (corner "
                        f"'{corner.label}')", file=str(spec.file), field=exc.field,
                        value=exc.value if exc.has_value else None,
                        hint=exc.hint or "guard the key with `when` on the model.* keys "
                                         "that create that layer") from exc


def _culprit(spec: SweepSpec, corner: Corner, config: dict[str, Any], params: dict[str, Any],
             exc: CloneSweepError, rebuild: Any, seed: int) -> SpecError:
    """The first single key whose value breaks the rebuild, as a located SpecError."""
    culprit = next(iter(params.items()), None)
    for key, value in params.items():
        try:
            rebuild(config, {key: value}, seed=seed)
        except CloneSweepError:
            culprit = (key, value)
            break
    message, hint = _split_hint(exc)
    if isinstance(exc, SpecError) and exc.field in params:
        culprit = (exc.field, params[exc.field])
    if culprit is None:
        return SpecError(f"the model does not build at corner '{corner.label}': {message}",
                         file=str(spec.file), field="parameters", value=corner.params,
                         hint=hint or _DEFAULT_HINT)
    key, value = culprit
    return SpecError(f"the model does not build at corner '{corner.label}': {message}",
                     file=str(spec.file), field=f"parameters.{key}", value=value,
                     hint=hint or _DEFAULT_HINT)


def _split_hint(exc: Exception) -> tuple[str, str | None]:
    if isinstance(exc, SpecError):
        return exc.message, exc.hint
    text = str(exc)
    message, _, hint = text.partition("\n  hint: ")
    return _condensed(message), hint or None


def _condensed(message: str) -> str:
    """Keras's nested deserialization error, condensed in its fence (Keras is loaded: the
    message comes from a rebuild on this process)."""
    from clonesweep.workers._keras import condensed_deserialization_error

    return condensed_deserialization_error(message)
