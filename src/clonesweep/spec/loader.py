"""Read a sweep file into a frozen :class:`SweepSpec`, checking every key.

The loader only reads: it creates no run folder, no study, no file. Every problem raises
:class:`SpecError` naming the file (as given), the dotted field, the value and a hint.
Relative paths (model config, ``.keras`` file, ``run_dir``, file storages) resolve against
the folder of the sweep file, so a sweep means the same from any working directory.

About 350 lines, past the usual 300: the loader reads the file's blocks in order and each
block's errors carry the same file and field context; the blocks with their own grammar
are their own modules (searchspace, settings, fitsettings, trackers).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from clonesweep.errors import SpecError
from clonesweep.spec._fields import CALLABLE_RE, Block, did_you_mean, is_json_data, is_primitive
from clonesweep.spec.fitsettings import parse_callbacks, parse_class_weight
from clonesweep.spec.model import (
    PACK_MODES,
    SPECIAL_METRICS,
    ConstraintSpec,
    DataSpec,
    Direction,
    ModelSource,
    ObjectiveSpec,
    PackSpec,
    ParamSpec,
    SweepSettings,
    SweepSpec,
    TrainingSpec,
)
from clonesweep.spec.optimizers import optimizer_keys
from clonesweep.spec.searchspace import parse_parameters
from clonesweep.spec.settings import check_storage_url, parse_settings
from clonesweep.spec.sources import parse_model
from clonesweep.spec.trackers import parse_trackers

__all__ = ["DEFAULT_LOADER", "check_storage_url", "load_sweep", "parse_sweep", "read_sweep_file"]

DEFAULT_LOADER = "clonesweep.datasets:digits"
_TOP_KEYS = ("name", "model", "data", "training", "objective", "parameters", "sweep",
             "constraints", "enqueue", "trackers")
_TRAINING_KEYS = ("epochs", "batch_size", "optimizer", "loss", "metrics",
                  "steps_per_execution", "jit_compile", "validation_batch_size",
                  "reuse_graphs", "class_weight", "callbacks", "pack")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
#: The name is a folder name (at most 255 bytes) and a study name; 200 leaves room.
_MAX_NAME = 200
#: A sweep file is settings, a few kB; anything beyond this is refused before parsing.
MAX_SWEEP_FILE_BYTES = 1 << 20
_DIRECTIONS = {"maximize": Direction.MAXIMIZE, "max": Direction.MAXIMIZE,
               "minimize": Direction.MINIMIZE, "min": Direction.MINIMIZE}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads ``1e-3`` as a float (YAML 1.2)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: list[Any] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where 1e-3 is a string; sweep files are full of such numbers.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate the sweep file at ``path``.

    Raises:
        SpecError: the file is missing, not YAML, or any key is unknown, of the wrong type
            or out of range; the message names the file, the field, the value and a hint.

    Example:
        >>> spec = load_sweep("configs/digits_mlp.yaml")
        >>> spec.sweep.trials, spec.parameters[0].path
        (16, 'layers.hidden.units')
    """
    file = os.fspath(path)
    return parse_sweep(read_sweep_file(file), file=file,
                       base=Path(file).expanduser().resolve().parent)


def parse_sweep(data: Any, *, file: str, base: Path) -> SweepSpec:
    """Validate a sweep already read into Python data (what :func:`load_sweep` does after
    reading the YAML; the Python API passes a dict). ``file`` names it in errors and is the
    spec's ``file``; relative paths resolve against ``base``.

    Raises:
        SpecError: as :func:`load_sweep`.
    """
    top = Block.of(file, "", data)
    top.only(_TOP_KEYS)
    name = top.string("name", pattern=_NAME_RE, what="a name of letters, digits, '_', '.', '-'")
    if set(name) == {"."}:
        top.fail("name", "'.' and '..' cannot name a run folder", name)
    if len(name) > _MAX_NAME:
        top.fail("name", f"a name of {len(name)} characters; at most {_MAX_NAME} (it names "
                 "the run folder and the study)", name, "use a shorter name")
    if not top.has("model"):
        top.fail("model", "'model' is required", hint="e.g. model: {config: my_model.json}")
    model = parse_model(top.sub("model"), base)
    training = _training(top.sub("training"))
    objectives = _objectives(top, training.metrics)
    parameters = parse_parameters(top.sub("parameters"), training.optimizer, model.config,
                                  factory=model.source is ModelSource.FACTORY)
    sweep = parse_settings(top.sub("sweep"), base)
    _check_multi_objective(top, objectives, sweep)
    return SweepSpec(
        name=name,
        file=Path(file).expanduser().resolve(),
        model=model,
        data=_data(top.sub("data")),
        training=training,
        objective=objectives[0],
        parameters=parameters,
        sweep=sweep,
        objectives=objectives,
        constraints=_constraints(top, training.metrics),
        enqueue=_enqueue(top, parameters),
        trackers=parse_trackers(top.sub("trackers"), base),
    )


