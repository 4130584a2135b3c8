"""The ``parameters`` block: W&B-shaped search-space entries -> :class:`ParamSpec`.

Each entry is keyed by a search-space key (see :mod:`clonesweep.spec.configpaths`) and has
one of three shapes::

    layers.drop.rate: {value: 0.2}                      # constant
    layers.hidden.activation: {values: [relu, gelu]}    # categorical
    optimizer.learning_rate: {min: 1e-4, max: 1e-1, log: true}   # numeric range

A range without ``distribution`` is ``int_uniform`` when both bounds are ints, else
``uniform``; ``log: true`` makes them ``int_log_uniform_values`` / ``log_uniform_values``;
``step`` (alias ``q``) gives ``q_uniform`` for floats and a stepped ``int_uniform`` for ints.

Any entry may be conditional: ``when: {<other key>: <value or [values]>}`` samples it only in
trials where every listed key was sampled (active) and took one of the values; ``otherwise:
<value>`` is applied when a condition fails (without it the base model's value stays). Two
key forms exist only for that and for structural search::

    switch.<name>     a free choice that changes nothing by itself; conditions read it
    model.<argument>  an argument of the ``model.factory`` function (structural search)

Entries come back ordered parents first, so a trial can sample them define-by-run.

About 390 lines, past the usual 300: one parameter's grammar and the block's checks
(order, conditions, keys against the config) refer to each other both ways: a condition's
error names the parameters it may depend on.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from clonesweep.errors import ConfigPathError, SpecError
from clonesweep.spec import configpaths
from clonesweep.spec._fields import Block, did_you_mean, is_primitive, kind_of
from clonesweep.spec.model import Condition, Distribution, ParamSpec
from clonesweep.spec.optimizers import optimizer_keys

__all__ = ["FREE_PREFIXES", "TRAIN_KEYS", "check_parameters", "config_params",
           "parse_parameters"]

#: Training settings a ``train.<key>`` entry may sweep (all positive ints).
TRAIN_KEYS = ("batch_size", "epochs", "steps_per_execution")

_ENTRY_KEYS = ("value", "values", "min", "max", "distribution", "log", "step", "q", "when",
               "otherwise")
_CONDITION_KEYS = ("when", "otherwise")
#: Key prefixes that are no config path: ``switch.<name>`` gates other keys, ``model.<arg>``
#: is an argument of the model factory.
FREE_PREFIXES = ("switch.", "model.")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMERIC = (
    Distribution.UNIFORM,
    Distribution.INT_UNIFORM,
    Distribution.Q_UNIFORM,
    Distribution.LOG_UNIFORM_VALUES,
    Distribution.INT_LOG_UNIFORM_VALUES,
)
_INTS = (Distribution.INT_UNIFORM, Distribution.INT_LOG_UNIFORM_VALUES)
_LOGS = (Distribution.LOG_UNIFORM_VALUES, Distribution.INT_LOG_UNIFORM_VALUES)


def parse_parameters(
    block: Block, optimizer: str, model_config: dict[str, Any] | None, *,
    factory: bool = False,
) -> tuple[ParamSpec, ...]:
    """Read the ``parameters`` mapping; check each key against the model and optimizer.

    Layer keys are resolved in ``model_config`` when it is known (None for a factory
    model: then only their syntax is checked, and the driver calls
    :func:`check_parameters` once it has built the model). ``model.<argument>`` keys need a
    factory model. The result is ordered parents first (see ``when``).
    """
    specs = []
    for key in block.data:
        spec = _parse_entry(block.sub(key), key)
        if key.startswith(FREE_PREFIXES):
            _check_free_key(block, key, factory, model_config)
        else:
            _check_key(spec, optimizer, model_config, block.file)
        specs.append(spec)
    _check_conditions(block, specs)
    return _parents_first(block, specs)


def config_params(params: dict[str, Any], *, structural: bool = True) -> dict[str, Any]:
    """The entries of a trial's params that address the model config, optimizer or training.

    ``switch.*`` keys are consumed by the driver, and so are ``model.*`` keys of a structural
    search (``structural``: they are the factory's arguments). Otherwise ``model.*`` keys are
    a constructor-argument model's own config entries and go to the worker.
    """
    dropped = FREE_PREFIXES if structural else ("switch.",)
    return {k: v for k, v in params.items() if not k.startswith(dropped)}


def _check_free_key(block: Block, key: str, factory: bool,
                    model_config: dict[str, Any] | None) -> None:
    prefix, _, name = key.partition(".")
    if prefix == "model" and not factory and model_config is not None \
            and not configpaths.is_layer_graph(model_config):
        # A constructor-argument model (subclassed, keras-hub): the key addresses its config.
        _relocated(lambda: configpaths.resolve_argument(model_config, key), key, block.file)
        return
    if not _IDENT.fullmatch(name):
        block.fail(key, f"'{prefix}.' must be followed by a Python identifier", key,
                   f"e.g. {prefix}.{'use_dropout' if prefix == 'switch' else 'n_blocks'}")
    if prefix == "model" and not factory:
        block.fail(key, "model.<argument> keys are arguments of a model factory or of a model "
                        "whose config is its constructor arguments; this sweep's model is a "
                        "layer graph", key,
                   "use model: {factory: 'pkg.module:build'}, address its layers "
                   "(layers.<layer>.<key>), or use switch.<name> for a free choice that "
                   "other keys' `when` can read")


def _check_conditions(block: Block, specs: list[ParamSpec]) -> None:
    by_key = {spec.path: spec for spec in specs}
    for spec in specs:
        for cond in spec.when:
            where = f"{spec.path}.when.{cond.key}"
            if cond.key == spec.path:
                block.fail(where, "a key cannot depend on itself", cond.key)
            parent = by_key.get(cond.key)
            if parent is None:
                block.fail(where, "`when` names a key that is not in parameters", cond.key,
                           did_you_mean(cond.key, by_key))
            for value in cond.values:
                if not parent.contains(value):
                    block.fail(where, f"'{cond.key}' never takes this value, so the "
                                      "condition could never hold", value,
                               f"its entry: {parent.describe()}")


def _parents_first(block: Block, specs: list[ParamSpec]) -> tuple[ParamSpec, ...]:
    """Order keys so that every key comes after the keys its ``when`` reads (file order
    otherwise); a cycle is an error."""
    done: dict[str, ParamSpec] = {}
    pending = list(specs)
    while pending:
        ready = [s for s in pending if all(c.key in done for c in s.when)]
        if not ready:
            cycle = ", ".join(s.path for s in pending)
            block.fail(pending[0].path, f"the `when` conditions of these keys form a cycle: "
                                        f"{cycle}", pending[0].path)
        for spec in ready:
            done[spec.path] = spec
        pending = [s for s in pending if s.path not in done]
    return tuple(done.values())


def check_parameters(
    parameters: tuple[ParamSpec, ...], model_config: dict[str, Any], file: str
) -> None:
    """Check every layer key of ``parameters`` against ``model_config``.

    Raises:
        ConfigPathError: a key matches nothing; it names ``file`` and ``parameters.<key>``
            and lists what exists.

    Example:
        >>> check_parameters(spec.parameters, model_config, str(spec.file))  # doctest: +SKIP
    """
    for spec in parameters:
        key = spec.path
        if key.startswith(FREE_PREFIXES):
            continue
        if _parse_key(key, file).kind is configpaths.PathKind.LAYER:
            _relocated(lambda k=key: configpaths.resolve(model_config, k), key, file)


def _parse_key(key: str, file: str) -> configpaths.ParsedKey:
    result: configpaths.ParsedKey = _relocated(lambda: configpaths.parse_key(key), key, file)
    return result


def _relocated(call: Any, key: str, file: str) -> Any:
    """Run ``call``; re-raise its ConfigPathError located at ``file``/``parameters.<key>``."""
    try:
        return call()
    except ConfigPathError as err:
        value = err.value if err.has_value else key
        raise ConfigPathError(err.message, file=file, field=f"parameters.{key}", value=value,
                              hint=err.hint) from None


def _check_key(
    spec: ParamSpec, optimizer: str, model_config: dict[str, Any] | None, file: str
) -> None:
    parsed = _parse_key(spec.path, file)
    field = f"parameters.{spec.path}"
    if parsed.kind is configpaths.PathKind.LAYER:
        if model_config is not None:
            check_parameters((spec,), model_config, file)
        return
    if parsed.kind is configpaths.PathKind.TRAIN:
        if parsed.subkey not in TRAIN_KEYS:
            raise SpecError(f"'{parsed.subkey}' is not a training setting that can be swept",
                            file=file, field=field, value=spec.path,
                            hint=did_you_mean(parsed.subkey, TRAIN_KEYS))
        _check_positive_ints(spec, file, field)
        return
    known = optimizer_keys(optimizer)
    if known is not None and parsed.subkey not in known:
        raise SpecError(f"optimizer '{optimizer}' has no config key '{parsed.subkey}'",
                        file=file, field=field, value=spec.path,
                        hint=did_you_mean(parsed.subkey, known))


def _check_positive_ints(spec: ParamSpec, file: str, field: str) -> None:
    """``train.*`` settings are positive ints: the distribution must only yield those."""
    if spec.distribution in (Distribution.CONSTANT, Distribution.CATEGORICAL):
        bad = [v for v in spec.values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise SpecError("training settings take ints >= 1", file=file, field=field,
                            value=bad[0], hint="e.g. train.batch_size: {values: [32, 64]}")
    elif spec.distribution not in _INTS or (spec.low is not None and spec.low < 1):
        raise SpecError("training settings take ints >= 1: use int bounds with min >= 1",
                        file=file, field=field, value={"min": spec.low, "max": spec.high},
                        hint="e.g. train.batch_size: {min: 16, max: 128}")


def _parse_entry(block: Block, key: str) -> ParamSpec:
    block.only(_ENTRY_KEYS)
    when, otherwise, has_otherwise = _condition(block)
    block = Block(block.file, block.path,
                  {k: v for k, v in block.data.items() if k not in _CONDITION_KEYS})
    dist = _distribution(block)
    shapes = [name for name in ("value", "values", "min") if block.has(name)]
    if block.has("max") and "min" not in shapes:
        block.fail("min", "'min' is required with 'max'")
    if len(shapes) != 1:
        block.fail(None, "expected exactly one of {value: x}, {values: [...]} or "
                         "{min: a, max: b}", dict(block.data))
    if shapes == ["value"]:
        spec = _constant(block, key, dist)
    elif shapes == ["values"]:
        spec = _categorical(block, key, dist)
    else:
        spec = _numeric(block, key, dist)
    return replace(spec, when=when, otherwise=otherwise, has_otherwise=has_otherwise)


def _condition(block: Block) -> tuple[tuple[Condition, ...], Any, bool]:
    """``when: {key: value | [values], ...}`` (all must hold) and ``otherwise: value``."""
    if block.has("otherwise") and not block.has("when"):
        block.fail("otherwise", "'otherwise' only applies to a conditional entry (with "
                                "'when')", block.data["otherwise"])
    if not block.has("when"):
        return (), None, False
    sub = block.sub("when")
    if not sub.data:
        block.fail("when", "expected a mapping of key -> value (or list of values)",
                   block.data["when"], "e.g. when: {switch.use_dropout: true}")
    conditions = []
    for key, raw in sub.data.items():
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(is_primitive(v) for v in values):
            sub.fail(key, "expected a value or a non-empty list of values (JSON primitives)",
                     raw)
        conditions.append(Condition(key, tuple(values)))
    otherwise = block.data.get("otherwise")
    if block.has("otherwise") and not is_primitive(otherwise):
        block.fail("otherwise", "expected a JSON primitive (str, int, float, bool or null)",
                   otherwise)
    return tuple(conditions), otherwise, block.has("otherwise")


def _distribution(block: Block) -> Distribution | None:
    raw = block.raw("distribution", None)
    if raw is None:
        return None
    names = [d.value for d in Distribution]
    if raw not in names:
        block.fail("distribution", "unknown distribution", raw,
                   did_you_mean(str(raw), names))
    return Distribution(raw)


def _only_with(block: Block, shape: str, allowed: tuple[str, ...]) -> None:
    for name in block.data:
        if name not in allowed:
            block.fail(name, f"'{name}' does not apply to a {{{shape}: ...}} entry",
                       block.data[name])


def _constant(block: Block, key: str, dist: Distribution | None) -> ParamSpec:
    _only_with(block, "value", ("value", "distribution"))
    if dist not in (None, Distribution.CONSTANT):
        block.fail("distribution", "{value: x} needs distribution 'constant'", dist.value)
    value = block.data["value"]
    if not is_primitive(value):
        block.fail("value", f"expected a JSON primitive (str, int, float, bool or null), "
                            f"not a {kind_of(value)}", value)
    return ParamSpec(key, Distribution.CONSTANT, values=(value,))


def _categorical(block: Block, key: str, dist: Distribution | None) -> ParamSpec:
    _only_with(block, "values", ("values", "distribution"))
    if dist not in (None, Distribution.CATEGORICAL):
        block.fail("distribution", "{values: [...]} needs distribution 'categorical'",
                   dist.value)
    values = block.data["values"]
    if not isinstance(values, list) or not values:
        block.fail("values", "expected a non-empty list of choices", values)
    seen: set[tuple[str, Any]] = set()
    for index, choice in enumerate(values):
        if not is_primitive(choice):
            block.fail(f"values[{index}]", "choices must be JSON primitives (str, int, float, "
                       f"bool or null), not a {kind_of(choice)}", choice)
        if (kind_of(choice), choice) in seen:
            block.fail(f"values[{index}]", "duplicate choice", choice)
        seen.add((kind_of(choice), choice))
    return ParamSpec(key, Distribution.CATEGORICAL, values=tuple(values))


def _numeric(block: Block, key: str, dist: Distribution | None) -> ParamSpec:
    _only_with(block, "min", ("min", "max", "distribution", "log", "step", "q"))
    if dist is not None and dist not in _NUMERIC:
        block.fail("distribution", f"{{min, max}} needs a numeric distribution "
                   f"({', '.join(d.value for d in _NUMERIC)})", dist.value)
    low, high = block.number("min"), block.number("max")
    log = block.boolean("log", None)
    step = _step(block)
    dist = _infer(block, dist, low, high, log, step)
    if low > high:
        block.fail(None, f"`min <= max` must hold, but got (min={low!r}, max={high!r})",
                   hint="swap the bounds")
    is_log = dist in _LOGS
    if is_log and low <= 0:
        block.fail("min", "a log distribution needs min > 0", low)
    if dist in _INTS:
        _check_ints(block, low, high, step)
    if step is not None:
        _check_grid(block, low, high, step)
    return ParamSpec(key, dist, low=low, high=high, log=is_log, step=step)


def _step(block: Block) -> float | int | None:
    if block.has("step") and block.has("q"):
        block.fail("q", "give 'step' or its alias 'q', not both", block.data["q"])
    name = "q" if block.has("q") else "step"
    step: float | int | None = block.number(name, None, positive=True, nullable=True)
    return step


def _infer(block: Block, dist: Distribution | None, low: float, high: float,
           log: bool | None, step: float | None) -> Distribution:
    """Pick the distribution W&B would, then apply ``log`` and ``step``."""
    step_name = "q" if block.has("q") else "step"
    if log and step is not None:
        block.fail(step_name, "'log' and 'step' cannot be combined (Optuna refuses a "
                   "stepped log scale)", step, "drop one of them")
    if dist is None:
        both_int = all(isinstance(v, int) for v in (low, high))
        if both_int:
            dist = Distribution.INT_UNIFORM
        else:
            dist = Distribution.Q_UNIFORM if step is not None else Distribution.UNIFORM
    if log:
        dist = {Distribution.UNIFORM: Distribution.LOG_UNIFORM_VALUES,
                Distribution.INT_UNIFORM: Distribution.INT_LOG_UNIFORM_VALUES}.get(dist, dist)
        if dist not in _LOGS:
            block.fail("log", f"'log: true' does not apply to distribution '{dist.value}'", log)
    if log is False and dist in _LOGS:
        block.fail("log", f"distribution '{dist.value}' is a log scale; 'log: false' "
                          "contradicts it", log)
    if step is not None and dist in (Distribution.UNIFORM, *_LOGS):
        block.fail(step_name, f"'step' does not apply to distribution '{dist.value}'", step,
                   "use distribution q_uniform (floats) or int_uniform (ints)")
    if dist is Distribution.Q_UNIFORM and step is None:
        block.fail("step", "distribution 'q_uniform' needs a step ('step' or 'q')")
    return dist


def _check_ints(block: Block, low: float, high: float, step: float | None) -> None:
    for name, value in (("min", low), ("max", high), ("step", step)):
        if value is not None and not isinstance(value, int):
            block.fail(name, "an int distribution needs int bounds and step", value)


def _check_grid(block: Block, low: float, high: float, step: float) -> None:
    """Optuna would silently move ``max`` onto the grid; refuse instead."""
    ratio = (high - low) / step
    if not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
        block.fail(None, "`max - min` must be a multiple of step",
                   {"min": low, "max": high, "step": step},
                   f"e.g. max={low + math.floor(ratio) * step!r}")
