"""Build the documentation site from the notebooks, offline: `make docs` runs this; the site lands in `_docs/`.

1. nbdev processes every notebook under `nbs/` (the same per-notebook step `nbdev-proc-nbs` runs:
   `nbdev.serve_drv.main` with `FilterDefaults`): directives applied (`#| hide`, `#| export`, ...), exported
   symbols documented by `show_doc`, backticked names linked. The result lands in `_proc/` (same names as `nbs/`);
   only notebooks whose text, module or build changed are processed again. Two changes to nbdev's way, both
   general causes of a stopped build: a signature naming a later class (`trainer: "Trainer"`) is shown as
   written; a cell mixing imports with code that fails out of its notebook's flow runs its imports only (warned).
2. A small pass turns what Quarto would read (front matter, `#| echo: false`, pandoc link attributes) into what
   mkdocs-jupyter reads, names the pages as nbdev does (`00_config.ipynb` -> `config.html`) in `_proc/_pages/`,
   and writes `_proc/mkdocs.yml`: the project's `mkdocs.yml` plus the pages in notebook order.
3. mkdocs-material with mkdocs-jupyter renders the pages into `_docs/` (skipped when nothing changed); the
   notebook CSS it inlines in every page moves to one shared stylesheet; each page also gets its Markdown twin
   `config.html.md`, the address nbdev writes into each module's docstring (`Docs: .../config.html.md`).

Why not `nbdev-proc-nbs` itself: it downloads Quarto when Quarto is absent, writes `nbs/_quarto.yml` and
`nbs/sidebar.yml`, and stops at the first notebook that fails. Here every notebook is processed, each failure
is reported with its notebook, cell and error, and the build exits non-zero.

Usage: python .ci/build_docs.py [--force] [--workers N] [--root PROJECT]
"""

import argparse
import hashlib
import html
import inspect
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


class Layout:
    "Where a project's docs build reads and writes, from its root (the folder of pyproject.toml and mkdocs.yml)."

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.proc = self.root / "_proc"  # nbdev's processed notebooks (nbdev's own name for the folder)
        self.pages = self.proc / "_pages"  # mkdocs' docs_dir: the pages, named as nbdev names them
        self.site = self.root / "_docs"  # the built site (nbdev's doc_path)
        self.stamps = self.proc / ".stamps.json"


def _lenient_signatures():
    "Let `show_doc` document a signature whose string annotation names something defined later in the notebook."
    # nbdev puts `show_doc(X)` right below the cell defining X, and fastcore renders it with
    # `inspect.signature(X, eval_str=True)`: an annotation such as `trainer: "Trainer"` raises NameError while
    # `Trainer` is defined further down. Keep such an annotation as written instead (what the source says).
    import inspect

    import fastcore.docments

    strict = inspect.signature

    def signature(obj, *args, eval_str=False, **kwargs):
        try:
            return strict(obj, *args, eval_str=eval_str, **kwargs)
        except NameError:
            return strict(obj, *args, eval_str=False, **kwargs)

    fastcore.docments.signature = signature


_WARNINGS: list[str] = []  # collected in a worker while it processes one notebook
_MIXED: list[int] = []  # cells that hold imports and other code (nbdev warns about each, with its source)


