"""The course's website: the chapters with their stored outputs, and the course's pages, as HTML.

One command, from the repository root, offline:

    python -m ragtutor.tools.site                # -> build/site/html/index.html
    python -m ragtutor.tools.site --out /tmp/web

It needs Jupyter Book 1 (``pip install -r requirements-site.txt``). Nothing is executed: the
notebooks are rendered with the outputs they were committed with, so the site shows exactly what
the tests check. The build copies what the site shows into a staging folder, laid out as in the
repository so that every relative link keeps working, and changes the copies only:

- the README becomes the home page, its Binder badge (an image on a remote server) a plain link;
- a code cell tagged ``solution`` is collapsed behind a "Show solution" button, and a markdown
  cell tagged ``solution`` (a worked explanation) behind a "Solution" drop-down: the reader sees
  each exercise first, as in JupyterLab; after the cell tagged ``exercises``, the outputs of the
  other code cells are collapsed too, since a check's output can give an answer away;
- the cell tagged ``colab`` (it does something on Google Colab only) is left out, and so are the
  test suite's ``# NBVAL_...`` marker lines and the solutions' ``# BEGIN SOLUTION`` markers;
- a repository file that a page links to, a script or a module, is copied along and becomes a
  download link.

The pages need no network to be read: MathJax is served from the site itself
(``sphinx-mathjax-offline``), the course map is an SVG file, and no widget or launch-button
scripts are loaded. ``tests/test_site.py`` opens every chapter page in a headless browser and
checks it.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ragtutor import REPOSITORY_DIR

__all__ = ["PAGES", "stage", "build", "main"]

# The course's pages besides the chapters, in the order of the table of contents.
PAGES = [
    "docs/glossary.md",
    "docs/notation.md",
    "docs/design.md",
    "docs/guarantees.md",
    "data/README.md",
    "benchmarks/RESULTS.md",
    "docs/teachers_guide.md",
    "notebooks/README.md",
]
# A badge: a linked image on a remote server, "[![label](https://image)](https://target)".
_BADGE = re.compile(r"^\s*\[!\[([^\]]*)\]\(https?://[^)]*\)\]\((https?://[^)]*)\)\s*$")
_SOLUTION_MARKER = re.compile(r"^\s*#\s*(BEGIN|END) SOLUTION\s*$")
_NBVAL_MARKER = re.compile(r"^\s*#\s*NBVAL_[A-Z_]+\s*$")
_LOCAL_LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")

_CONFIG = """\
title: ragtutor
author: the ragtutor authors
copyright: "2026"
only_build_toc_files: true
exclude_patterns: [_build]
execute:
  execute_notebooks: "off"
parse:
  myst_enable_extensions: [amsmath, colon_fence, dollarmath]
html:
  use_repository_button: false
  use_issues_button: false
  use_edit_page_button: false
  use_download_button: true
  home_page_in_navbar: false
launch_buttons:
  notebook_interface: classic
  binderhub_url: ""
  colab_url: ""
  jupyterhub_url: ""
  thebe: false
sphinx:
  extra_extensions: [sphinx-mathjax-offline]
  config:
    # MathJax from the site itself (the extension copies it to _static/mathjax).
    mathjax_path: mathjax/tex-chtml.js
    # No ipywidgets manager from a CDN: the chapters' stored outputs hold no live widgets.
    nb_ipywidgets_js: {}
    html_show_sourcelink: false
    # A wider text column (the chapters' code and outputs are up to ~100 characters wide), and
    # outputs wrapped rather than cut at the edge.
    html_css_files: [ragtutor.css]
    # A click on a figure opens it at full size (wide plots are shrunk to the column).
    html_js_files: [ragtutor.js]
"""


_CSS = """\
/* ragtutor: room for ~100-character code lines; long outputs wrap instead of scrolling. */
.bd-page-width { max-width: 100rem; }
.bd-main .bd-content .bd-article-container { max-width: 70rem; }
div.cell_output pre { white-space: pre-wrap; word-break: break-word; }
div.cell_output img { max-width: 100%; height: auto; }
"""


_JS = """\
// ragtutor: each figure of a chapter's outputs links to itself, to be seen at full size.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("div.cell_output img").forEach((img) => {
    if (img.closest("a")) return;
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.title = "Open the figure at full size";
    img.replaceWith(link);
    link.appendChild(img);
  });
});
"""


def _toc(chapters):
    lines = ["format: jb-book", "root: index", "parts:", "  - caption: The chapters", "    chapters:"]
    lines += [f"      - file: {Path(c).with_suffix('').as_posix()}" for c in chapters]
    lines += ["  - caption: The course", "    chapters:"]
    lines += [f"      - file: {Path(p).with_suffix('').as_posix()}" for p in PAGES]
    return "\n".join(lines) + "\n"


def _site_notebook(path):
    """The notebook as the site shows it: solutions collapsed, the Colab cell left out."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    starts = [i for i, c in enumerate(nb["cells"]) if "exercises" in c["metadata"].get("tags", [])]
    for i, cell in enumerate(nb["cells"]):
        tags = cell["metadata"].get("tags", [])
        if starts and i > starts[0] and cell["cell_type"] == "code" and "solution" not in tags:
            # In "Check yourself", a check's output can give an exercise's answer away.
            tags = tags + ["hide-output"]
            cell["metadata"]["tags"] = tags
        if cell["cell_type"] == "code":
            # The test suite's markers (nbval's "# NBVAL_CHECK_OUTPUT") say nothing to a reader.
            lines = "".join(cell["source"]).splitlines(keepends=True)
            cell["source"] = "".join(line for line in lines if not _NBVAL_MARKER.match(line))
        if "colab" in tags:
            cell["metadata"]["tags"] = tags + ["remove-cell"]
        elif "solution" in tags and cell["cell_type"] == "code":
            cell["metadata"]["tags"] = tags + ["hide-cell"]
            lines = cell["source"].splitlines(keepends=True)
            cell["source"] = "".join(line for line in lines if not _SOLUTION_MARKER.match(line))
            cell["metadata"]["mystnb"] = {"code_prompt_show": "Show solution",
                                          "code_prompt_hide": "Hide solution"}
        elif "solution" in tags and cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            fence = ":" * max(4, 1 + max((len(m) for m in re.findall(r"^:+", source, re.M)), default=0))
            cell["source"] = f"{fence}{{admonition}} Solution\n:class: dropdown tip\n{source}\n{fence}\n"
    return json.dumps(nb, ensure_ascii=False, indent=1)


