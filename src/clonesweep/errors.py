"""The one exception tree of clonesweep.

Every error a user can meet derives from :class:`CloneSweepError`::

    CloneSweepError
    ├── SpecError                 bad input: a sweep file, a model config, a CLI flag (exit 2)
    │   └── ConfigPathError       a search-space path that matches nothing in the model config
    ├── RebuildError              a variant could not be rebuilt (trial fails: invalid_config)
    │   └── UnsafeConfigError     a Lambda layer, a path or URL value, an unsafe object
    ├── StudyError                the Optuna study cannot be opened or does not match the sweep
    └── SweepFailed               the sweep as a whole could not finish (exit 1)

Only :class:`SpecError` (and its children) mean "fix your input"; the CLI maps it to exit
code 2. Everything else that escapes a command maps to exit code 1.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CloneSweepError",
    "ConfigPathError",
    "RebuildError",
    "SpecError",
    "StudyError",
    "SweepFailed",
    "UnsafeConfigError",
]


class CloneSweepError(Exception):
    """Base class of every clonesweep error."""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SpecError(CloneSweepError):
    """Bad input. The message names the file, the field and the value, with a hint.

    Args:
        message: What is wrong and what was expected.
        file: The file the value came from (a sweep file, a model config), if any.
        field: The dotted field inside that file, e.g. ``sweep.parallel``.
        value: The offending value, as received.
        hint: How to fix it.
    """

    #: The ``value`` of an error about a missing field (None is a value a file can hold).
    NO_VALUE: Any = object()

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        value: Any = NO_VALUE,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.field = field
        self.value = value
        self.hint = hint
        super().__init__(self._render())

    @property
    def has_value(self) -> bool:
        return self.value is not SpecError.NO_VALUE

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.field:
            where.append(f"field '{self.field}'")
        head = ": ".join(where)
        text = f"{head}: {self.message}" if head else self.message
        if self.has_value:
            text += f" (got {_short(self.value)})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def located(self, *, file: str | None = None, field_prefix: str | None = None) -> SpecError:
        """Return a copy that also names ``file`` and prefixes the field with ``field_prefix``."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        kwargs: dict[str, Any] = {"file": file or self.file, "field": field, "hint": self.hint}
        if self.has_value:
            kwargs["value"] = self.value
        return type(self)(self.message, **kwargs)


class ConfigPathError(SpecError):
    """A search-space key that does not resolve inside the model config."""


class RebuildError(CloneSweepError):
    """A variant could not be rebuilt from its config."""


class UnsafeConfigError(RebuildError):
    """The config holds something that safe mode must refuse (Lambda, path, URL, code)."""


class StudyError(CloneSweepError):
    """The Optuna study cannot be opened, or it belongs to another sweep."""


class SweepFailed(CloneSweepError):
    """The sweep could not finish (every trial failed, no worker could start, ...)."""
