"""Build the documentation site from the notebooks, offline: `make docs` runs this; the site lands in `_docs/`.

Stock tools do the work: nbdev processes the notebooks (its own per-notebook step, `nbdev.serve_drv.main`, with a
`FilterDefaults` subclass, nbdev's documented way to change its processors), mkdocs-material with mkdocs-jupyter
renders them (`mkdocs.yml`: show_doc's input hidden by `remove_tag_config`, page titles from each page's h1),
nbconvert's `MarkdownExporter` writes each page's Markdown twin (`config.html.md`, the address nbdev writes into
the module docstrings). This file is the shim between them; each part says why no stock feature does it.

Why not nbdev's own `nbdev-docs` / `nbdev-proc-nbs` with Quarto (measured 2026-12-04, with pip, apt and npm):
PyPI's `quarto-cli` (1.10.19, latest) has no wheel for any release, only a 4.7 kB sdist whose setup.py downloads
`quarto-1.10.19-linux-amd64.tar.gz` from github.com while it builds (offline: "Name or service not known", the
install fails); Debian bookworm has no `quarto` package (pandoc 2.17 only); npm has no `quarto-cli` (`quarto` there
is an unrelated 0.0.0). And both nbdev commands start with `_ensure_quarto()`, which, with no `quarto` on PATH,
curls the .deb from quarto.org and runs `sudo dpkg -i`; they also write `nbs/_quarto.yml` and `nbs/sidebar.yml`.

1. nbdev processing into `_proc/` (same names as `nbs/`), only for notebooks whose text, module or this build
   changed. Not `nbdev.serve.proc_nbs` itself: it hard-codes `FilterDefaults` and stops at the first failing
   notebook; here every notebook is processed, each failure named by its file, cell and error, and the build
   exits non-zero. The filter differs from nbdev's in two processors (see `_filter`).
2. Pages in `_proc/_pages/`, named as nbdev names them (`00_config.ipynb` -> `config.ipynb`, so `config.html`:
   mkdocs names a page after its file, Quarto read nbdev's `output-file`), with the Markdown nbdev wrote for
   pandoc made readable by mkdocs-jupyter's Markdown (nbconvert's mistune): see `fix_markdown`.
3. `_proc/mkdocs.yml`: the project's `mkdocs.yml` plus the pages in notebook order (mkdocs alone sorts pages by
   file name, and nbdev's page names have lost the number prefixes). Then `mkdocs build`, the notebook stylesheet
   mkdocs-jupyter inlines in every page moved to one file, the Markdown twins, and nbdev's `llms.txt`.

Gone from this file, its cause fixed at the source instead: the patch of `fastcore.docments.signature` that let
show_doc render a string annotation naming a class defined later in the notebook (`trainer: "Trainer"`). No
notebook needs it (instrumented build, 2026-12-04: no NameError in 46 notebooks); one that does now stops the build
with nbdev's error naming the cell, and the fix is in the notebook: define the named class first.

Usage: python .ci/build_docs.py [--force] [--workers N] [--root PROJECT]
"""

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

_MIXED: list[str] = []  # per notebook, in a worker: cells mixing imports with other code (see `_filter`)


