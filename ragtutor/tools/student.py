"""Student copies of the chapters: the instructor notebooks without their worked solutions.

The convention (notebooks/README.md explains it to teachers):

- the "Check yourself" cell that opens a chapter's exercises is tagged ``exercises``; every
  solution comes after it, so the chapter runs up to that cell in a student copy too;
- a code cell holding a worked solution is tagged ``solution`` and marks its solution lines with
  ``# BEGIN SOLUTION`` and ``# END SOLUTION``. The student copy keeps the rest of the cell (a
  function's signature, the call to the exercise's check) and puts ``# YOUR CODE HERE`` and a
  ``raise NotImplementedError(...)`` in place of each marked block, at its indentation, so the
  copy is valid Python. The error names the exercise ("Exercise 1.2") when the closest markdown
  cell above that mentions an exercise number does;
- a markdown cell tagged ``solution`` (a worked explanation) is left out.

In the instructor notebooks every cell tagged ``solution`` is collapsed (its metadata
``jupyter.source_hidden``): a learner working from them sees the exercise first and opens the
worked solution with a click. The student copy shows its stubs.

Anything else that looks like a solution is an error, never a silent leak: markers in an untagged
cell or in a markdown or raw cell, a marker in another spelling ("### BEGIN SOLUTION",
"# BEGIN_SOLUTION"), a tag spelt otherwise ("Solution", "solutions"), a tagged code cell without
markers, a solution above the exercises. Every code cell of a student copy must parse as Python
(IPython's ``%`` and ``!`` lines allowed), and an invalid notebook file is reported by name.
Student copies have no outputs. From the repository root:

    python -m ragtutor.tools.student                     # notebooks/*.ipynb -> student/
    python -m ragtutor.tools.student notebooks/01_sparse_retrieval.ipynb --out /tmp/class

A copy runs wherever it is written: the chapters find the repository's files through the package
(``ragtutor.CHECKPOINT_DIR``, ``ragtutor.BENCHMARKS_DIR``), not by paths relative to their folder.
"""
import argparse
import ast
import copy
import re
from pathlib import Path

import nbformat

__all__ = ["SOLUTION_TAG", "EXERCISES_TAG", "exercises_start", "student_copy", "build"]

