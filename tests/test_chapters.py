"The chapter bar (issues 14 and 25) over every notebook: small exported cells, most of them checked right below."

import importlib.util

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("chapters", ROOT / ".ci" / "chapters.py")
chapters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chapters)

NOTEBOOKS = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))  # every notebook (the job notebook: nbs/jobs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_as_chapters(name):
    c = chapters.chapter(ROOT / "nbs" / f"{name}.ipynb")
    if c.exported == 0:  # prose: the index and the guides
        assert c.longest_code <= 10, c
        return
    assert c.median < 25, c  # median exported cell under 25 lines
    assert c.longest_exported < 80, c  # the longest under 80
    assert c.checked * 3 >= 2 * c.exported, c  # two thirds followed by a check


def test_every_notebook_is_a_chapter_or_prose():
    assert len(NOTEBOOKS) >= 40 and "13_live" in NOTEBOOKS and "95_guide_operations" in NOTEBOOKS


def test_the_table_counts_what_it_says(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("#| export\ndef f():\n    return 1"),
        nbformat.v4.new_markdown_cell("why"),
        nbformat.v4.new_code_cell("test_eq(f(), 1)"),
        nbformat.v4.new_code_cell("#| export\ng = 2"),
        nbformat.v4.new_code_cell("g"),
        nbformat.v4.new_code_cell("#| export\nh = 3\n\n\n"),
    ]
    nbformat.write(nb, tmp_path / "x.ipynb")
    c = chapters.chapter(tmp_path / "x.ipynb")
    assert (c.exported, c.median, c.longest_exported, c.checked) == (3, 3, 4, 1)  # lines as written, blanks too
    assert "| x | 3 | 3 | 4 | 4 | 1 of 3 |" in chapters.table([tmp_path / "x.ipynb"])