def _filter():
    "nbdev's processors, with one replaced and one added."
    # a and b (`for_mkdocs`), because mkdocs-jupyter reads a notebook otherwise than Quarto does:
    # a. the front matter nbdev makes of the notebook's `# title` / `> summary` (a raw YAML cell, which
    #    mkdocs-jupyter would print as text) becomes that heading and summary again, unlinked as on an nbdev site;
    #    mkdocs takes the page title from the heading.
    # b. nbdev marks show_doc cells `#| echo: false`, a Quarto option; mkdocs-jupyter hides inputs by cell tag
    #    (`remove_tag_config` in mkdocs.yml), so those cells get the tag `remove_input`.
    #    And the timings nbdev's shell records (`execution.total`, a float) go: nbformat's schema wants a string
    #    there, and mkdocs-jupyter (nbconvert) validates the notebook; Quarto does not.
    # c (`exec_show_docs_imports`). TEMPORARY, until no notebook mixes imports with other code in one cell (the
    #    build lists such cells: 18 in 12 notebooks on 2026-12-04, 7 of which fail when run alone). nbdev runs every
    #    cell holding an import to build the docs, out of the notebook's flow (cells it needs are not run), so a
    #    mixed cell that needs an earlier cell stops the build (nbdev's advice: imports in a cell of their own).
    #    When such a cell fails, and it is not exported and calls no show_doc, its imports alone run, with a
    #    warning. Delete this class once the build lists no such cell.
    import ast

    from fastcore.nbio import mk_cell
    from nbdev.process import Processor
    from nbdev.processors import FilterDefaults, exec_show_docs

    def imports(cell):
        return [t for t in cell.parsed_() or [] if isinstance(t, ast.Import | ast.ImportFrom)]

    class exec_show_docs_imports(exec_show_docs):
        def __call__(self, cell):
            imps, saved = imports(cell), (cell.get("outputs"), dict(cell.get("metadata", {})))
            exported = cell.directives_.keys() & {"export", "exports", "exporti"}
            mixed = 0 < len(imps) < len(cell.parsed_() or []) and not exported
            if mixed:
                _MIXED.append(f"cell {cell.idx_} (id {cell.get('id')}, {cell.source.splitlines()[0]!r})")
            try:
                return super().__call__(cell)
            except Exception as e:
                if not mixed or "show_doc" in cell.source or "exec_doc" in cell.directives_:
                    raise
                cell.outputs, cell.metadata = saved
                self.k.run("\n".join(ast.unparse(t) for t in imps))
                if self.k.exc is not None:
                    raise
                cause = e.__cause__ or e
                _MIXED[-1] += f" FAILED when run alone ({type(cause).__name__}: {cause}); ran its imports only"

    class for_mkdocs(Processor):
        def cell(self, cell):
            cell.metadata.pop("execution", None)
            if cell.pop("has_sd", False):
                cell.metadata["tags"] = [*cell.metadata.get("tags", []), "remove_input"]

        def end(self):
            fm, cells = getattr(self.nb, "frontmatter_", {}), self.nb.cells
            if fm and cells and cells[0].cell_type == "raw":
                summary = f"\n\n> {fm['description']}" if fm.get("description") else ""
                cells[0] = mk_cell(f"# {fm.get('title', '')}{summary}", "markdown")

    class Filter(FilterDefaults):
        def base_procs(self):
            return [exec_show_docs_imports if p is exec_show_docs else p for p in super().base_procs()] + [for_mkdocs]

    return Filter()


def _process(src: str, dst: str) -> tuple[str | None, list[str]]:
    "nbdev's processing of one notebook into `dst`: the error if it failed, and the mixed cells."
    import warnings

    from nbdev.serve_drv import main

    warnings.filterwarnings("ignore", message="Found cells containing imports and other code")  # listed instead
    _MIXED.clear()
    try:
        main((Path(src), Path(dst), _filter))
        return None, list(_MIXED)
    except Exception as e:  # noqa: BLE001 -- reported with the notebook's name, then the build fails
        return f"{type(e).__name__}: {e}", list(_MIXED)
    finally:
        os.environ.pop("IN_TEST", None)


def notebooks(nbs: Path) -> list[Path]:
    "The notebooks nbdev documents, in reading order: index first, then by name, folders after their parent."
    from nbdev.doclinks import nbglob

    return sorted(map(Path, nbglob(nbs)), key=lambda p: (p.parent, "00" if p.name.startswith("index.") else p.name))


def process_all(root: Path, nbs: Path, lib: Path, force: bool, workers: int) -> list[Path]:
    "Run nbdev's processing on the notebooks that changed (content hashes); report every failure, then stop."
    import nbdev

    proc, nbl = root / "_proc", notebooks(nbs)
    stamps = proc / ".stamps.json"
    modidx = lib / "_modidx.py"  # what nbdev links names by
    shared = b"".join([Path(__file__).read_bytes(), (root / "pyproject.toml").read_bytes(), nbdev.__version__.encode()])
    shared += modidx.read_bytes() if modidx.exists() else b""
    keys = {}
    for p in nbl:  # a notebook's text, its module (source links cite line numbers), the build
        m = re.search(r"#\|\s*default_exp\s+(\S+)", p.read_text(encoding="utf-8"))
        mod = lib / (m.group(1).replace(".", "/") + ".py") if m else lib / "-"
        extra = mod.read_bytes() if mod.exists() else b""
        keys[str(p.relative_to(nbs))] = hashlib.sha256(shared + p.read_bytes() + extra).hexdigest()
    old = json.loads(stamps.read_text()) if stamps.exists() and not force else {}
    todo = [p for p in nbl if old.get(r := str(p.relative_to(nbs))) != keys[r] or not (proc / r).exists()]
    print(f"docs: {len(nbl)} notebooks, {len(todo)} to process ({len(nbl) - len(todo)} unchanged)", flush=True)
    failures, mixed = {}, []
    if todo:
        # as nbdev: a fresh interpreter per worker (spawn), the worker's function from an importable module
        sys.path.insert(0, str(Path(__file__).parent))
        import build_docs as me

        with ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=get_context("spawn")) as ex:
            futs = {}
            for p in todo:
                (proc / p.relative_to(nbs)).parent.mkdir(parents=True, exist_ok=True)
                futs[p] = ex.submit(me._process, str(p), str(proc / p.relative_to(nbs)))
            for p, f in futs.items():
                rel = str(p.relative_to(nbs))
                err, cells = f.result()
                mixed += [f"{nbs.name}/{rel} {c}" for c in cells]
                if err is None:
                    old[rel] = keys[rel]
                else:
                    failures[rel] = err
                    (proc / rel).unlink(missing_ok=True)
    stamps.write_text(json.dumps({k: v for k, v in old.items() if k in keys}, indent=1))
    if mixed:
        print(
            f"docs: warning: {len(mixed)} cell(s) mix imports with other code; nbdev runs them in full, out of the"
            " notebook's flow, to build the docs. Move their imports into a cell of their own:\n  "
            + "\n  ".join(mixed),
            file=sys.stderr,
        )
    if failures:
        print(f"docs: FAILED: nbdev could not process {len(failures)} notebook(s):", file=sys.stderr)
        for rel, err in failures.items():
            print(f"\n--- {nbs.name}/{rel}\n{err.strip()}", file=sys.stderr)
        sys.exit(1)
    return nbl