SOLUTION_TAG, EXERCISES_TAG = "solution", "exercises"
_MARKER = re.compile(r"^(\s*)#\s*(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE)
_EXERCISE_NUMBER = re.compile(r"\bExercise\s+(\d+\.\d+)")
# Anything a person may have meant as a marker: other spellings, other comment styles.
_LOOKALIKE = re.compile(r"\b(BEGIN|END)[\s_-]*SOLUTIONS?\b", re.IGNORECASE)


def _tags(cell):
    return cell.metadata.get("tags", [])


def _where(name, index, cell):
    first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    return f"{name}, cell {index} ({first_line[:60]!r})"


def exercises_start(nb, name="notebook"):
    """Index of the cell tagged ``exercises``, or None when the notebook has no exercises."""
    starts = [i for i, cell in enumerate(nb.cells) if EXERCISES_TAG in _tags(cell)]
    if len(starts) > 1:
        raise ValueError(f"{name}: cells {starts} are all tagged '{EXERCISES_TAG}'; tag only the "
                         "cell where the exercises begin")
    return starts[0] if starts else None


def _check_spelling(cell, where):
    """Refuse markers and tags the builder would not recognise: they would leak a solution."""
    odd_tags = [t for t in _tags(cell) if t != SOLUTION_TAG and t.casefold().rstrip("s") in
                ("solution", "solution-cell", "solution_cell")]
    if odd_tags:
        raise ValueError(f"{where}: tag {odd_tags[0]!r} is not the tag '{SOLUTION_TAG}' (lower "
                         "case, singular); the builder would leave this cell's solution in")
    for line in cell.source.splitlines():
        if _LOOKALIKE.search(line) and not (cell.cell_type == "code" and _MARKER.match(line)):
            kind = "a code cell" if cell.cell_type == "code" else f"a {cell.cell_type} cell"
            raise ValueError(f"{where}: {line.strip()!r} in {kind} looks like a solution marker "
                             "the builder does not handle; write '# BEGIN SOLUTION' / "
                             "'# END SOLUTION' on lines of their own in a code cell tagged "
                             f"'{SOLUTION_TAG}' (a markdown solution: tag the whole cell)")


def _check_parses(cell, where):
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        ast.parse(TransformerManager().transform_cell(cell.source))
    except SyntaxError as error:
        raise ValueError(f"{where}: the student copy of this cell is not valid Python (line "
                         f"{error.lineno}: {error.msg}); is a solution marker inside a string or "
                         "a bracket?") from None


def _stub(indent, label):
    return [f"{indent}# YOUR CODE HERE",
            f'{indent}raise NotImplementedError("{label}write your solution here, in place of '
            'this line")']


def _strip_solution(source, label, where):
    """The cell's source with each marked block replaced by a stub; the number of blocks."""
    lines, block_indent, blocks = [], None, 0
    for line in source.splitlines():
        marker = _MARKER.match(line)
        if not marker:
            if block_indent is None:
                lines.append(line)
        elif marker[2].upper() == "BEGIN":
            if block_indent is not None:
                raise ValueError(f"{where}: '# BEGIN SOLUTION' inside another solution block")
            block_indent = marker[1]
        else:
            if block_indent is None:
                raise ValueError(f"{where}: '# END SOLUTION' without a '# BEGIN SOLUTION' above it")
            lines += _stub(block_indent, label)
            block_indent, blocks = None, blocks + 1
    if block_indent is not None:
        raise ValueError(f"{where}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'")
    return "\n".join(lines), blocks


def student_copy(nb, name="notebook"):
    """A copy of ``nb`` with the solutions taken out and the outputs cleared (``nb`` is kept)."""
    start = exercises_start(nb, name)
    student, label = copy.deepcopy(nb), ""
    cells, student.cells = student.cells, []
    for index, cell in enumerate(cells):
        where, tags = _where(name, index, cell), _tags(cell)
        if cell.cell_type == "markdown" and _EXERCISE_NUMBER.search(cell.source):
            label = f"Exercise {_EXERCISE_NUMBER.findall(cell.source)[-1]}: "
        has_markers = any(_MARKER.match(line) for line in cell.source.splitlines())
        if not (SOLUTION_TAG in tags and cell.cell_type == "markdown"):  # dropped whole
            _check_spelling(cell, where)
        if SOLUTION_TAG in tags:
            if start is None or index < start:
                raise ValueError(f"{where}: a solution must come after the cell tagged "
                                 f"'{EXERCISES_TAG}' (the start of the exercises)")
            if cell.cell_type != "code":
                continue
            cell.source, blocks = _strip_solution(cell.source, label, where)
            if not blocks:
                raise ValueError(f"{where}: tagged '{SOLUTION_TAG}' but no line is between "
                                 "'# BEGIN SOLUTION' and '# END SOLUTION'")
            cell.metadata["tags"] = [tag for tag in tags if tag != SOLUTION_TAG]
            if not cell.metadata["tags"]:
                cell.metadata.pop("tags")
            # The instructor notebooks collapse a solution's input until asked for; the student's
            # stub is there to be written in, so it is shown.
            cell.metadata.get("jupyter", {}).pop("source_hidden", None)
            if "jupyter" in cell.metadata and not cell.metadata["jupyter"]:
                cell.metadata.pop("jupyter")
        elif has_markers and cell.cell_type == "code":
            raise ValueError(f"{where}: has solution markers but is not tagged '{SOLUTION_TAG}'; "
                             "tag it, or its solution would reach the students")
        if cell.cell_type == "code":
            _check_parses(cell, where)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)  # JupyterLab's timing of the instructor's run
        student.cells.append(cell)
    return student


def _read(path):
    """The notebook at ``path``, validated; a file that is not a valid notebook is named."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except (OSError, ValueError, nbformat.ValidationError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a valid notebook ({first}); open it in Jupyter and save it, "
                         "or restore it from git") from None
    return nb


def build(notebooks, out):
    """Write the student copy of each instructor notebook into the folder ``out``.

    Returns the paths written. Refuses to write into a folder that holds an instructor notebook,
    whose solutions would be overwritten.
    """
    out = Path(out)
    for path in map(Path, notebooks):
        if path.resolve().parent == out.resolve():
            raise ValueError(f"{out} holds the instructor notebook {path.name}; write the student "
                             "copies to another folder (--out)")
    # Every notebook is converted before any is written, so a mistake leaves no partial build.
    copies = {out / path.name: student_copy(_read(path), path.name) for path in map(Path, notebooks)}
    out.mkdir(parents=True, exist_ok=True)
    for target, nb in copies.items():
        nbformat.write(nb, target)
    return list(copies)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ragtutor.tools.student",
        description="Build student copies of the instructor notebooks: solutions taken out, "
                    "outputs cleared (see notebooks/README.md).")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="instructor notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("student"),
                        help="folder for the student copies (default: student/)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(Path("notebooks").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks given and none in notebooks/ (run from the repository root)")
    try:
        written = build(notebooks, args.out)
    except ValueError as error:
        parser.exit(1, f"error: {error}\n")
    for source, target in zip(notebooks, written):
        print(f"{source} -> {target}")


if __name__ == "__main__":
    main()
