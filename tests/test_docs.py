"""The documentation site: `make docs` (.ci/build_docs.py) builds it from the notebooks; Debian's Chromium, headless,
reads its pages from a local HTTP server on 127.0.0.1; the addresses the package cites exist in it."""

import ast
import html
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml

import intraday.config

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".ci" / "build_docs.py"
CHROMIUM = "/usr/bin/chromium"
DOC_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]


def build(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BUILD), "--root", str(root), *args], capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module")
def site() -> Path:
    "The project's site, built (or brought up to date: only notebooks changed since the last build are processed)."
    r = build(ROOT)
    assert r.returncode == 0, f"make docs failed:\n{r.stdout}\n{r.stderr}"
    return ROOT / "_docs"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    "The site over HTTP on 127.0.0.1 (a free port), as a reader's browser gets it."
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()
    t.join()


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    "Headless Debian Chromium on `url`, offline: no first-run, sync, component or background fetches."
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (.ci/run does it)"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    cmd += [f"--user-data-dir={tmp_path / 'chromium'}", *args, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def text_of(dom: str) -> str:
    "What a reader sees: the text of the page, without scripts and styles."
    p = _Text()
    p.feed(dom)
    return "".join(p.parts)


def squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def titles() -> list[str]:
    "Each notebook's title (its first `# ` heading), in reading order: index first, then by name; folders after."
    nbs = sorted((ROOT / "nbs").rglob("*.ipynb"), key=lambda p: (p.parent, "00" if p.name == "index.ipynb" else p.name))
    out = []
    for p in nbs:
        if any(part.startswith((".", "_")) for part in p.relative_to(ROOT / "nbs").parts):
            continue
        md = [c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"]
        out.append(next(line[2:].strip() for s in md for line in s.splitlines() if line.startswith("# ")))
    return out


def test_index_renders_with_every_notebook_in_order(served, tmp_path):
    dom = chromium(tmp_path, served + "index.html", "--dump-dom").stdout
    index = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    summary = next(line[2:] for c in index.cells for line in c.source.splitlines() if line.startswith("> "))
    text = squash(text_of(dom))
    assert squash(summary) in text
    # the sidebar lists every notebook by its title, in notebook order
    nav = [squash(text_of(a)) for a in re.findall(r'<a href="[^"]+" class="md-nav__link[^"]*">(.*?)</a>', dom, re.S)]
    expected = titles()
    assert len(expected) >= 10
    assert [t for t in nav if t in expected][: len(expected)] == expected


def test_api_page_shows_signature_and_docstring(served, tmp_path):
    f = intraday.config.timeframe_seconds
    dom = chromium(tmp_path, served + "config.html", "--dump-dom").stdout
    text = text_of(dom)
    assert f"def {f.__name__}(" in text
    assert "timeframe:str, # ccxt-style timeframe" in text  # the parameter's inline doc, as show_doc writes it
    assert squash(f.__doc__.replace("`", "")) in squash(text)
    assert 'id="timeframe_seconds"' in dom  # the anchor nbdev links to (config.html#timeframe_seconds)


def test_api_page_screenshot_is_not_blank(served, tmp_path):
    from PIL import Image

    png = tmp_path / "config.png"
    chromium(tmp_path, served + "config.html", "--window-size=1280,1600", f"--screenshot={png}", "--hide-scrollbars")
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 1600)
    px = img.load()
    w, h = img.size
    colours = {px[x, y] for x in range(0, w, 4) for y in range(0, h, 4)}
    inked = sum(px[x, y] != (255, 255, 255) for x in range(0, w, 4) for y in range(0, h, 4))
    assert len(colours) > 50, "a flat page: nothing rendered"
    assert inked > 0.02 * (w // 4) * (h // 4), "almost nothing drawn"
    # the header bar in mkdocs-material's indigo: its stylesheet loaded (read offline, from the site itself)
    r, g, b = px[w // 2, 10]
    assert b > 150 and r < 100, px[w // 2, 10]


def _docstring_urls() -> dict[str, str]:
    out = {}
    for py in sorted((ROOT / "intraday").glob("*.py")):
        doc = ast.get_docstring(ast.parse(py.read_text())) or ""
        if m := re.search(r"^Docs: (\S+)$", doc, re.M):
            out[py.stem] = m.group(1)
    return out


def test_module_docstring_urls_are_built_pages(site):
    "Every `Docs:` URL nbdev writes into a module docstring points into the published site, at a page built here."
    urls = _docstring_urls()
    exported = {
        m.group(1) for p in (ROOT / "nbs").glob("*.ipynb") if (m := re.search(r"#\| default_exp (\w+)", p.read_text()))
    }
    assert set(urls) == exported  # one per exported module: none missing, none stray
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner, name = repo.rstrip("/").split("/")[-2:]
    assert DOC_URL == f"https://{owner}.github.io/{name}/"  # where GitHub Pages publishes this repository
    site_url = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["site_url"]
    assert site_url == DOC_URL  # mkdocs publishes where pyproject (and so nbdev) says the docs are
    for mod, url in urls.items():
        assert url.startswith(DOC_URL), (mod, url)
        md = site / url[len(DOC_URL) :]
        assert md.exists() and md.with_suffix("").exists(), f"{mod}: {url} has no page in the built site"
        summary = ast.get_docstring(ast.parse((ROOT / "intraday" / f"{mod}.py").read_text())).split("\n\n")[0]
        assert squash(summary) in squash(md.read_text()), mod


def test_symbol_links_have_anchors(site):
    "nbdev's index of the package (`_modidx.py`, what other nbdev projects link by) names pages and anchors that exist."
    spec = importlib.util.spec_from_file_location("modidx", ROOT / "intraday" / "_modidx.py")
    modidx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modidx)
    assert modidx.d["settings"]["doc_host"] + modidx.d["settings"]["doc_baseurl"] + "/" == DOC_URL
    ids, checked = {}, 0
    for mod, syms in modidx.d["syms"].items():
        for sym, (loc, _) in syms.items():
            name = sym[len(mod) + 1 :]
            if "." in name or name.startswith("_"):  # methods and private names get no show_doc of their own
                continue
            page, anchor = loc.split("#")
            if page not in ids:
                ids[page] = set(re.findall(r'\bid="([^"]+)"', (site / page).read_text()))
            assert anchor in ids[page], f"{sym}: {loc} has no anchor"
            checked += 1
    assert checked >= 100


class _Refs(HTMLParser):
    "The href and src attributes of a page's real tags (not text that looks like one inside highlighted code)."

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("href", "src") and v is not None]


def _refs(text: str) -> list[str]:
    p = _Refs()
    p.feed(text)
    return p.refs


def test_local_links_resolve(site):
    "Every link, stylesheet and script a page names inside the site exists, and a link to an anchor finds it."
    ids = {p: set(re.findall(r'\bid="([^"]+)"', p.read_text())) for p in site.rglob("*.html")}
    broken = []
    for page in ids:
        if (
            page.name == "404.html"
        ):  # served for any missing path, it names its assets from the site's root (/intraday/)
            continue
        for ref in _refs(page.read_text()):
            if re.match(r"^(?:[a-z]+:|//|$)", ref):
                continue
            path, _, frag = html.unescape(ref).partition("#")
            target = (page.parent / path).resolve() if path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists() or (frag and target.suffix == ".html" and frag not in ids.get(target, ())):
                broken.append(f"{page.relative_to(site)}: {ref}")
    assert not broken, broken[:20]


NB = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "py"}}}