def _filter():
    "nbdev's processors, with one change to how `exec_show_docs` treats a cell holding imports and other code."
    # nbdev runs a code cell for the docs when it is exported, calls show_doc, or contains an import; a cell that
    # mixes imports with demo code is then run in full, outside its notebook's flow (the cells it needs are not
    # run), and stops the build (nbdev's FAQ: keep imports in their own cell). Such a cell that fails here runs
    # its imports alone, with a warning naming it: what the docs need from it is the names it imports.
    import ast

    from nbdev.processors import FilterDefaults, exec_show_docs

    def _mixed(cell):
        trees = cell.parsed_() or []
        imps = sum(isinstance(t, ast.Import | ast.ImportFrom) for t in trees)
        return 0 < imps < len(trees) and not cell.directives_.keys() & {"export", "exports", "exporti"}

    class exec_show_docs_imports(exec_show_docs):
        def __call__(self, cell):
            outputs, meta = cell.get("outputs"), dict(cell.get("metadata", {}))
            if cell.cell_type == "code" and _mixed(cell):
                _MIXED.append(cell.idx_)
            try:
                return super().__call__(cell)
            except Exception as e:
                trees = cell.parsed_() or []
                by_directive = cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}
                imports = [t for t in trees if isinstance(t, ast.Import | ast.ImportFrom)]
                if by_directive or "show_doc" in cell.source or not imports or len(imports) == len(trees):
                    raise
                cell.outputs, cell.metadata = outputs, meta
                self.k.run("\n".join(ast.unparse(t) for t in imports))
                if self.k.exc is not None:
                    raise
                cause = e.__cause__ or e
                _WARNINGS.append(
                    f"cell {cell.idx_} ({cell.source.splitlines()[0]!r}...) mixes imports with code and failed when"
                    f" run alone ({type(cause).__name__}: {cause}); ran its imports only. Keep imports in a cell of"
                    " their own (nbdev runs an import cell in full to build the docs)."
                )

    class Filter(FilterDefaults):
        def base_procs(self):
            return [exec_show_docs_imports if p is exec_show_docs else p for p in super().base_procs()]

    return Filter


def _process(src: str, dst: str) -> tuple[str | None, list[str], list[int], float]:
    "nbdev's processing of one notebook into `dst`: error text if it failed, warnings, cells mixing imports, seconds."
    import warnings

    from nbdev.serve_drv import main

    warnings.filterwarnings("ignore", message="Found cells containing imports and other code")  # counted below
    _WARNINGS.clear()
    _MIXED.clear()
    err, t0 = None, time.perf_counter()
    try:
        main((Path(src), Path(dst), _filter()))
    except Exception as e:  # noqa: BLE001 -- reported with the notebook's name, then the build fails
        err = f"{type(e).__name__}: {e}"
    finally:
        os.environ.pop("IN_TEST", None)
    return err, list(_WARNINGS), list(_MIXED), time.perf_counter() - t0


def notebooks(nbs: Path) -> list[Path]:
    "The notebooks nbdev documents, in reading order: index first, then by name, folders after their parent."
    from nbdev.doclinks import nbglob

    found = [Path(p) for p in nbglob(nbs)]
    return sorted(found, key=lambda p: (p.parent, "00" if p.name.startswith("index.") else p.name))


def page_path(rel: Path) -> Path:
    "Where nbdev publishes notebook `rel` (relative to nbs/), as a page source: `00_config.ipynb` -> `config.ipynb`."
    from nbdev.config import nbpath2html

    return nbpath2html(rel).with_suffix(".ipynb")


def _key(nb: Path, lib: Path, shared: bytes) -> str:
    "What a processed notebook depends on: its text, its module (source links cite line numbers), the build."
    h = hashlib.sha256(shared + nb.read_bytes())
    m = re.search(r"#\|\s*default_exp\s+(\S+)", nb.read_text(encoding="utf-8"))
    mod = lib / (m.group(1).replace(".", "/") + ".py") if m else None
    if mod is not None and mod.exists():
        h.update(mod.read_bytes())
    return h.hexdigest()