_HEADING = re.compile(r"^#{1,6} +(.+?)\s*$", re.M)
_SHOWN = re.compile(r"^#{1,6} +([\w.]+)\s*$", re.M)  # the heading show_doc writes for a symbol
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_PAGE_LINK = re.compile(r"\]\(((?:\.\./)*)([\w/.-]+\.html)#([^)\s]+)\)")  # ](../page.html#anchor)


def _slug(text: str) -> str:
    "The id mkdocs-jupyter gives a heading."
    from mkdocs_jupyter.utils import slugify

    return slugify(text)


def _src(s) -> str:
    return "".join(s) if isinstance(s, list) else s


def _markdowns(nb: dict):
    "Each Markdown text of a page, with a setter: markdown cells and show_doc outputs."
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            yield _src(c["source"]), lambda md, c=c: c.update(source=md)
        for o in c.get("outputs", []):
            if "text/markdown" in o.get("data", {}):
                yield _src(o["data"]["text/markdown"]), lambda md, d=o["data"]: d.update({"text/markdown": md})


def anchors(nb: dict) -> set[str]:
    "A page's anchors: mkdocs-jupyter's id of each heading, and nbdev's (name.lower()) of each symbol shown."
    found = set()
    for md, _ in _markdowns(nb):
        found |= {_slug(_LINK.sub(r"\1", h)) for h in _HEADING.findall(md)} | {n.lower() for n in _SHOWN.findall(md)}
    return found


def fix_markdown(md: str, up: str, doc_root: str, known: dict[str, set[str]]) -> str:
    "nbdev's Markdown, written for pandoc, as mkdocs-jupyter's Markdown (nbconvert's mistune) reads it."

    def page_link(m):
        # nbdev links methods and private names to anchors only a show_doc of their own would make (Quarto leaves
        # them dangling): the class's anchor then, else the page
        have, frag = known.get(m.group(2)) if m.group(1) == up else None, m.group(3)
        if have is None or frag in have:
            return m.group(0)
        frag = frag.rsplit(".", 1)[0] if frag.rsplit(".", 1)[0] in have else ""
        return f"]({m.group(1)}{m.group(2)}{'#' + frag if frag else ''})"

    def heading(m):
        # mkdocs-jupyter reads the table of contents from the Markdown with code spans cut out: "## The `X`" would
        # list as "The", under an id the page does not have; <code> survives that and renders the same
        h = _LINK.sub(r"\1", m.group(0))
        return re.sub(r"`([^`]+)`", lambda c: f"<code>{html.escape(c.group(1))}</code>", h)

    # show_doc's `[source](url){target="_blank" style=...}`: pandoc's link attributes, which mistune would print
    md = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}", r'<a href="\2" \3>\1</a>', md)
    # nbdev links symbols by their published address: relative, the site (read locally too) links to itself
    md = re.sub(re.escape(doc_root) + r"(?=[\w#])", up, md)
    md = _HEADING.sub(heading, md)
    md = _PAGE_LINK.sub(page_link, md)
    # nbdev links a symbol as page.html#name.lower(), dots kept as pandoc keeps them; mkdocs-jupyter's ids drop them
    return _SHOWN.sub(
        lambda m: m.group(0) if "." not in m.group(1) else f'<a id="{m.group(1).lower()}"></a>\n\n{m.group(0)}', md
    )