def _nb(path: Path, *cells: tuple[str, str]):
    cs = [{"cell_type": t, "id": f"c{i}", "metadata": {}, "source": s} for i, (t, s) in enumerate(cells)]
    for c in cs:
        if c["cell_type"] == "code":
            c.update(outputs=[], execution_count=None)
    path.write_text(json.dumps({**NB, "cells": cs}))


@pytest.fixture
def project(tmp_path) -> Path:
    "A small nbdev project of its own: an index and a module whose class names another in a string annotation."
    root = tmp_path / "proj"
    (root / "nbs").mkdir(parents=True)
    (root / "tiny").mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\n[project.urls]\nRepository = "https://github.com/o/tiny"\n'
        'Documentation = "https://o.github.io/tiny/"\n[tool.nbdev]\nlib_path = "tiny"\nnbs_path = "nbs"\n'
    )
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    _nb(root / "nbs" / "index.ipynb", ("markdown", "# tiny\n\n> A tiny project."))
    _nb(
        root / "nbs" / "00_core.ipynb",
        ("code", "#| default_exp core"),
        ("markdown", "# core\n\n> The core."),
        ("code", JOB),
        ("code", WATCHER),
    )
    return root


JOB = '#| export\nclass Job:\n    "A job."\n    def __init__(self, n: int = 1):  # how many\n        pass'
WATCHER = '#| export\nclass Watcher:\n    "Watches a `Job`."\n    def __init__(self, job: "Job"):\n        pass'


def test_signature_naming_a_later_class_is_fixed_in_the_notebook(project):
    """nbdev shows `Watcher` right below it, its string annotation as written (`job:Job`); one naming a class defined
    further down stops the build, naming the notebook and the name (no shim: the fix is to define `Job` first)."""
    r = build(project, "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    page = (project / "_docs" / "core.html").read_text()
    assert "defWatcher(job:Job):" in re.sub(r"\s", "", text_of(page))
    assert (project / "_docs" / "core.html.md").exists()
    _nb(
        project / "nbs" / "01_later.ipynb",
        ("code", "#| default_exp later"),
        ("markdown", "# later\n\n> Watcher first."),
        ("code", WATCHER),
        ("code", JOB),
    )
    r = build(project, "--workers", "1")
    assert r.returncode == 1
    failed = r.stderr.split("FAILED")[1]
    assert "nbs/01_later.ipynb" in failed and "NameError" in failed and "'Job'" in failed
    assert "nbs/00_core.ipynb" not in failed


def test_failing_notebook_is_named_and_fails_the_build(project):
    _nb(
        project / "nbs" / "01_bad.ipynb",
        ("code", "#| default_exp bad"),
        ("markdown", "# bad\n\n> Breaks."),
        ("code", "#| export\nLIMIT = undefined_setting * 2"),
    )
    _nb(  # a cell that mixes imports with code needing an earlier, unexported cell: runs its imports only
        project / "nbs" / "02_mixed.ipynb",
        ("code", "#| default_exp mixed"),
        ("markdown", "# mixed\n\n> Mixed."),
        ("code", "data = [1, 2]"),
        ("code", "import math\n\nmath.fsum(data)"),
        ("code", '#| export\ndef root(x: float) -> float:\n    "Square root."\n    return math.sqrt(x)'),
    )
    r = build(project, "--workers", "1")
    assert r.returncode == 1
    assert "nbs/01_bad.ipynb" in r.stderr and "NameError" in r.stderr and "undefined_setting" in r.stderr
    assert "nbs/02_mixed.ipynb" not in r.stderr.split("FAILED")[1]  # processed: only the bad one failed
    assert re.search(
        r"nbs/02_mixed.ipynb cell \d+ \(id c3, 'import math'\) FAILED when run alone \(NameError", r.stderr
    )
    assert not (project / "_docs" / "bad.html").exists()
