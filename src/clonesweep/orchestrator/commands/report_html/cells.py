"""Numbers and tables as the page shows them: 4 significant digits, sortable columns.

A :class:`Cell` carries the text shown and, for numbers, the value a column sorts by (the
page's script reads it from ``data-v``), so a rounded column still sorts by the full value.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Cell", "cell", "definitions", "fmt", "table"]


def fmt(value: Any) -> str:
    """``value`` as the page shows it: floats to 4 significant digits, None as empty.

    >>> fmt(0.123456789), fmt(1e-06), fmt(12), fmt(None), fmt(True)
    ('0.1235', '1e-06', '12', '', 'True')
    """
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, the number it sorts by (None: by its text), a CSS class."""

    text: str
    sort: float | None = None
    css: str = ""
    raw_html: bool = False  # text is already HTML (a <details> with a message)
    title: str = ""  # shown on hover: the whole text of a shortened cell


def cell(value: Any, css: str = "") -> Cell:
    """A cell for a plain value: numbers sort as numbers, the rest as text."""
    number = (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
              else None)
    return Cell(fmt(value), number, css)


def _td(c: Cell) -> str:
    attrs = "" if c.sort is None or not math.isfinite(c.sort) else f' data-v="{c.sort!r}"'
    if c.css:
        attrs += f' class="{c.css}"'
    if c.title:
        attrs += f' title="{html.escape(c.title)}"'
    return f"<td{attrs}>{c.text if c.raw_html else html.escape(c.text)}</td>"


def table(head: Sequence[str], rows: Iterable[Sequence[Cell]], *, sortable: bool = True,
          css: str = "") -> str:
    """An HTML table; ``sortable`` tables sort by a column when its header is clicked."""
    classes = " ".join(c for c in ("sortable" if sortable else "", css) if c)
    cls = f' class="{classes}"' if classes else ""
    title = ' title="click to sort"' if sortable else ""
    cells = "".join(f"<th{title}>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f"<table{cls}><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def definitions(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table with the keys as row headers (no header row)."""
    body = "".join(f'<tr><th scope="row">{html.escape(k)}</th><td>{html.escape(fmt(v))}</td>'
                   "</tr>" for k, v in rows)
    return f'<table class="facts"><tbody>{body}</tbody></table>'