def read_sweep_file(file: str) -> Any:
    """The sweep file's YAML as Python data (duplicate keys refused, ``1e-3`` a float).

    Raises:
        SpecError: the file is missing, unreadable, empty or not YAML.
    """
    return _read_yaml(file)


def _read_yaml(file: str) -> Any:
    try:
        size = os.stat(file).st_size
        if size > MAX_SWEEP_FILE_BYTES:
            # Read no further: YAML parses a large file slowly (a 50 MB file: minutes, GBs).
            raise SpecError(f"the sweep file has {size:,} bytes; at most "
                            f"{MAX_SWEEP_FILE_BYTES:,} are read", file=file, value=size,
                            hint="a sweep file holds settings: keep model configs in their "
                                 "own file (model.config) and data in the loader")
        with open(file, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictLoader)
    except FileNotFoundError:
        raise SpecError("sweep file not found", file=file, value=file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read the sweep file: {err}", file=file,
                        hint="give a readable UTF-8 text file (a symlink on its path that "
                             "points back to itself cannot be read)") from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {_yaml_problem(err)}", file=file,
                        hint="check the indentation and quoting around that line") from None
    if data is None:
        raise SpecError("the sweep file is empty", file=file, hint="start from configs/*.yaml")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _data(block: Block) -> DataSpec:
    block.only(("loader", "kwargs"))
    loader = block.string("loader", DEFAULT_LOADER, pattern=CALLABLE_RE, what="'module:function'")
    kwargs = block.sub("kwargs")
    for key, value in kwargs.data.items():
        if not is_primitive(value):
            kwargs.fail(key, "expected a JSON primitive (str, int, float, bool or null)", value)
    return DataSpec(loader=loader, kwargs=dict(kwargs.data))


def _training(block: Block) -> TrainingSpec:
    block.only(_TRAINING_KEYS)
    d = TrainingSpec()
    optimizer, optimizer_config = _optimizer(block)
    return TrainingSpec(
        epochs=block.integer("epochs", d.epochs, low=1),
        batch_size=block.integer("batch_size", d.batch_size, low=1),
        optimizer=optimizer,
        optimizer_config=optimizer_config,
        loss=block.string("loss", d.loss),
        metrics=block.strings("metrics", d.metrics),
        steps_per_execution=block.integer("steps_per_execution", d.steps_per_execution, low=1),
        jit_compile=block.boolean("jit_compile", d.jit_compile),  # None: per backend
        validation_batch_size=block.integer("validation_batch_size", d.validation_batch_size,
                                            low=1),
        reuse_graphs=block.boolean("reuse_graphs", d.reuse_graphs),
        class_weight=parse_class_weight(block),
        callbacks=parse_callbacks(block),
        pack=_pack(block),
    )


def _pack(block: Block) -> PackSpec:
    """``pack: {enabled: true, max_trials: 8, mode: vmap}`` (every key optional; ``enabled``
    is ``auto`` unless given: true, false or auto)."""
    d = PackSpec()
    if not block.has("pack"):
        return d
    sub = block.sub("pack")
    sub.only(("enabled", "max_trials", "mode"))
    mode = sub.string("mode", d.mode)
    if mode not in PACK_MODES:
        sub.fail("mode", f"expected one of {', '.join(PACK_MODES)}", mode,
                 did_you_mean(mode, PACK_MODES))
    enabled = sub.raw("enabled", "auto")
    if enabled == "auto":
        enabled = None
    elif not isinstance(enabled, bool):
        sub.fail("enabled", "expected true, false or auto (packed when it pays: see "
                 "docs/sweep-file.md, packed trials)", enabled)
    return PackSpec(enabled=enabled,
                    max_trials=sub.integer("max_trials", d.max_trials, low=2, high=256),
                    mode=mode)


def _optimizer(block: Block) -> tuple[str, dict[str, Any]]:
    """``optimizer: adam`` or ``optimizer: {name: adam, learning_rate: 0.001, ...}``."""
    raw = block.raw("optimizer", TrainingSpec.optimizer)
    if isinstance(raw, str) or not block.has("optimizer"):
        return block.string("optimizer", TrainingSpec.optimizer), {}
    sub = block.sub("optimizer")
    name: str = sub.string("name")
    config = {k: v for k, v in sub.data.items() if k != "name"}
    known = optimizer_keys(name)
    for key, value in config.items():
        if known is not None and key not in known:
            sub.fail(key, f"optimizer '{name}' has no config key '{key}'", key,
                     did_you_mean(key, known))
        if not is_json_data(value):
            sub.fail(key, "expected JSON data", value)
    return name, config


