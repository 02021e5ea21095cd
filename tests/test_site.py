"""The course's website, built from the stored outputs and read in a real headless browser.

`python -m ragtutor.tools.site` builds it (Jupyter Book 1, requirements-site.txt); Debian's
`chromium` reads it. Without either, these tests skip with a message — unless
RAGTUTOR_REQUIRE_SITE=1 (set by .ci/run), where a missing tool fails them.

Every page is opened from disk (file://), as a learner without a network opens it. The browser is
driven over its DevTools protocol, which reports every request the page makes: one for anything
but a file of the site fails the test (and goes nowhere: the browser's proxy is a closed port).
"""
import json
import os
import re
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from ragtutor.tools import site

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("RAGTUTOR_REQUIRE_SITE") == "1"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _need(what, available, how):
    if available:
        return
    if REQUIRED:
        pytest.fail(f"{what} is missing and RAGTUTOR_REQUIRE_SITE=1: {how}")
    pytest.skip(f"{what} is not installed ({how}); the website's tests are skipped")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    try:
        import bs4  # noqa: F401
        import jupyter_book  # noqa: F401
        have = True
    except ImportError:
        have = False
    _need("Jupyter Book 1", have, "pip install -r requirements-site.txt")
    return site.build(tmp_path_factory.mktemp("site")).parent


