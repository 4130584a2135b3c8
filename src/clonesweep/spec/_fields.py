"""Typed reads out of one YAML mapping, each failure a :class:`SpecError` naming file + field.

A :class:`Block` is one mapping of a sweep file together with where it sits (the file and
the dotted field of the mapping). Its readers check the type and range of one key and
return the value; every check that fails says what was expected and what was received.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from clonesweep.errors import SpecError

__all__ = [
    "MAX_NAME_BYTES",
    "MISSING",
    "Block",
    "check_path_length",
    "did_you_mean",
    "is_json_data",
    "is_primitive",
    "kind_of",
    "resolve_path",
]

MISSING: Any = SpecError.NO_VALUE
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
MODULE_RE = re.compile(rf"^{_DOTTED}$")
CALLABLE_RE = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
#: Top-level keys with their own section in docs/sweep-file.md (the default hint links it).
_DOC_SECTIONS = ("model", "data", "training", "objective", "constraints", "parameters",
                 "sweep", "trackers")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice (if any) and every valid choice."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    listing = ", ".join(repr(option) for option in options)
    if close:
        return f"did you mean '{close[0]}'? Valid: {listing}"
    return f"valid: {listing}"


def kind_of(value: Any) -> str:
    """The YAML-ish name of a value's type, for messages."""
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def is_primitive(value: Any) -> bool:
    """A JSON scalar: str, int, float (finite), bool or None."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def is_json_data(value: Any) -> bool:
    """Primitives, and lists / string-keyed mappings of JSON data."""
    if isinstance(value, list):
        return all(is_json_data(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_data(v) for k, v in value.items())
    return is_primitive(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


@dataclass(frozen=True)
class Block:
    """One mapping of a sweep file: ``data`` found at ``path`` (dotted) in ``file``."""

    file: str
    path: str
    data: Mapping[str, Any]

    @classmethod
    def of(cls, file: str, path: str, value: Any) -> Block:
        """Wrap ``value``, which must be a mapping with string keys (None reads as empty)."""
        if value is None:
            return cls(file, path, {})
        if not isinstance(value, dict):
            raise SpecError(
                f"expected a mapping, not a {kind_of(value)}", file=file, field=path or None,
                value=value, hint="write it as `key: value` lines (or {key: value, ...}); "
                                  "start from configs/*.yaml",
            )
        for key in value:
            if not isinstance(key, str):
                raise SpecError(
                    "keys must be strings", file=file, field=path or None, value=key,
                    hint="quote the key in the YAML file",
                )
        return cls(file, path, value)

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str | None, message: str, value: Any = MISSING,
             hint: str | None = None) -> NoReturn:
        field = self.field(key) if key is not None else (self.path or None)
        top = (field or "").split(".")[0].split("[")[0]
        raise SpecError(message, file=self.file, field=field, value=value,
                        hint=hint or f"every key, its type and range: docs/sweep-file.md"
                                     f"{'#' + top if top in _DOC_SECTIONS else ''}")

    def has(self, key: str) -> bool:
        return key in self.data

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse any key not in ``allowed``, with a did-you-mean hint."""
        allowed = tuple(allowed)
        for key in self.data:
            if key not in allowed:
                self.fail(key, f"unknown key '{key}'", key, did_you_mean(key, allowed))

    def sub(self, key: str) -> Block:
        return Block.of(self.file, self.field(key), self.data.get(key))

    def raw(self, key: str, default: Any = MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            self.fail(key, f"'{key}' is required")
        return default

    def string(self, key: str, default: Any = MISSING, pattern: re.Pattern[str] | None = None,
               what: str = "a non-empty string") -> Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value
        ok = isinstance(value, str) and value.strip() != ""
        if not ok or (pattern is not None and not pattern.fullmatch(value)):
            self.fail(key, f"expected {what}", value)
        return value

    def integer(self, key: str, default: Any = MISSING, low: int | None = None,
                high: int | None = None) -> Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value
        if not _is_int(value):
            self.fail(key, f"expected an int, not a {kind_of(value)}", value)
        self._in_range(key, value, low, high)
        return value

    def number(self, key: str, default: Any = MISSING, *, low: float | None = None,
               positive: bool = False, nullable: bool = False) -> Any:
        value = self.raw(key, default)
        if key not in self.data or (nullable and value is None):
            return value
        if not _is_number(value):
            self.fail(key, f"expected a finite number, not a {kind_of(value)}", value)
        if positive and value <= 0:
            self.fail(key, "expected a number > 0", value)
        self._in_range(key, value, low, None)
        return value

    def boolean(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        if key in self.data and not isinstance(value, bool):
            self.fail(key, f"expected true or false, not a {kind_of(value)}", value)
        return value

    def strings(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value
        if not isinstance(value, list):
            self.fail(key, f"expected a list of strings, not a {kind_of(value)}", value)
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(f"{key}[{index}]", "expected a non-empty string", item)
        return tuple(value)

    def _in_range(self, key: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            self.fail(key, f"expected a value >= {low}", value)
        if high is not None and value > high:
            self.fail(key, f"expected a value <= {high}", value)


#: Linux's limits (NAME_MAX, PATH_MAX less room for the files a run writes below a folder):
#: beyond them ``open`` fails with "File name too long" after the run folder exists.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4000


def resolve_path(path: Path, *, file: str | None, field: str, value: Any) -> Path:
    """``path`` made absolute with symlinks resolved, or a SpecError naming ``field``.

    Refuses a symlink loop (``Path.resolve`` raises RuntimeError or OSError on one) and a
    path with a component or a total length beyond what the file system takes.
    """
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as exc:
        raise SpecError(f"the path cannot be resolved: {exc}", file=file, field=field,
                        value=value, hint="a symlink on it points back to itself "
                                          "(directly or through others): fix or remove it")\
            from None
    check_path_length(resolved, file=file, field=field, value=value)
    return resolved


def check_path_length(path: Path, *, file: str | None, field: str, value: Any) -> None:
    """SpecError if a component of ``path`` or the whole of it is too long to create."""
    longest = max((part for part in path.parts), key=lambda p: len(os.fsencode(p)),
                  default="")
    if len(os.fsencode(longest)) > MAX_NAME_BYTES:
        raise SpecError(f"a folder or file name in the path has {len(os.fsencode(longest))} "
                        f"bytes; the file system takes at most {MAX_NAME_BYTES}", file=file,
                        field=field, value=value, hint="use a shorter name")
    if len(os.fsencode(str(path))) > MAX_PATH_BYTES:
        raise SpecError(f"the path has {len(os.fsencode(str(path)))} bytes; at most "
                        f"{MAX_PATH_BYTES} leave room for the files a run writes",
                        file=file, field=field, value=value, hint="use a shorter path")