def _objectives(top: Block, metrics: tuple[str, ...]) -> tuple[ObjectiveSpec, ...]:
    """``objective: {metric, direction}`` or a list of them (multi-objective)."""
    raw = top.raw("objective", None)
    if not isinstance(raw, list):
        return (_objective(top.sub("objective"), metrics),)
    if not raw:
        top.fail("objective", "expected a mapping or a non-empty list of mappings", raw)
    objectives = tuple(_objective(Block.of(top.file, f"objective[{i}]", item), metrics)
                       for i, item in enumerate(raw))
    seen = [o.metric for o in objectives]
    for i, metric in enumerate(seen):
        if metric in seen[:i]:
            top.fail(f"objective[{i}].metric", "the same metric twice", metric)
    return objectives


def _objective(block: Block, metrics: tuple[str, ...]) -> ObjectiveSpec:
    block.only(("metric", "direction"))
    d = ObjectiveSpec()
    metric: str = block.string("metric", d.metric)
    raw = block.raw("direction", d.direction.value)
    if not isinstance(raw, str) or raw not in _DIRECTIONS:
        block.fail("direction", "expected maximize or minimize (or max / min)", raw,
                   did_you_mean(str(raw), _DIRECTIONS))
    _check_metric(block, metric, metrics, "objective")
    return ObjectiveSpec(metric=metric, direction=_DIRECTIONS[raw])


def _check_metric(block: Block, metric: str, metrics: tuple[str, ...], what: str) -> None:
    if metric in SPECIAL_METRICS:
        return
    bare = metric.removeprefix("val_")
    logged = ("loss", *metrics)
    if not any(bare == m or bare.endswith(f"_{m}") for m in logged):
        block.fail("metric", f"the {what} is not among the logged metrics", metric,
                   f"use loss / val_loss or one of training.metrics ({', '.join(metrics)}), "
                   f"optionally prefixed with val_, or {' / '.join(SPECIAL_METRICS)}")


def _check_multi_objective(top: Block, objectives: tuple[ObjectiveSpec, ...],
                           sweep: SweepSettings) -> None:
    if len(objectives) > 1 and sweep.pruner.name != "none":
        top.fail("sweep.pruner", "Optuna cannot prune a multi-objective study (trial.report "
                 "does not support several objectives)", sweep.pruner.name,
                 "drop sweep.pruner (or set it to none), or keep a single objective")
    if objectives[0].metric in SPECIAL_METRICS and sweep.pruner.name != "none":
        top.fail("sweep.pruner", f"pruning reads the objective after each epoch, and "
                 f"{objectives[0].metric} is only measured once training is over",
                 sweep.pruner.name, "drop sweep.pruner, or optimize a logged metric")
    if len(objectives) > 1 and sweep.sampler.name == "cmaes":
        top.fail("sweep.sampler", "the cmaes sampler supports a single objective only",
                 "cmaes", "use nsga2, nsga3, tpe, gp, random or qmc")


def _constraints(top: Block, metrics: tuple[str, ...]) -> tuple[ConstraintSpec, ...]:
    """``constraints: [{metric: param_count, max: 50000}, ...]``."""
    raw = top.raw("constraints", None)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        top.fail("constraints", "expected a list of {metric, min and/or max}", raw,
                 "e.g. constraints: [{metric: param_count, max: 50000}]")
    out = []
    for i, item in enumerate(raw):
        block = Block.of(top.file, f"constraints[{i}]", item)
        block.only(("metric", "min", "max"))
        metric: str = block.string("metric")
        _check_metric(block, metric, metrics, "constraint")
        low = block.number("min", None, nullable=True)
        high = block.number("max", None, nullable=True)
        if low is None and high is None:
            block.fail(None, "a constraint needs 'min', 'max' or both", item)
        if low is not None and high is not None and low > high:
            block.fail(None, f"`min <= max` must hold, but got (min={low!r}, max={high!r})")
        out.append(ConstraintSpec(metric, low, high))
    return tuple(out)


def _enqueue(top: Block, parameters: tuple[ParamSpec, ...]) -> tuple[dict[str, Any], ...]:
    """``enqueue: [{<key>: <value>, ...}, ...]``: known configurations to run first."""
    raw = top.raw("enqueue", None)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        top.fail("enqueue", "expected a list of mappings of search-space key -> value", raw)
    by_key = {p.path: p for p in parameters if not p.is_fixed}
    out = []
    for i, item in enumerate(raw):
        block = Block.of(top.file, f"enqueue[{i}]", item)
        if not block.data:
            block.fail(None, "an empty configuration", item)
        for key, value in block.data.items():
            param = by_key.get(key)
            if param is None:
                block.fail(key, "not a sampled key of parameters", key,
                           did_you_mean(key, by_key))
            if not param.contains(value):
                block.fail(key, "the value is outside the key's search space", value,
                           f"its entry: {param.describe()}")
        out.append(dict(block.data))
    return tuple(out)
