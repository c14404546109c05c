#!/usr/bin/env python
"""Chapter table of notebooks: how exported code is cut into cells and how much of it is checked right below.

Usage: python .ci/chapters.py nbs/05_env.ipynb [nbs/06_train.ipynb ...]   (default: every nbs/*.ipynb)

For each notebook: exported cells (code cells with `#| export` / `#| exports`), the median and the longest exported
cell in lines (every source line, blank lines and nbdev directives included, as the issue counted them), the longest
code cell of any kind, and how many exported cells have a check right below: the next code cell (prose in between is
fine, another code cell is not) calls test_eq, test_close, test_fail, test_ne, ... or asserts.
"""

import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

EXPORT = re.compile(r"^#\|\s*(export|exports)\b")
CHECKS = ("test_eq", "test_ne", "test_close", "test_fail", "test_is", "test_eq_type", "test_warns", "test_stdout")
CHECK = re.compile(rf"\b({'|'.join(CHECKS)})\s*\(|^\s*assert\b", re.M)


@dataclass
class Chapter:
    "The chapter numbers of one notebook."

    name: str
    exported: int
    median: float
    longest_exported: int
    longest_code: int
    checked: int

    @property
    def checked_share(self) -> float:
        return self.checked / self.exported if self.exported else 0.0


def _lines(src: str) -> int:
    "Source lines of a cell."
    return len(src.splitlines())


def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def chapter(path: str | Path) -> Chapter:
    "The chapter numbers of the notebook at `path`."
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    sizes, checked = [], 0
    for i, src in enumerate(code):
        if not any(EXPORT.match(ln.strip()) for ln in src.splitlines()):
            continue
        sizes.append(_lines(src))
        if i + 1 < len(code) and CHECK.search(code[i + 1]):
            checked += 1
    longest = max((_lines(s) for s in code), default=0)
    return Chapter(Path(path).stem, len(sizes), statistics.median(sizes) if sizes else 0.0,
                   max(sizes, default=0), longest, checked)  # fmt: skip


def table(paths) -> str:
    "The markdown table of the notebooks at `paths`."
    rows = ["| notebook | exported cells | median exported cell | longest exported cell | longest code cell "
            "| exported cells with a test right below |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p in paths:
        c = chapter(p)
        rows.append(f"| {c.name} | {c.exported} | {c.median:g} | {c.longest_exported} | {c.longest_code} "
                    f"| {c.checked} of {c.exported} |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    args = sys.argv[1:] or sorted(str(p) for p in Path("nbs").glob("*.ipynb"))
    print(table(args))
