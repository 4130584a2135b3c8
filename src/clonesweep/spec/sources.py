"""The ``model`` block: where the base model comes from, read without Keras.

Exactly one source::

    model: {config: digits_mlp.json}     # JSON of keras.saving.serialize_keras_object(model)
    model: {file: base.keras}            # a .keras archive: its config.json (weights unused
                                         # but what preprocessing layers adapted)
    model: {factory: "pkg.models:build"} # module:function returning a keras.Model (driver-side)

A config JSON must be the envelope ``{"class_name": ..., "config": {...}, ...}``: a bare
``model.get_config()`` dict does not say which class to rebuild, so it is refused with a hint
to wrap it as ``{"class_name": "Sequential" | "Functional", "config": <get_config()>}``.
Configs holding a ``Lambda`` layer are refused: safe mode cannot rebuild them.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clonesweep.spec._fields import CALLABLE_RE, MODULE_RE, Block, resolve_path
from clonesweep.spec.model import ModelSource, ModelSpec

__all__ = ["find_lambda", "parse_model"]

_SOURCES = ("config", "file", "factory")


def parse_model(block: Block, base: Path) -> ModelSpec:
    """Read the ``model`` block; relative paths resolve against ``base`` (the sweep folder)."""
    block.only((*_SOURCES, "imports"))
    given = [name for name in _SOURCES if block.has(name)]
    if len(given) != 1:
        block.fail(None, f"expected exactly one of {', '.join(_SOURCES)}; got "
                         f"{', '.join(given) or 'none'}", dict(block.data),
                   "e.g. model: {config: my_model.json}")
    imports = _imports(block)
    source = ModelSource(given[0])
    if source is ModelSource.FACTORY:
        ref = block.string("factory", pattern=CALLABLE_RE, what="'module:function'")
        return ModelSpec(source, ref, imports)
    path = _existing_file(block, source.value, base)
    if source is ModelSource.FILE:
        config = _read_archive(block, path)
    else:
        config = _read_json(block, "config", path, path.read_bytes())
    _check_envelope(block, source.value, path, config)
    return ModelSpec(source, str(path), imports, config)


def _imports(block: Block) -> tuple[str, ...]:
    modules: tuple[str, ...] = block.strings("imports", ())
    for index, module in enumerate(modules):
        if not MODULE_RE.fullmatch(module):
            block.fail(f"imports[{index}]", "expected a dotted module name", module,
                       "e.g. my_package.layers")
    return modules


def _existing_file(block: Block, key: str, base: Path) -> Path:
    raw = block.string(key)
    path = resolve_path(base / Path(raw).expanduser(), file=block.file, field=block.field(key),
                        value=raw)
    if not path.is_file():
        block.fail(key, f"no such file: {path}", raw,
                   "paths are relative to the folder of the sweep file")
    if key == "file" and path.suffix != ".keras":
        block.fail(key, "expected a .keras archive (written by model.save('x.keras'))", raw,
                   "for a JSON config use model.config")
    return path


def _read_archive(block: Block, path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read("config.json")
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        block.fail("file", f"cannot read config.json from the .keras archive {path}: {err}",
                   block.data["file"])
    return _read_json(block, "file", path, data)


def _read_json(block: Block, key: str, path: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except UnicodeDecodeError as err:
        block.fail(key, f"{path} is not UTF-8 text: {err}", block.data[key])
    except json.JSONDecodeError as err:
        block.fail(key, f"{path} is not valid JSON: {err.msg} at line {err.lineno}, "
                        f"column {err.colno}", block.data[key])


def _check_envelope(block: Block, key: str, path: Path, config: Any) -> None:
    if not isinstance(config, dict):
        block.fail(key, f"{path} holds a JSON {type(config).__name__}, not a model config",
                   block.data[key])
    if not isinstance(config.get("class_name"), str) or not isinstance(
        config.get("config"), dict
    ):
        guess = "Functional" if "input_layers" in config else "Sequential"
        block.fail(key, f"{path} is not a serialize_keras_object envelope (it needs "
                        "'class_name' and 'config')", block.data[key],
                   f'wrap a bare get_config() dict as {{"class_name": "{guess}", "config": '
                   "<get_config()>}, or write keras.saving.serialize_keras_object(model)")
    found = next(find_lambda(config), None)
    if found is not None:
        name, where = found
        block.fail(key, f"{path} holds a Lambda layer '{name}' (at {where}); safe mode cannot "
                        "rebuild Lambda layers", name,
                   "replace it with a registered custom layer "
                   "(keras.saving.register_keras_serializable)")


def find_lambda(node: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Yield ``(layer name, JSON path)`` of every Lambda layer in a config, at any depth."""
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            inner = node.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            yield str(name if name is not None else node.get("name", "?")), where
        for key, value in node.items():
            yield from find_lambda(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from find_lambda(item, f"{where}[{index}]")