def process_all(lay: Layout, nbs: Path, lib: Path, force: bool, workers: int) -> list[Path]:
    "Run nbdev's processing on the notebooks that changed; report every failure, then stop."
    import fastcore
    import nbdev

    shared = b"".join(
        [
            (lay.root / "pyproject.toml").read_bytes(),
            (lib / "_modidx.py").read_bytes() if (lib / "_modidx.py").exists() else b"",
            "".join(inspect.getsource(f) for f in (_lenient_signatures, _filter, _process)).encode(),
            f"nbdev {nbdev.__version__} fastcore {fastcore.__version__}".encode(),
        ]
    )
    nbl = notebooks(nbs)
    rel = {p: str(p.relative_to(nbs)) for p in nbl}
    old = json.loads(lay.stamps.read_text()) if lay.stamps.exists() and not force else {}
    keys = {rel[p]: _key(p, lib, shared) for p in nbl}
    todo = [p for p in nbl if old.get(rel[p]) != keys[rel[p]] or not (lay.proc / rel[p]).exists()]
    print(f"docs: {len(nbl)} notebooks, {len(todo)} to process ({len(nbl) - len(todo)} unchanged)", flush=True)
    failures, notes, took = {}, [], {}
    if todo:
        for p in todo:
            (lay.proc / rel[p]).parent.mkdir(parents=True, exist_ok=True)
        # as nbdev: a fresh interpreter per worker (spawn), and the worker's functions taken from an importable
        # module, since nbdev's IPython shell replaces `__main__` in the worker
        sys.path.insert(0, str(Path(__file__).parent))
        import build_docs as me

        n = max(1, min(workers, len(todo)))
        with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=me._lenient_signatures) as ex:
            futs = {p: ex.submit(me._process, str(p), str(lay.proc / rel[p])) for p in todo}
            for p, f in futs.items():
                err, warns, mixed, took[rel[p]] = f.result()
                if mixed:
                    notes.append(f"{rel[p]} ({', '.join(map(str, mixed))})")
                for w in warns:
                    print(f"docs: warning: {nbs.name}/{rel[p]}: {w}", file=sys.stderr)
                if err is not None:
                    failures[p] = err
                    (lay.proc / rel[p]).unlink(missing_ok=True)
                else:
                    old[rel[p]] = keys[rel[p]]
    for q in lay.proc.rglob("*.ipynb"):  # notebooks gone from nbs/ leave _proc/ too
        if q.relative_to(lay.proc).parts[0] != lay.pages.name and str(q.relative_to(lay.proc)) not in keys:
            q.unlink()
    if took:
        slow = sorted(took.items(), key=lambda kv: -kv[1])[:3]
        print(
            f"docs: nbdev took {sum(took.values()):.1f} s over {len(took)} notebooks; longest: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in slow)
        )
    if notes:
        print(
            "docs: note: cells that mix imports with other code, which nbdev runs in full (out of the notebook's"
            f" flow) to build the docs; nbdev's advice is imports in a cell of their own: {'; '.join(notes)}"
        )
    lay.stamps.write_text(json.dumps({k: v for k, v in old.items() if k in keys}, indent=1))
    if failures:
        print(f"docs: FAILED: nbdev could not process {len(failures)} notebook(s):", file=sys.stderr)
        for p, err in failures.items():
            print(f"\n--- {nbs.name}/{rel[p]}\n{err.strip()}", file=sys.stderr)
        sys.exit(1)
    return nbl


_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")  # a Quarto cell option: `#| echo: false`
_ATTR_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}")  # pandoc's [text](url){key="value" ...}
_SHOWN = re.compile(r"^(#{1,6}) +([\w.]+)\s*$", re.M)  # the heading show_doc writes for a symbol
_MD_HEADING = re.compile(r"^#{1,6} +(.+?)\s*$", re.M)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_PAGE_LINK = re.compile(r"\]\(((?:\.\./)*)([\w/.-]+\.html)#([^)\s]+)\)")  # ](../page.html#anchor)


def _slug(text: str) -> str:
    "The id mkdocs-jupyter gives a heading."
    from mkdocs_jupyter.utils import slugify

    return slugify(text)


def _src(c: dict) -> str:
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def _md_outputs(c: dict):
    for o in c.get("outputs", []):
        if "text/markdown" in o.get("data", {}):
            yield o


def anchors(nb: dict) -> set[str]:
    "The anchors a page will have: nbdev's for each symbol it shows (name.lower()), mkdocs-jupyter's per heading."
    found = set()
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            found |= {_slug(_LINK.sub(r"\1", h)) for h in _MD_HEADING.findall(_src(c))}
        for o in _md_outputs(c):
            md = _src({"source": o["data"]["text/markdown"]})
            found |= {n.lower() for _, n in _SHOWN.findall(md)} | {_slug(n) for _, n in _SHOWN.findall(md)}
    return found