def _home_page(readme):
    """The README as the home page: a badge (an image on a remote server) becomes a plain link."""
    lines = [_BADGE.sub(lambda m: f"[Open the course on {m.group(1)}]({m.group(2)})", line)
             for line in readme.splitlines()]
    return "\n".join(lines) + "\n"


def _relink_home(text, page):
    """`text` of `page` with its links to the README aimed at the home page (index.md) instead."""
    def aim(match):
        target, anchor = match.group(1), match.group(2) or ""
        if "://" not in target and (Path("/r") / page).parent.joinpath(target).resolve() == Path("/r/README.md"):
            target = target[: -len("README.md")] + "index.md"
        return f"]({target}{anchor})"
    return _LOCAL_LINK.sub(aim, text)


def _copy_linked_files(text, page, source_root, staging):
    """Copy the repository files that `page` links to (relative links only) into the staging tree."""
    for target, _anchor in _LOCAL_LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        linked = (source_root / page).parent / target
        try:
            relative = linked.resolve().relative_to(source_root.resolve())
        except ValueError:
            continue
        if relative.as_posix() == "README.md":  # the home page, index.md
            continue
        if linked.is_file() and not (staging / relative).exists():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(linked, staging / relative)


def stage(staging, source_root=REPOSITORY_DIR):
    """Lay out the site's sources in `staging` (emptied first); return the chapters' paths."""
    source_root, staging = Path(source_root), Path(staging)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    chapters = sorted(p.relative_to(source_root).as_posix()
                      for p in (source_root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"no chapters (notebooks/NN_*.ipynb) under {source_root}")
    missing = [p for p in PAGES + ["README.md"] if not (source_root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"the site's pages {missing} are missing under {source_root}")
    (staging / "_config.yml").write_text(_CONFIG, encoding="utf-8")
    (staging / "_static").mkdir()
    (staging / "_static" / "ragtutor.css").write_text(_CSS, encoding="utf-8")
    (staging / "_static" / "ragtutor.js").write_text(_JS, encoding="utf-8")
    (staging / "_toc.yml").write_text(_toc(chapters), encoding="utf-8")
    readme = (source_root / "README.md").read_text(encoding="utf-8")
    (staging / "index.md").write_text(_home_page(readme), encoding="utf-8")
    texts = {"README.md": readme}
    for page in PAGES:
        (staging / page).parent.mkdir(parents=True, exist_ok=True)
        texts[page] = (source_root / page).read_text(encoding="utf-8")
        (staging / page).write_text(_relink_home(texts[page], page), encoding="utf-8")
    for chapter in chapters:
        (staging / chapter).parent.mkdir(parents=True, exist_ok=True)
        (staging / chapter).write_text(_site_notebook(source_root / chapter), encoding="utf-8")
        nb = json.loads((source_root / chapter).read_text(encoding="utf-8"))
        texts[chapter] = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    shutil.copytree(source_root / "docs" / "figures", staging / "docs" / "figures")
    for page, text in texts.items():
        _copy_linked_files(text, page, source_root, staging)
    return chapters


def build(out=None, source_root=REPOSITORY_DIR, quiet=True):
    """Build the site from the stored outputs into `out` (default build/site); return its index.html."""
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        raise SystemExit("The website needs Jupyter Book 1: pip install -r requirements-site.txt") from None
    out = Path(out) if out is not None else Path(source_root) / "build" / "site"
    staging = out / "source"
    stage(staging, source_root)
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    # The `jupyter-book` command of the running Python's environment; it writes into OUT/_build.
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
               "build", str(staging), "--path-output", str(out), "--builder", "html",
               "--warningiserror", "--keep-going"]  # a broken link or reference fails the build
    if quiet:
        command.append("--quiet")
    subprocess.run(command, check=True)
    built = out / "_build" / "html"
    shutil.move(str(built), str(html))
    shutil.rmtree(out / "_build", ignore_errors=True)
    return html / "index.html"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write the site into (default: build/site; the pages land in OUT/html)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's full log")
    args = parser.parse_args(argv)
    index = build(args.out, quiet=not args.verbose)
    print(f"The site is in {index.parent}; open {index} in a browser (no server or network needed).")


if __name__ == "__main__":
    main()
