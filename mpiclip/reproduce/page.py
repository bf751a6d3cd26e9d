"""A family's page: Markdown text with its tables (also written as CSV) and figures (PNG and PDF) beside it."""

from __future__ import annotations

import csv
import math
import os
from typing import Optional, Sequence

from mpiclip import plotting


def _numeric(text: str) -> bool:
    try:
        float(text.split()[0].rstrip("×x%"))
        return True
    except (ValueError, IndexError):
        return text in ("-", "")


class Spread(str):
    """A cell's text ('0.12 ± 0.01', '0.5 (0.4–0.6)') carrying its numbers, in the units the text shows: the
    CSV gives them as numeric columns (mean, low, high) beside the text; the Markdown shows the text alone.
    ``low`` and ``high`` are None where the text gives no spread (one seed)."""

    def __new__(cls, text: str, mean: float, low: Optional[float] = None, high: Optional[float] = None):
        cell = super().__new__(cls, text)
        cell.mean, cell.low, cell.high = mean, low, high
        return cell


SPREAD_PARTS = ("mean", "low", "high")


def csv_rows(header: Sequence[str], rows: Sequence[Sequence]) -> list[list]:
    """The table's cells, and after each column that holds a :class:`Spread` its mean, low and high as numbers
    ('<column> mean', ...; empty where a cell has none): the text columns stay as they are, in their order."""
    spread = [any(isinstance(r[i], Spread) for r in rows) for i in range(len(header))]
    number = lambda v: "" if v is None or not math.isfinite(v) else repr(float(v))
    out = [[h for i, h in enumerate(header) for h in [h] + ([f"{h} {p}" for p in SPREAD_PARTS] if spread[i] else [])]]
    for row in rows:
        out.append([c for i, v in enumerate(row) for c in [v] + (
            [number(getattr(v, p, None)) for p in SPREAD_PARTS] if spread[i] else [])])
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> str:
    """A pipe table; ``align`` has one letter per column, 'l' or 'r' (default: numbers right, text left)."""
    align = align or "".join("r" if rows and all(_numeric(str(r[i])) for r in rows) else "l" for i in range(len(header)))
    cell = lambda v: str(v).replace("|", "\\|")
    rule = ["---" if a == "l" else "--:" for a in align]
    return "\n".join("| " + " | ".join(map(cell, r)) + " |" for r in [header, rule, *rows])


class Page:
    """``out``/``name`` and the files it shows. Everything is written under ``out``; links are relative."""

    def __init__(self, out: str, title: str, name: str = "README.md"):
        self.out, self.name = out, name
        self.lines = [f"# {title}", ""]
        self.files: list[str] = []
        self.problems: list[str] = []
        os.makedirs(out, exist_ok=True)

    def text(self, *paragraphs: str) -> None:
        for p in paragraphs:
            self.lines += [p, ""]

    def heading(self, title: str, level: int = 2) -> None:
        self.lines += ["#" * level + " " + title, ""]

    def table(self, name: str, header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> None:
        """The table in the page and as ``name``.csv (the same cells, and the numbers of spreads beside them)."""
        with open(os.path.join(self.out, name + ".csv"), "w", newline="") as f:
            csv.writer(f).writerows(csv_rows(header, rows))
        self.files.append(name + ".csv")
        self.lines += [markdown_table(header, rows, align), "", f"[{name}.csv]({name}.csv)", ""]

    def figure(self, name: str, fig, alt: str = "") -> None:
        """``fig`` as ``name``.png (shown) and ``name``.pdf (TrueType fonts, for papers). A figure whose text
        overlaps or leaves the canvas is still written, and its problems are kept in ``problems``."""
        self.problems += [f"{name}: {p}" for p in plotting.layout_problems(fig)]
        plotting.save(fig, [os.path.join(self.out, name + ext) for ext in (".png", ".pdf")])
        self.files += [name + ".png", name + ".pdf"]
        self.lines += [f"![{alt or name}]({name}.png)", "", f"[{name}.pdf]({name}.pdf)", ""]

    def write(self) -> str:
        path = os.path.join(self.out, self.name)
        with open(path, "w") as f:
            f.write("\n".join(self.lines).rstrip("\n") + "\n")
        return path