def _heading(h: str) -> str:
    "A heading without links (nbdev links the names in it), its code spans as HTML."
    # mkdocs-jupyter reads the table of contents from the Markdown with code spans cut out (they may hold `#`):
    # `## The `X`` would list as "The", its anchor not the page's. <code> survives that and renders the same.
    return re.sub(r"`([^`]+)`", lambda m: f"<code>{html.escape(m.group(1))}</code>", _LINK.sub(r"\1", h))


class Pages:
    "Processed notebooks to mkdocs-jupyter pages: what Quarto would have read, in terms mkdocs-jupyter reads."

    def __init__(self, doc_root: str, known: dict[str, set[str]]):
        self.doc_root, self.known = doc_root, known  # page path ('config.html') -> its anchors

    def fix_markdown(self, md: str, up: str, shown: bool = False) -> str:
        "Pandoc attribute links to HTML links; links into the published site made relative; anchors that exist."

        def attr_link(m):
            attrs = " ".join(re.findall(r'[\w-]+="[^"]*"', m.group(3)))
            return f'<a href="{m.group(2)}" {attrs}>{m.group(1)}</a>'

        def page_link(m):
            # nbdev links `Class.method` and private names to anchors only a show_doc of their own would make:
            # the class's anchor then, or the page. (Its links start at the site's root: `up` + page.)
            have, frag = self.known.get(m.group(2)) if m.group(1) == up else None, m.group(3)
            if have is None or frag in have:
                return m.group(0)
            frag = frag.rsplit(".", 1)[0] if "." in frag and frag.rsplit(".", 1)[0] in have else ""
            return f"]({m.group(1)}{m.group(2)}{'#' + frag if frag else ''})"

        md = _ATTR_LINK.sub(attr_link, md)
        md = re.sub(re.escape(self.doc_root) + r"(?=[\w#])", up, md)
        md = _MD_HEADING.sub(lambda m: _heading(m.group(0)), md)
        md = _PAGE_LINK.sub(page_link, md)
        if shown:  # nbdev links a symbol as page.html#name.lower() (dots kept); mkdocs-jupyter drops the dots
            md = _SHOWN.sub(
                lambda m: (
                    m.group(0)
                    if _slug(m.group(2)) == m.group(2).lower()
                    else f'<a id="{m.group(2).lower()}"></a>\n\n{m.group(0)}'
                ),
                md,
            )
        return md

    def page(self, nb: dict, up: str, summary: str | None = None) -> tuple[dict, str]:
        "A processed notebook as a page: front matter shown as title and summary, Quarto cell options applied."
        title, cells = None, []
        for c in nb["cells"]:
            src = _src(c)
            if c["cell_type"] == "raw" and src.startswith("---") and title is None:
                fm = yaml.safe_load(src.strip().strip("-")) or {}
                title = str(fm.get("title", ""))
                desc = summary or fm.get("description")
                head = f"# {title}" + (f"\n\n> {desc}" if desc else "")
                c = {"cell_type": "markdown", "id": "front-matter", "metadata": {}, "source": head}
            elif c["cell_type"] == "code":
                lines = src.splitlines()
                opts = {}
                while lines and (m := _OPTION.match(lines[0])):
                    opts[m.group(1)] = m.group(2).lower()
                    lines.pop(0)
                if opts.get("include") == "false":
                    continue
                c = {**c, "source": "\n".join(lines)}
                if opts.get("echo") == "false":
                    c["metadata"] = {"tags": [*c.get("metadata", {}).get("tags", []), "remove_input"]}
                if opts.get("output") == "false":
                    c["outputs"] = []
                for o in _md_outputs(c):
                    md = _src({"source": o["data"]["text/markdown"]})
                    o["data"]["text/markdown"] = self.fix_markdown(md, up, shown="show_doc(" in src)
            elif c["cell_type"] == "markdown":
                c = {**c, "source": self.fix_markdown(src, up)}
            c = {k: v for k, v in c.items() if k in _CELL_KEYS[c["cell_type"]]}
            c["metadata"] = {k: v for k, v in c.get("metadata", {}).items() if k == "tags"}  # not nbdev's timings
            cells.append(c)
        return {**nb, "cells": cells}, title or ""