def write_pages(root: Path, nbl: list[Path], nbs: Path, doc_root: str) -> list[Path]:
    "All pages under _proc/_pages, named as nbdev publishes them (rewritten each build: cheap), in reading order."
    from nbdev.config import nbpath2html

    procs = {p: json.loads((root / "_proc" / p.relative_to(nbs)).read_text(encoding="utf-8")) for p in nbl}
    dests = {p: nbpath2html(p.relative_to(nbs)).with_suffix(".ipynb") for p in nbl}
    if len(set(dests.values())) < len(dests):
        sys.exit(f"docs: FAILED: two notebooks would be published under one name: {sorted(map(str, dests.values()))}")
    known = {dests[p].with_suffix(".html").as_posix(): anchors(nb) for p, nb in procs.items()}
    pages = root / "_proc" / "_pages"
    shutil.rmtree(pages, ignore_errors=True)
    for p, nb in procs.items():
        up = "../" * (len(dests[p].parts) - 1)
        for md, put in list(_markdowns(nb)):
            put(fix_markdown(md, up, doc_root, known))
        (pages / dests[p]).parent.mkdir(parents=True, exist_ok=True)
        (pages / dests[p]).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    if (nbs / "images").is_dir():  # pictures the notebooks show as images/x.png: beside the pages, as in nbs/
        shutil.copytree(nbs / "images", pages / "images")
    return [dests[p] for p in nbl]


def nav(pages: list[Path]) -> list:
    "mkdocs nav: top-level pages in notebook order, each folder a section (named after it) holding its pages."
    res, sections = [], {}
    for rel in pages:
        if len(rel.parts) == 1:
            res.append(rel.as_posix())
        else:
            if rel.parts[0] not in sections:
                res.append({rel.parts[0]: sections.setdefault(rel.parts[0], [])})
            sections[rel.parts[0]].append(rel.as_posix())
    return res


def markdown_twins(pages_dir: Path, site: Path, pages: list[Path]):
    "Each page as Markdown beside its HTML (`config.html.md`), what the module docstrings' `Docs:` URLs cite."
    # nbdev has Quarto write these; mkdocs-jupyter writes HTML only
    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    cfg = Config()
    cfg.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    cfg.MarkdownExporter.preprocessors = ["nbconvert.preprocessors.TagRemovePreprocessor"]
    exporter = MarkdownExporter(config=cfg)
    for rel in pages:
        (site / rel.with_suffix(".html.md")).write_text(exporter.from_filename(str(pages_dir / rel))[0], "utf-8")


def shared_styles(site: Path):
    "mkdocs-jupyter inlines its notebook stylesheet (0.6 MB) in every page, with no option to link it: one file."
    css = site / "assets" / "stylesheets"
    for page in site.rglob("*.html"):
        up = "../" * (len(page.relative_to(site).parts) - 1)

        def link(m, up=up):
            if len(m.group(1)) < 2000:  # small ones stay where they are
                return m.group(0)
            name = f"notebook-{hashlib.sha256(m.group(1).encode()).hexdigest()[:12]}.css"
            if not (css / name).exists():
                (css / name).write_text(m.group(1), encoding="utf-8")
            return f'<link rel="stylesheet" href="{up}assets/stylesheets/{name}">'

        text = page.read_text(encoding="utf-8")
        if (new := re.sub(r"<style[^>]*>(.*?)</style>", link, text, flags=re.S)) != text:
            page.write_text(new, encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="process every notebook again, ignoring _proc/")
    ap.add_argument("--workers", type=int, default=2, help="notebooks processed in parallel")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="project folder")
    a = ap.parse_args()
    root = a.root.resolve()
    os.chdir(root)  # nbdev reads pyproject.toml from the working directory
    from nbdev.config import get_config

    cfg = get_config()
    nbl = process_all(root, cfg.nbs_path, cfg.lib_path, a.force, a.workers)
    pages = write_pages(root, nbl, cfg.nbs_path, f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl.rstrip('/')}/")
    gen = {"INHERIT": "../mkdocs.yml", "docs_dir": "_pages", "site_dir": "../_docs", "nav": nav(pages)}
    (root / "_proc" / "mkdocs.yml").write_text(
        "# written by .ci/build_docs.py: the project's mkdocs.yml plus the pages in notebook order\n"
        + yaml.safe_dump(gen, sort_keys=False, allow_unicode=True)
    )
    mk = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(root / "_proc" / "mkdocs.yml")]
    if subprocess.run(mk, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}).returncode:
        sys.exit("docs: FAILED: mkdocs could not render the pages (its error is above)")
    shared_styles(root / "_docs")
    markdown_twins(root / "_proc" / "_pages", root / "_docs", pages)
    if (llms := cfg.nbs_path / "llms.txt").exists():  # nbdev-export's index of the modules, for LLM tools
        shutil.copy(llms, root / "_docs" / "llms.txt")
    print(f"docs: {len(pages)} pages in {root / '_docs'}/; read it: python -m http.server -d _docs -b 127.0.0.1 8000")


if __name__ == "__main__":
    main()