class _Browser:
    """Headless chromium driven over its DevTools pipe (file descriptors 3 and 4)."""

    def __init__(self, executable, profile):
        command_read, self._command_write = os.pipe()
        self._answer_read, answer_write = os.pipe()

        def pipes():
            os.dup2(command_read, 3)
            os.dup2(answer_write, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--no-first-run", "--disable-background-networking", "--disable-extensions",
             # Whatever is not a file of the site goes to a closed loopback port: nothing leaves.
             "--proxy-server=http://127.0.0.1:9", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(command_read)
        os.close(answer_write)
        self._buffer, self._id, self._events = b"", 0, []

    def _message(self):
        while b"\0" not in self._buffer:
            # A hang guard, not a measurement: a page that has not answered in 5 minutes never will.
            ready, _, _ = select.select([self._answer_read], [], [], 300)
            chunk = os.read(self._answer_read, 1 << 16) if ready else b""
            if not chunk:
                raise RuntimeError("chromium stopped answering on its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=None):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self._events.append(answer)

    def _wait_for(self, method, session):
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._message())

    def open(self, path):
        """The page's DOM once MathJax has typeset it, its images' state, and every URL it asked for."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        self._events.clear()
        self.send("Page.navigate", {"url": path.as_uri()}, session)
        self._wait_for("Page.loadEventFired", session)
        state = self.send("Runtime.evaluate", {
            "expression": _PAGE_STATE, "awaitPromise": True, "returnByValue": True}, session)
        if "exceptionDetails" in state:
            raise RuntimeError(f"{path.name}: {state['exceptionDetails']}")
        urls = [e["params"]["request"]["url"] for e in self._events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
        self.send("Target.closeTarget", {"targetId": target})
        return json.loads(state["result"]["value"]), urls

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self._command_write)
        os.close(self._answer_read)


# Waits for MathJax's first typesetting, then reports the DOM and whether each image decoded.
_PAGE_STATE = """
(window.MathJax && MathJax.startup && MathJax.startup.promise || Promise.resolve()).then(() =>
  JSON.stringify({
    html: document.documentElement.outerHTML,
    mathjax: Boolean(window.MathJax && MathJax.startup),
    images: [...document.querySelectorAll("main img")].map(
      img => [img.getAttribute("src"), img.complete && img.naturalWidth > 0]),
  }))
"""


@pytest.fixture(scope="module")
def browser(built, tmp_path_factory):
    executable = _chromium()
    _need("chromium", executable, "apt-get install chromium")
    chromium = _Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium.open
    chromium.close()


def _local(url):
    return url.split(":", 1)[0] in {"file", "data", "blob", "about"}


def _visible_text(soup):
    """The text a reader sees: without scripts, styles, code, and typeset formulas."""
    for tag in soup(["script", "style", "pre", "code", "mjx-container", "noscript", "template"]):
        tag.decompose()
    return soup.get_text(" ")


def _stored_images(chapter):
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    return sum(1 for cell in nb["cells"] for out in cell.get("outputs", [])
               if {"image/png", "image/svg+xml", "image/jpeg"} & set(out.get("data", {})))


@pytest.mark.slow
def test_the_site_has_every_chapter_and_page(built):
    for chapter in CHAPTERS:
        assert (built / "notebooks" / f"{chapter.stem}.html").is_file(), chapter.name
    for page in site.PAGES:
        assert (built / Path(page).with_suffix(".html")).is_file(), page
    assert (built / "index.html").is_file()
    assert (built / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.slow
def test_no_page_loads_anything_from_another_host(built):
    remote = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(https?:)?//", re.I)
    offenders = {}
    for page in built.rglob("*.html"):
        hits = remote.findall(page.read_text(encoding="utf-8"))
        if hits:
            offenders[str(page.relative_to(built))] = len(hits)
    assert not offenders, f"pages that load from another host: {offenders}"


@pytest.mark.slow
def test_solutions_are_collapsed_and_the_colab_cell_left_out(built):
    for chapter in CHAPTERS:
        html = (built / "notebooks" / f"{chapter.stem}.html").read_text(encoding="utf-8")
        nb = json.loads(chapter.read_text(encoding="utf-8"))
        code_solutions = sum(1 for c in nb["cells"]
                             if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", []))
        assert html.count("Show solution") == code_solutions, chapter.name
        assert "google.colab" not in html, chapter.name


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_page_renders_offline(browser, built, chapter):
    from bs4 import BeautifulSoup

    page = built / "notebooks" / f"{chapter.stem}.html"
    state, urls = browser(page)
    remote = [url for url in urls if not _local(url)]
    assert not remote, f"{chapter.name}: requests for another host: {remote}"
    assert state["mathjax"], f"{chapter.name}: MathJax did not start"
    soup = BeautifulSoup(state["html"], "html.parser")
    # Every formula is typeset by MathJax: no element of class "math" keeps its raw TeX.
    formulas = soup.select(".math")
    assert formulas, f"{chapter.name} has no formula"
    raw = [f.get_text()[:60] for f in formulas if not f.find("mjx-container")]
    assert not raw, f"{chapter.name}: formulas left as TeX: {raw[:5]}"
    # ... and no TeX delimiter is left in the text a reader sees.
    text = _visible_text(soup)
    for delimiter in ("$$", "\\(", "\\[", "\\begin{"):
        assert delimiter not in text, f"{chapter.name}: {delimiter!r} in the visible text"
    # Every figure the notebook stored is on the page, and the browser decoded it.
    assert len(state["images"]) >= _stored_images(chapter), chapter.name
    broken = [src for src, shown in state["images"] if not shown]
    assert not broken, f"{chapter.name}: images that did not load: {broken}"
    # ... and each figure of an output opens at full size with a click.
    unlinked = [img.get("src") for img in soup.select("div.cell_output img") if not img.find_parent("a")]
    assert not unlinked, f"{chapter.name}: figures without a full-size link: {unlinked}"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.html", "docs/notation.html", "docs/glossary.html"])
def test_the_course_pages_render_offline(browser, built, page):
    from bs4 import BeautifulSoup

    state, urls = browser(built / page)
    remote = [url for url in urls if not _local(url)]
    assert not remote, f"{page}: requests for another host: {remote}"
    soup = BeautifulSoup(state["html"], "html.parser")
    raw = [f.get_text()[:60] for f in soup.select(".math") if not f.find("mjx-container")]
    assert not raw, f"{page}: formulas left as TeX: {raw[:5]}"
    assert "$$" not in _visible_text(soup), page


# The staging step, without Jupyter Book: what the site's sources are made of.


def _notebook(cells):
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _cell(kind, source, tags=()):
    cell = {"cell_type": kind, "id": str(abs(hash(source)))[:8], "metadata": {"tags": list(tags)},
            "source": source}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


@pytest.fixture
def repository(tmp_path):
    """A miniature repository with one chapter and every page the site needs."""
    for page in site.PAGES + ["README.md"]:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(f"# {page}\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/x)\n"
        "# The course\nSee [the script](scripts/train.py) and [the guide](docs/teachers_guide.md).\n",
        encoding="utf-8")
    (tmp_path / "docs" / "teachers_guide.md").write_text(
        "Back to [the README](../README.md#quick-start).\n", encoding="utf-8")
    (tmp_path / "docs" / "figures").mkdir()
    (tmp_path / "docs" / "figures" / "map.svg").write_text("<svg/>", encoding="utf-8")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text("print('train')\n", encoding="utf-8")
    chapter = _notebook([
        _cell("code", "!pip install ragtutor", ["colab"]),
        _cell("markdown", "Exercise 1.1, and [the datasheet](../data/README.md)", ["exercises"]),
        _cell("code", "# NBVAL_CHECK_OUTPUT\nprint(1)\n"),
        _cell("code", "# BEGIN SOLUTION\nx = 1\n# END SOLUTION", ["solution"]),
        _cell("markdown", "Why: ::: colons\n:::: four", ["solution"]),
        _cell("code", "check(x)"),
    ])
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "notebooks" / "01_first.ipynb").write_text(json.dumps(chapter), encoding="utf-8")
    return tmp_path


def test_staging_lays_out_the_site_as_the_repository(repository, tmp_path_factory):
    staging = tmp_path_factory.mktemp("staging")
    assert site.stage(staging, repository) == ["notebooks/01_first.ipynb"]
    home = (staging / "index.md").read_text(encoding="utf-8")
    # The badge, an image on a remote server, is a plain link on the site.
    assert "badge_logo.svg" not in home and "[Open the course on Binder](https://mybinder.org/v2/gh/x)" in home
    assert (staging / "scripts" / "train.py").is_file()  # a linked file becomes a download
    assert (staging / "docs" / "figures" / "map.svg").is_file()
    guide = (staging / "docs" / "teachers_guide.md").read_text(encoding="utf-8")
    assert "](../index.md#quick-start)" in guide
    toc = (staging / "_toc.yml").read_text(encoding="utf-8")
    assert toc.index("notebooks/01_first") < toc.index("docs/glossary")


def test_staging_collapses_solutions_and_drops_the_colab_cell(repository, tmp_path_factory):
    staging = tmp_path_factory.mktemp("staging")
    site.stage(staging, repository)
    cells = json.loads((staging / "notebooks" / "01_first.ipynb").read_text(encoding="utf-8"))["cells"]
    colab, _, marked, code, explanation, check = cells
    assert "remove-cell" in colab["metadata"]["tags"]
    assert "hide-output" in check["metadata"]["tags"]  # after the exercises begin
    assert "hide-output" in marked["metadata"]["tags"]
    assert "hide-output" not in colab["metadata"]["tags"]
    assert marked["source"] == "print(1)\n"
    assert "hide-cell" in code["metadata"]["tags"]
    assert code["source"] == "x = 1\n"  # the markers say nothing to a reader
    assert code["metadata"]["mystnb"]["code_prompt_show"] == "Show solution"
    # The drop-down's fence is longer than any run of colons inside it.
    assert explanation["source"].startswith(":::::{admonition} Solution\n:class: dropdown tip\n")
    assert explanation["source"].rstrip().endswith("\n:::::")


def test_staging_refuses_a_repository_without_its_pages(repository, tmp_path_factory):
    (repository / "docs" / "glossary.md").unlink()
    with pytest.raises(FileNotFoundError, match="glossary"):
        site.stage(tmp_path_factory.mktemp("staging"), repository)