# what nbformat allows in a cell (nbdev's processing leaves working attributes such as `has_sd` behind)
_CELL_KEYS = {
    "code": {"cell_type", "id", "metadata", "source", "outputs", "execution_count"},
    "markdown": {"cell_type", "id", "metadata", "source", "attachments"},
    "raw": {"cell_type", "id", "metadata", "source", "attachments"},
}


def summary(nb: Path) -> str | None:
    "The notebook's `> summary` under its title, every line of it (nbdev's front matter keeps the first line only)."
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        src = _src(c)
        if c["cell_type"] == "markdown" and src.lstrip().startswith("# "):
            lines = [line[1:].strip() for line in src.splitlines() if line.startswith(">")]
            return " ".join(lines) or None
    return None


def write_pages(lay: Layout, nbl: list[Path], nbs: Path, doc_root: str) -> list[tuple[str, Path]]:
    "All pages under _proc/_pages (rewritten each build: cheap), and their titles, in reading order."
    import shutil

    procs = {p: json.loads((lay.proc / p.relative_to(nbs)).read_text(encoding="utf-8")) for p in nbl}
    dests = {p: page_path(p.relative_to(nbs)) for p in nbl}
    for d in {d for d in dests.values() if list(dests.values()).count(d) > 1}:
        same = ", ".join(str(p.relative_to(nbs)) for p in nbl if dests[p] == d)
        sys.exit(f"docs: FAILED: {same} would all be published as {d.with_suffix('.html')}: rename one")
    pages = Pages(doc_root, {dests[p].with_suffix(".html").as_posix(): anchors(nb) for p, nb in procs.items()})
    shutil.rmtree(lay.pages, ignore_errors=True)
    out = []
    for p in nbl:
        dst = lay.pages / dests[p]
        dst.parent.mkdir(parents=True, exist_ok=True)
        page, title = pages.page(procs[p], "../" * (len(dests[p].parts) - 1), summary(p))
        dst.write_text(json.dumps(page, indent=1), encoding="utf-8")
        out.append((title or dst.stem, dests[p]))
    if (nbs / "images").is_dir():  # pictures the notebooks show as images/x.png: beside the pages, as in nbs/
        shutil.copytree(nbs / "images", lay.pages / "images")
    return out


def nav(pages: list[tuple[str, Path]]) -> list:
    "mkdocs nav: top-level pages in order, each folder a section (named after it) holding its pages."
    res, sections = [], {}
    for title, rel in pages:
        if len(rel.parts) == 1:
            res.append({title: rel.as_posix()})
        else:
            if rel.parts[0] not in sections:
                sections[rel.parts[0]] = []
                res.append({rel.parts[0]: sections[rel.parts[0]]})
            sections[rel.parts[0]].append({title: rel.as_posix()})
    return res


def markdown_twins(lay: Layout, pages: list[tuple[str, Path]]):
    "Each page as Markdown next to its HTML (`config.html.md`): what the module docstrings' `Docs:` URLs cite."
    from nbconvert import MarkdownExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    from traitlets.config import Config

    cfg = Config()
    cfg.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    cfg.MarkdownExporter.preprocessors = [TagRemovePreprocessor]
    exporter = MarkdownExporter(config=cfg)
    for _, rel in pages:
        body, _ = exporter.from_filename(str(lay.pages / rel))
        dst = lay.site / rel.with_suffix(".html.md")
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(dst)


_INLINE_STYLE = re.compile(r"<style([^>]*)>(.*?)</style>", re.S)


