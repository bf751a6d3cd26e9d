"""A family's page: Markdown text with its tables (also written as CSV) and figures (PNG and PDF) beside it."""

from __future__ import annotations

import csv
import os
from typing import Sequence

from mpiclip import plotting


def _numeric(text: str) -> bool:
    try:
        float(text.split()[0].rstrip("×x%"))
        return True
    except (ValueError, IndexError):
        return text in ("-", "")


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
        """The table in the page and as ``name``.csv (the same cells)."""
        with open(os.path.join(self.out, name + ".csv"), "w", newline="") as f:
            csv.writer(f).writerows([list(header), *map(list, rows)])
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