def shared_styles(lay: Layout):
    "mkdocs-jupyter inlines the same 0.6 MB of notebook CSS in every page: one stylesheet instead, linked."
    css = lay.site / "assets" / "stylesheets"
    for page in lay.site.rglob("*.html"):
        up = "../" * (len(page.relative_to(lay.site).parts) - 1)

        def link(m, up=up):
            if len(m.group(2)) < 2000:  # small ones stay where they are
                return m.group(0)
            name = f"notebook-{hashlib.sha256(m.group(2).encode()).hexdigest()[:12]}.css"
            if not (css / name).exists():
                (css / name).write_text(m.group(2), encoding="utf-8")
            return f'<link rel="stylesheet" href="{up}assets/stylesheets/{name}">'

        text = page.read_text(encoding="utf-8")
        # and the MathJax loader it writes with an empty address (mkdocs-jupyter's default: no MathJax URL)
        new = re.sub(r'<script src="">\s*</script>', "", _INLINE_STYLE.sub(link, text))
        if new != text:
            page.write_text(new, encoding="utf-8")


def render_key(lay: Layout, pages: list[tuple[str, Path]]) -> str:
    "What the rendered site depends on: the pages, both mkdocs configs, this script, the renderers' versions."
    from importlib.metadata import version

    from nbdev.config import get_config

    h = hashlib.sha256(Path(__file__).read_bytes())
    llms = get_config().nbs_path / "llms.txt"
    for f in [lay.root / "mkdocs.yml", lay.proc / "mkdocs.yml", *(lay.pages / rel for _, rel in pages), llms]:
        h.update(f.read_bytes() if f.exists() else b"")
    h.update(" ".join(version(p) for p in ("mkdocs", "mkdocs-material", "mkdocs-jupyter", "nbconvert")).encode())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="process every notebook again, ignoring _proc/")
    ap.add_argument("--workers", type=int, default=2, help="notebooks processed in parallel")
    ap.add_argument("--root", type=Path, default=REPO, help="project folder (pyproject.toml, mkdocs.yml, nbs/)")
    a = ap.parse_args()
    lay = Layout(a.root)
    os.chdir(lay.root)  # nbdev reads pyproject.toml from the working directory
    from nbdev.config import get_config

    cfg = get_config()
    t0 = time.perf_counter()
    nbl = process_all(lay, cfg.nbs_path, cfg.lib_path, a.force, a.workers)
    t1 = time.perf_counter()
    doc_root = f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl.rstrip('/')}/"
    pages = write_pages(lay, nbl, cfg.nbs_path, doc_root)
    gen = {"INHERIT": "../mkdocs.yml", "docs_dir": lay.pages.name, "site_dir": "../" + lay.site.name, "nav": nav(pages)}
    (lay.proc / "mkdocs.yml").write_text(
        "# written by .ci/build_docs.py: the project's mkdocs.yml plus the pages in notebook order\n"
        + yaml.safe_dump(gen, sort_keys=False, allow_unicode=True)
    )
    stamp, key = lay.site / ".built", render_key(lay, pages)
    if stamp.exists() and stamp.read_text() == key:
        print(f"docs: {lay.site}/ is up to date")
        return
    stamp.unlink(missing_ok=True)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mk = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(lay.proc / "mkdocs.yml")]
    if subprocess.run(mk, env=env).returncode:
        sys.exit("docs: FAILED: mkdocs could not render the pages (its error is above)")
    shared_styles(lay)
    markdown_twins(lay, pages)
    if (llms := cfg.nbs_path / "llms.txt").exists():  # nbdev-export's index of the modules, for LLM tools
        (lay.site / "llms.txt").write_bytes(llms.read_bytes())
    stamp.write_text(key)
    t2 = time.perf_counter()
    print(
        f"docs: {len(pages)} pages in {lay.site}/ (nbdev {t1 - t0:.1f} s, render {t2 - t1:.1f} s);"
        f" read it: python -m http.server -d {lay.site} -b 127.0.0.1 8000"
    )


if __name__ == "__main__":
    main()
