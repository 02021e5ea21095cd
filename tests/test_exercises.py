"""Exercises: the self-check helpers, and student copies without the worked solutions."""
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ragtutor import exercises
from ragtutor.tools import student
from ragtutor.exercises import (ExerciseFailed, check, check_close, check_equal, check_function,
                                exercise)
from ragtutor.tools.testing import CurrentEnvNotebookClient

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIXTURE = ROOT / "tests" / "fixtures" / "exercises_demo.ipynb"
MARKER = re.compile(r"^\s*#\s*(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE | re.MULTILINE)


@pytest.fixture
def registry(monkeypatch):
    """An empty registry, so that the checks these tests define stay out of the course's."""
    fresh = {}
    monkeypatch.setattr(exercises.checks, "EXERCISES", fresh)  # where @exercise registers
    monkeypatch.setattr(exercises, "EXERCISES", fresh)
    return fresh


@pytest.fixture
def ch99_double(registry):
    @exercise("99.1")
    def ch99_double(double):
        check_function(double, [(2, 4), (-1, -2)], hint="multiply by two.")
        return "double is right on 2 inputs."

    return ch99_double


def failure_of(call, *args, **kwargs):
    with pytest.raises(ExerciseFailed) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# The checks a learner sees.

def test_a_right_answer_prints_one_success_line(ch99_double, capsys):
    assert ch99_double(lambda x: 2 * x) is None
    assert capsys.readouterr().out == "✓ Exercise 99.1 passed: double is right on 2 inputs.\n"


def test_a_wrong_answer_says_what_was_expected_what_came_and_a_hint(ch99_double, capsys):
    def double(x):
        return x + 2

    assert failure_of(ch99_double, double) == (
        "Exercise 99.1: double(-1) is wrong\n"
        "  expected: -2\n"
        "  got:      1\n"
        "  hint:     multiply by two.")
    assert capsys.readouterr().out == ""


def test_an_unwritten_function_is_reported_as_not_written(ch99_double):
    def double(x):
        raise NotImplementedError("Exercise 99.1: write your solution here")

    assert "double is not written yet" in failure_of(ch99_double, double)


def test_an_exception_in_the_learners_code_names_the_input(ch99_double):
    def double(x):
        return x + "1"

    with pytest.raises(ExerciseFailed, match=r"double\(2\) raised TypeError") as caught:
        ch99_double(double)
    assert isinstance(caught.value.__cause__, TypeError)  # the learner's traceback stays visible


def test_a_function_that_changes_its_input_cannot_spoil_the_next_case():
    items = [3, 1, 2]

    def pop_last(values):
        return values.pop()

    check_function(pop_last, [((items,), 2), ((items,), 2)])
    assert items == [3, 1, 2]


def test_check_reports_only_what_it_is_given():
    assert failure_of(check, False, "the index is empty", hint="call fit() first") == (
        "the index is empty\n  hint:     call fit() first")
    assert failure_of(check, 1 > 2, "wrong", expected=None, got=3) == (
        "wrong\n  expected: None\n  got:      3")
    check(True, "never shown")


@pytest.mark.parametrize("got, expected, problem", [
    ([1, 2, 4], [1, 2, 3], "ranking[2] is wrong\n  expected: 3\n  got:      4"),
    ([1, 2], [1, 2, 3], "ranking has 2 items, expected 3"),
    ({1, 4}, {1, 2}, "ranking misses {2} and has {4} too many"),
    ({"a": 1}, {"a": 1, "b": 2}, "ranking misses the keys {'b'}"),
    ({"a": 1, "b": 3}, {"a": 1, "b": 2}, "ranking['b'] is wrong"),
    ("1", 1, "ranking is of type str, expected int"),
    (None, [1], "ranking is None: does your code `return` its result"),
    (np.array([1, 2]), np.array([1, 3]), "ranking is wrong"),
])
def test_check_equal_points_at_the_difference(got, expected, problem):
    assert failure_of(check_equal, got, expected, what="ranking").startswith(problem)


@pytest.mark.parametrize("got, expected", [
    ([3, 1], (3, 1)), (2, 2.0), ({"a": [1, 2]}, {"a": [1, 2]}), (torch.tensor([1, 2]), np.array([1, 2])),
])
def test_check_equal_accepts_equal_values(got, expected):
    check_equal(got, expected)


@pytest.mark.parametrize("got, expected, tolerance", [
    (0.5 + 1e-9, 0.5, {}), (np.float32(0.1), 0.1, {}), (torch.tensor(0.5), 0.5, {}),
    ([0.2, 0.8], np.array([0.2, 0.8]), {}), (0.52, 0.5, {"rtol": 0.05}), (1e-9, 0.0, {"atol": 1e-6}),
])
def test_check_close_accepts_answers_within_tolerance(got, expected, tolerance):
    check_close(got, expected, **tolerance)


def test_check_close_names_the_first_wrong_entry():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert failure_of(check_close, scores, [[1.0, 2.0], [3.0, 5.0]], what="scores", hint="h") == (
        "1 of 4 entries of scores are wrong; the first is scores[1, 1]\n"
        "  expected: 5.0\n  got:      4.0\n  hint:     h")


@pytest.mark.parametrize("got, problem", [
    (0.6, "p is wrong\n  expected: 0.5\n  got:      0.6"),
    (None, "p is None"),
    ("0.5", "p should be a number or an array of numbers, not of type str"),
    ([0.5, 0.5], "p has shape [2], expected []"),
    (float("nan"), "p is wrong"),
])
def test_check_close_explains_a_wrong_answer(got, problem):
    assert failure_of(check_close, got, 0.5, what="p").startswith(problem)


def test_checks_are_registered_under_their_chapter(registry):
    def ch01_precision(answer):
        check_equal(answer, 1)

    check_answer = exercise("1.2")(ch01_precision)
    assert registry == {"1.2": check_answer} and check_answer.exercise == "1.2"
    assert exercise("1.2")(ch01_precision) is registry["1.2"]  # a notebook cell run again
    def ch01_recall(answer):
        check_equal(answer, 1)

    with pytest.raises(ValueError, match="already has a check: ch01_precision"):
        exercise("1.2")(ch01_recall)
    with pytest.raises(ValueError, match="must be named ch03_"):
        exercise("3.1")(ch01_precision)
    with pytest.raises(ValueError, match="looks like '1.2'"):
        exercise("1")


def test_every_course_check_is_reachable_by_its_name():
    for number, check_answer in exercises.EXERCISES.items():
        assert getattr(exercises, check_answer.__name__) is check_answer
        assert check_answer.exercise == number


def test_chapters_call_only_registered_checks():
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        calls = {name for cell in nb.cells if cell.cell_type == "code"
                 for name in re.findall(r"\b(ch\d{2}_\w+)\s*\(", cell.source)}
        unknown = {name for name in calls if not hasattr(exercises, name)}
        assert not unknown, f"{path.name} calls checks that ragtutor.exercises lacks: {unknown}"


# Student copies.

def tagged(cell, *tags):
    cell.metadata["tags"] = list(tags)
    return cell


def lines_of(text):
    """The text's non-blank lines, stripped: indentation cannot hide a copied solution."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def assert_no_solution(instructor, copy, name):
    """Static check: no marked solution line, solution cell or output reaches the student copy."""
    sources = "\n".join(lines_of(cell.source) for cell in copy.cells)
    for cell in instructor.cells:
        if student.SOLUTION_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        blocks = [cell.source] if cell.cell_type != "code" else re.findall(
            r"#\s*BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*#\s*END SOLUTION", cell.source,
            re.DOTALL | re.MULTILINE | re.IGNORECASE)
        for block in blocks:
            assert lines_of(block) not in sources, (
                f"{name}: this solution reached students:\n{lines_of(block)}")
    assert not MARKER.search(sources), f"{name}: a solution marker reached students"
    for cell in copy.cells:
        assert student.SOLUTION_TAG not in cell.get("metadata", {}).get("tags", []), name
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: outputs left"
            # valid Python, once IPython has turned %magics and !commands into calls
            compile(TransformerManager().transform_cell(cell.source), name, "exec")


def test_the_fixtures_student_copy():
    instructor = nbformat.read(FIXTURE, as_version=4)
    before = nbformat.writes(instructor)
    copy = student.student_copy(instructor, FIXTURE.name)
    assert nbformat.writes(instructor) == before  # the instructor notebook is left alone
    assert_no_solution(instructor, copy, FIXTURE.name)
    assert len(copy.cells) == len(instructor.cells) - 1  # the worked explanation is gone
    sources = [cell.source for cell in copy.cells]
    assert (
        'def sum_of_squares(n):\n'
        '    """0² + 1² + ... + (n-1)²."""\n'
        '    # YOUR CODE HERE\n'
        '    raise NotImplementedError("Exercise 99.1: write your solution here, in place of this '
        'line")\n'
        '\n\n'
        'ch99_sum_of_squares(sum_of_squares)') in sources
    assert ('# YOUR CODE HERE\n'
            'raise NotImplementedError("Exercise 99.2: write your solution here, in place of this '
            'line")\n'
            'ch99_mean_square(mean_square)') in sources
    assert student.exercises_start(copy) == student.exercises_start(instructor) == 3


def test_the_command_line_writes_student_copies(tmp_path, capsys):
    student.main([str(FIXTURE), "--out", str(tmp_path / "class")])
    written = tmp_path / "class" / FIXTURE.name
    assert f"-> {written}" in capsys.readouterr().out
    assert_no_solution(nbformat.read(FIXTURE, as_version=4), nbformat.read(written, as_version=4),
                       written.name)


def test_no_student_copy_of_a_chapter_contains_a_solution(tmp_path):
    written = student.build(CHAPTERS, tmp_path)
    assert [path.name for path in written] == [path.name for path in CHAPTERS]
    for instructor, copy in zip(CHAPTERS, written):
        assert_no_solution(nbformat.read(instructor, as_version=4),
                           nbformat.read(copy, as_version=4), instructor.name)


def test_every_chapter_ends_with_exercises():
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        start = student.exercises_start(nb, path.name)
        assert start is not None, f"{path.name} has no cell tagged '{student.EXERCISES_TAG}'"
        assert any(student.SOLUTION_TAG in cell.metadata.get("tags", []) for cell in nb.cells), (
            f"{path.name} has no exercise with a worked solution (a cell tagged "
            f"'{student.SOLUTION_TAG}')")


def exercises_cell():
    return tagged(new_markdown_cell("## Check yourself"), student.EXERCISES_TAG)


@pytest.mark.parametrize("cells, problem", [
    ([new_code_cell("# BEGIN SOLUTION\nx = 1\n# END SOLUTION")], "is not tagged 'solution'"),
    ([exercises_cell(), tagged(new_code_cell("x = 1"), "solution")], "no line is between"),
    ([exercises_cell(), tagged(new_code_cell("# BEGIN SOLUTION\nx = 1"), "solution")],
     "never closed"),
    ([exercises_cell(), tagged(new_code_cell("x = 1\n# END SOLUTION"), "solution")],
     "without a '# BEGIN SOLUTION'"),
    ([exercises_cell(), tagged(new_code_cell("# BEGIN SOLUTION\n  # begin solution\n# END SOLUTION"),
                             "solution")], "inside another solution block"),
    ([tagged(new_markdown_cell("The answer is 42."), "solution"), exercises_cell()],
     "must come after the cell tagged 'exercises'"),
    ([exercises_cell(), exercises_cell()], "tag only the cell where the exercises begin"),
    # other spellings of a marker, anywhere
    ([exercises_cell(), new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")],
     "looks like a solution marker"),
    ([exercises_cell(), tagged(new_code_cell("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n"
                                             "### BEGIN SOLUTION\ny = 2\n### END SOLUTION"),
                               "solution")], "looks like a solution marker"),
    ([exercises_cell(), tagged(new_code_cell("# BEGIN_SOLUTION\nx = 1\n# END_SOLUTION"), "solution")],
     "looks like a solution marker"),
    ([exercises_cell(), new_markdown_cell("BEGIN SOLUTION\nThe answer is 42.\nEND SOLUTION")],
     "in a markdown cell looks like a solution marker"),
    ([exercises_cell(), nbformat.v4.new_raw_cell("# BEGIN SOLUTION\n42\n# END SOLUTION")],
     "in a raw cell looks like a solution marker"),
    # other spellings of the tag
    ([exercises_cell(), tagged(new_code_cell("# BEGIN SOLUTION\nx = 1\n# END SOLUTION"), "Solution")],
     "tag 'Solution' is not the tag 'solution'"),
    ([exercises_cell(), tagged(new_markdown_cell("The answer is 42."), "solutions")],
     "tag 'solutions' is not the tag 'solution'"),
    # a marker inside a string leaves invalid Python behind
    ([exercises_cell(), tagged(new_code_cell('def f():\n    """Doc\n    # BEGIN SOLUTION\n    """\n'
                                             '    return 1\n    # END SOLUTION'), "solution")],
     "is not valid Python"),
])
def test_a_solution_that_could_leak_stops_the_build(cells, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        student.student_copy(new_notebook(cells=cells), "chapter.ipynb")


def test_an_invalid_notebook_file_is_named(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": "not a list", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}')
    with pytest.raises(ValueError, match=r"broken\.ipynb: not a valid notebook"):
        student.build([broken], tmp_path / "out")


def test_the_build_never_overwrites_instructor_notebooks(tmp_path):
    chapter = tmp_path / FIXTURE.name
    chapter.write_bytes(FIXTURE.read_bytes())
    with pytest.raises(ValueError, match="holds the instructor notebook"):
        student.build([chapter], tmp_path)
    assert chapter.read_bytes() == FIXTURE.read_bytes()


def test_every_student_copy_equals_its_chapter_up_to_the_exercises():
    """Static: up to the cell tagged 'exercises', a student copy's code is the instructor's,
    cell for cell (the instructor notebooks run under nbval, so that code runs without error)."""
    for path in CHAPTERS:
        instructor = nbformat.read(path, as_version=4)
        copy = student.student_copy(instructor, path.name)
        start = student.exercises_start(instructor, path.name)
        assert student.exercises_start(copy, path.name) == start, path.name
        for i, (mine, theirs) in enumerate(zip(instructor.cells[:start], copy.cells[:start])):
            assert (theirs.cell_type, theirs.source) == (mine.cell_type, mine.source), (
                f"{path.name}, cell {i}: the student copy differs from the chapter before its "
                "exercises")


def test_a_student_copy_runs_up_to_its_exercises(tmp_path):
    """Chapter 00's student copy (the fixture's while there is no chapter 00), in a fresh kernel
    in a folder outside the repository, runs without error up to the cell where its exercises
    begin: a learner's copy needs the installed package, not the repository's layout."""
    source = ROOT / "notebooks" / "00_welcome.ipynb"
    source = source if source.exists() else FIXTURE
    nb = student.student_copy(nbformat.read(source, as_version=4), source.name)
    start = student.exercises_start(nb, source.name)
    assert start is not None, f"{source.name} has no cell tagged '{student.EXERCISES_TAG}'"
    nb.cells = nb.cells[:start]
    CurrentEnvNotebookClient(nb, resources={"metadata": {"path": str(tmp_path)}},
                             timeout=600).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)


# Chapter 06's checks: a right answer passes, each common slip gets its own hint.

def ch06_make_labels(answer_ids, start_id, end_id, pad_id, pad_with=None, start=True, end=True,
                     left=False):
    rows = [([start_id] if start else []) + list(ids) + ([end_id] if end else [])
            for ids in answer_ids]
    width = max(map(len, rows))
    fill = pad_id if pad_with is None else pad_with
    return torch.tensor([[fill] * (width - len(r)) + r if left else r + [fill] * (width - len(r))
                         for r in rows])


@pytest.mark.parametrize("options, hint", [
    ({}, None),
    ({"pad_with": -100}, "cannot hold -100"),
    ({"left": True}, "pad on the right"),
    ({"start": False}, "begin with the decoder's start token"),
    ({"end": False}, "end with </s>"),
])
def test_ch06_rag_labels(options, hint, capsys):
    def make_labels(answer_ids, start_id, end_id, pad_id):
        return ch06_make_labels(answer_ids, start_id, end_id, pad_id, **options)

    if hint is None:
        exercises.ch06_rag_labels(make_labels)
        assert capsys.readouterr().out.startswith("✓ Exercise 6.1 passed")
    else:
        assert hint in failure_of(exercises.ch06_rag_labels, make_labels)


def ch06_token_loss(logits, doc_scores, labels, pad_id, shift=True, mask=True, prior=True,
                    sequence=False):
    b, k = doc_scores.shape
    target = torch.cat([labels[:, 1:], labels.new_full((b, 1), pad_id)], 1) if shift else labels
    logprobs = torch.log_softmax(logits, -1).view(b, k, *logits.shape[1:])
    picked = logprobs.gather(-1, target[:, None, :, None].expand(-1, k, -1, 1)).squeeze(-1)
    real = (target != pad_id) if mask else torch.ones_like(target, dtype=torch.bool)
    log_prior = torch.log_softmax(doc_scores, 1) if prior else torch.full_like(doc_scores,
                                                                               -np.log(k))
    if sequence:
        return -torch.logsumexp(log_prior + (picked * real[:, None]).sum(-1), 1)
    mixture = torch.logsumexp(log_prior[:, :, None] + picked, 1)
    return -(mixture * real).sum(-1)


@pytest.mark.parametrize("options, hint", [
    ({}, None),
    ({"shift": False}, "shift the labels left"),
    ({"mask": False}, "leave them out of the sum"),
    ({"prior": False}, "not uniformly"),
    ({"sequence": True}, "RAG-Sequence's loss"),
])
def test_ch06_rag_token_loss(options, hint, capsys):
    def rag_token_loss(logits, doc_scores, labels, pad_id):
        return ch06_token_loss(logits, doc_scores, labels, pad_id, **options)

    if hint is None:
        exercises.ch06_rag_token_loss(rag_token_loss)
        assert capsys.readouterr().out.startswith("✓ Exercise 6.2 passed")
    else:
        assert hint in failure_of(exercises.ch06_rag_token_loss, rag_token_loss)


def test_ch06_rag_token_loss_is_hugging_faces():
    """The check's written-out loss is RagTokenForGeneration's: equal to chapter 04's
    rag_token_nll on nll_inputs_from_hf, which tests/test_rag.py checks against Hugging Face."""
    from ragtutor.rag import nll_inputs_from_hf, rag_token_nll

    for logits, scores, labels in exercises.ch06._ch06_problems(0):
        k = scores.shape[1]
        logprobs, target = nll_inputs_from_hf(logits, labels, k, 0)
        np.testing.assert_allclose(exercises.ch06._ch06_token_loss(logits, scores, labels),
                                   rag_token_nll(logprobs, scores, target, 0).numpy(), rtol=1e-10)


def test_ch06_checks_report_an_unwritten_function():
    def unwritten(*args):
        raise NotImplementedError

    for check_answer in (exercises.ch06_rag_labels, exercises.ch06_rag_token_loss):
        assert "not written yet" in failure_of(check_answer, unwritten)


# Chapter 05's checks.

def ch05_gradient(answer_logliks, doc_scores, sign=1, mean=True, prior=True):
    log_prior = torch.log_softmax(doc_scores, 1)
    posterior = torch.softmax((log_prior if prior else 0) + answer_logliks, 1)
    gradient = sign * (log_prior.exp() - posterior)
    return gradient / len(doc_scores) if mean else gradient


@pytest.mark.parametrize("options, hint", [
    ({}, None),
    ({"sign": -1}, "the sign flips"),
    ({"mean": False}, "divide by B"),
    ({"prior": False}, "weighs each document's likelihood by its prior"),
])
def test_ch05_retriever_gradient(options, hint, capsys):
    def retriever_gradient(answer_logliks, doc_scores):
        return ch05_gradient(answer_logliks, doc_scores, **options)

    if hint is None:
        exercises.ch05_retriever_gradient(retriever_gradient)
        assert capsys.readouterr().out.startswith("✓ Exercise 5.1 passed")
    else:
        assert hint in failure_of(exercises.ch05_retriever_gradient, retriever_gradient)


def test_ch05_retriever_gradient_is_the_rag_models():
    """The check's gradient is what RAGModel's loss sends to its scores: chapter 04's
    rag_sequence_nll, batch mean, differentiated by autograd."""
    from ragtutor.rag import rag_sequence_nll

    for lp, scores in exercises.ch05._ch05_gradient_problems(0):
        b, k = scores.shape
        logprobs = torch.full((b, k, 1, 3), -math.inf, dtype=torch.float64)
        logprobs[:, :, 0, 2] = lp  # one-token answers (token 2) with log-likelihood lp,
        logprobs[:, :, 0, 1] = torch.log1p(-lp.exp())  # the rest of the mass on token 1
        s = scores.clone().requires_grad_(True)
        rag_sequence_nll(logprobs, s, torch.full((b, 1), 2), 0).mean().backward()
        np.testing.assert_allclose(exercises.ch05._ch05_gradient(lp, scores), s.grad.numpy(),
                                   rtol=1e-10)


def ch05_stale(question_vectors, old, new, k, ordered=False, top_one=False, count=False):
    k = 1 if top_one else k
    old_top = np.argsort(-(question_vectors @ old.T), axis=1)[:, :k]
    new_top = np.argsort(-(question_vectors @ new.T), axis=1)[:, :k]
    same = [(list(a) == list(b)) if ordered else (set(a) == set(b))
            for a, b in zip(old_top, new_top)]
    changed = len(same) - sum(same)
    return changed if count else changed / len(same)


@pytest.mark.parametrize("options, hint", [
    ({}, None),
    ({"ordered": True}, "compare the top-k *sets*"),
    ({"top_one": True}, "not only the best one"),
    ({"count": True}, "not the count"),
])
def test_ch05_stale_top_k(options, hint, capsys):
    def stale_top_k(question_vectors, old_vectors, new_vectors, k):
        return ch05_stale(question_vectors, old_vectors, new_vectors, k, **options)

    if hint is None:
        exercises.ch05_stale_top_k(stale_top_k)
        assert capsys.readouterr().out.startswith("✓ Exercise 5.2 passed")
    else:
        assert hint in failure_of(exercises.ch05_stale_top_k, stale_top_k)


def test_ch05_checks_report_an_unwritten_function():
    def unwritten(*args):
        raise NotImplementedError

    for check_answer in (exercises.ch05_retriever_gradient, exercises.ch05_stale_top_k):
        assert "not written yet" in failure_of(check_answer, unwritten)


# Chapter 07.

def ch07_threshold(unanswerable, max_answered, slip=None):
    u = np.sort(np.asarray(unanswerable, float))
    allowed = int(np.floor(max_answered * len(u)))
    cut = u[len(u) - allowed - 1]
    if slip == "equal":
        return float(cut)                       # answers the one it must not
    if slip == "strict":
        return float(u[-1]) + 1.0               # answers nothing at all
    return float(np.nextafter(cut, np.inf))


@pytest.mark.parametrize("slip, hint", [
    (None, None),
    ("equal", "a threshold equal to an unanswerable question's score answers it"),
    ("strict", "take the lowest threshold that keeps within the limit"),
])
def test_ch07_choose_threshold(slip, hint, capsys):
    def choose_threshold(unanswerable, max_answered):
        return ch07_threshold(unanswerable, max_answered, slip)

    if hint is None:
        exercises.ch07_choose_threshold(choose_threshold)
        assert capsys.readouterr().out.startswith("✓ Exercise 7.1 passed")
    else:
        assert hint in failure_of(exercises.ch07_choose_threshold, choose_threshold)


@pytest.mark.parametrize("slip, hint", [
    (None, None),
    ("once", "replaces every occurrence unless told otherwise"),
    ("in place", "build a new dict"),
    ("silent", "raise ValueError when the old value is not in the text"),
])
def test_ch07_edited_passage(slip, hint, capsys):
    def edited_passage(passage, old, new):
        if old not in passage["text"] and slip != "silent":
            raise ValueError(f"the passage does not state {old!r}")
        if slip == "in place":
            passage["text"] = passage["text"].replace(old, new)
            return passage
        return {**passage, "text": passage["text"].replace(old, new, 1 if slip == "once" else -1)}

    if hint is None:
        exercises.ch07_edited_passage(edited_passage)
        assert capsys.readouterr().out.startswith("✓ Exercise 7.2 passed")
    else:
        assert hint in failure_of(exercises.ch07_edited_passage, edited_passage)


@pytest.mark.parametrize("slip, hint", [(None, None), ("swapped", "the share of questions"),
                                        ("counts", "the share of questions")])
def test_ch07_faithfulness(slip, hint, capsys):
    def faithfulness(before, without_top, without_low):
        top = [a != b for a, b in zip(before, without_top)]
        low = [a != b for a, b in zip(before, without_low)]
        if slip == "counts":
            return sum(top), sum(low)
        shares = (sum(top) / len(before), sum(low) / len(before))
        return shares[::-1] if slip == "swapped" else shares

    if hint is None:
        exercises.ch07_faithfulness(faithfulness)
        assert capsys.readouterr().out.startswith("✓ Exercise 7.3 passed")
    else:
        assert hint in failure_of(exercises.ch07_faithfulness, faithfulness)


# Chapter 08.

@pytest.mark.parametrize("slip, hint", [
    (None, None),
    ("repeats", "Sets make a repeated fact count once"),
    ("empty", "0 when nothing is stated"),
    ("swapped", "precision divides the right stated facts"),
])
def test_ch08_fact_scores(slip, hint, capsys):
    def fact_scores(stated, truth):
        stated = list(stated) if slip == "repeats" else set(stated)
        right = sum(1 for s in stated if s in set(truth))
        if not stated:
            return (1.0 if slip == "empty" else 0.0), 0.0
        precision, recall = right / len(stated), right / len(set(truth))
        return (recall, precision) if slip == "swapped" else (precision, recall)

    if hint is None:
        exercises.ch08_fact_scores(fact_scores)
        assert capsys.readouterr().out.startswith("✓ Exercise 8.1 passed")
    else:
        assert hint in failure_of(exercises.ch08_fact_scores, fact_scores)


@pytest.mark.parametrize("slip, hint", [
    (None, None),
    ("product", "that multiplies the passages' distributions"),
    ("no prior", "weight each passage's probabilities by its prior"),
    ("uniform", "torch.logsumexp(log_prior[:, None] + logprobs, dim=0)"),
])
def test_ch08_mixture_step(slip, hint, capsys):
    def mixture_step(logprobs, log_prior):
        if slip == "product":
            return (log_prior.exp()[:, None] * logprobs).sum(0)
        if slip == "no prior":
            return torch.logsumexp(logprobs, 0)
        if slip == "uniform":
            return torch.logsumexp(logprobs, 0) - np.log(len(logprobs))
        return torch.logsumexp(log_prior[:, None] + logprobs, 0)

    if hint is None:
        exercises.ch08_mixture_step(mixture_step)
        assert capsys.readouterr().out.startswith("✓ Exercise 8.2 passed")
    else:
        assert hint in failure_of(exercises.ch08_mixture_step, mixture_step)


@pytest.mark.parametrize("slip, hint", [(None, None), ("anywhere", "ranking[:k]"),
                                        ("off by one", "ranking[:k]")])
def test_ch08_hit_at_k(slip, hint, capsys):
    def hit_at_k(rankings, held_out, k):
        if slip == "anywhere":
            k = None
        elif slip == "off by one":
            k += 1
        return float(np.mean([h in r[:k] for r, h in zip(rankings, held_out)]))

    if hint is None:
        exercises.ch08_hit_at_k(hit_at_k)
        assert capsys.readouterr().out.startswith("✓ Exercise 8.3 passed")
    else:
        assert hint in failure_of(exercises.ch08_hit_at_k, hit_at_k)


# Chapter 09.

@pytest.mark.parametrize("slip, hint", [(None, None), ("first shard", "sort by score"),
                                        ("ascending", "highest first")])
def test_ch09_merge_shards(slip, hint, capsys):
    def merge_shards(scores, ids, k):
        if slip == "first shard":
            return list(ids[0][:k]) + [i for row in ids[1:] for i in row][:max(0, k - len(ids[0]))]
        pairs = sorted(zip(np.concatenate(scores), np.concatenate(ids)),
                       key=lambda p: p[0] if slip == "ascending" else -p[0])
        return [i for _, i in pairs[:k]]

    if hint is None:
        exercises.ch09_merge_shards(merge_shards)
        assert capsys.readouterr().out.startswith("✓ Exercise 9.1 passed")
    else:
        assert hint in failure_of(exercises.ch09_merge_shards, merge_shards)


@pytest.mark.parametrize("slip, hint", [(None, None), ("no free values", "below 24"),
                                        ("five bits", "4 highest bits")])
def test_ch09_length_byte(slip, hint, capsys):
    def length_byte(length):
        free = 0 if slip == "no free values" else 24
        if length < free:
            return length
        value = length - free
        keep = 5 if slip == "five bits" else 4
        if value.bit_length() < keep:
            return free + value
        shift = value.bit_length() - keep
        return free + (((value >> shift) & 0x07) | ((shift + 1) << 3))

    if hint is None:
        exercises.ch09_length_byte(length_byte)
        assert capsys.readouterr().out.startswith("✓ Exercise 9.2 passed")
    else:
        assert hint in failure_of(exercises.ch09_length_byte, length_byte)


@pytest.mark.parametrize("slip, hint", [(None, None), ("plain mean", "weight it by the share"),
                                        ("sum", "divided by the sum of the sizes")])
def test_ch09_weighted_average(slip, hint, capsys):
    def batch_gradient(gradients, sizes):
        if slip == "plain mean":
            return np.mean(gradients, axis=0)
        total = sum(n * g for n, g in zip(sizes, gradients))
        return total if slip == "sum" else total / sum(sizes)

    if hint is None:
        exercises.ch09_weighted_average(batch_gradient)
        assert capsys.readouterr().out.startswith("✓ Exercise 9.3 passed")
    else:
        assert hint in failure_of(exercises.ch09_weighted_average, batch_gradient)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_a_chapters_code_finds_the_repositorys_files_from_anywhere(chapter):
    """A student copy may be written anywhere (``--out ~/class-2027``): a chapter's code must find
    checkpoints/, benchmarks/ and data/ through the package (ragtutor.CHECKPOINT_DIR,
    ragtutor.BENCHMARKS_DIR, ragtutor.data), never by a path relative to the notebook's folder."""
    import ragtutor

    notebook = nbformat.read(chapter, as_version=4)
    relative = [(i, line.strip()) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                for line in cell.source.splitlines() if re.search(r"""["']\.\.[/\\]""", line)]
    assert not relative, relative
    assert ragtutor.CHECKPOINT_DIR == ROOT / "checkpoints" and (ragtutor.CHECKPOINT_DIR / "reader").is_dir()
    assert ragtutor.BENCHMARKS_DIR == ROOT / "benchmarks"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_worked_solutions_are_collapsed_until_asked_for_and_shown_as_stubs_in_copies(chapter):
    """A self-paced learner opens the instructor notebooks: each cell tagged ``solution`` has its
    input collapsed (JupyterLab's ``jupyter.source_hidden``), so the exercise comes first; the
    student copy's stubs are not collapsed."""
    notebook = nbformat.read(chapter, as_version=4)
    solutions = [cell for cell in notebook.cells if student.SOLUTION_TAG in cell.metadata.get("tags", [])]
    if not solutions:
        pytest.skip(f"{chapter.name} has no worked solutions")
    assert all(cell.metadata.get("jupyter", {}).get("source_hidden") is True for cell in solutions)
    copy = student.student_copy(notebook, chapter.name)
    assert not any(cell.metadata.get("jupyter", {}).get("source_hidden") for cell in copy.cells)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_the_colab_cell_installs_only_on_colab(chapter):
    """Each chapter's first code cell (tagged ``colab``) clones and installs the course on Google
    Colab and does nothing anywhere else: every shell command sits under the Colab guard, and the
    cell, as IPython runs it, compiles. (Run under nbval, it must also leave no output.)"""
    notebook = nbformat.read(chapter, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    first = code[0]
    assert "colab" in first.metadata.get("tags", []) and not first.outputs
    lines = first.source.splitlines()
    guard = next(i for i, line in enumerate(lines) if line == 'if "google.colab" in sys.modules:')
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("!", "%")) or "sys.path.insert" in line:
            assert i > guard and line.startswith("    "), line
    compile(TransformerManager().transform_cell(first.source), chapter.name, "exec")
    assert sum("google.colab" in cell.source for cell in code) == 1


# Chapter 10.

@pytest.mark.parametrize("slip, hint", [(None, None), ("no overlap", "size - overlap words"),
                                        ("one too many", "no window holds only words")])
def test_ch10_word_windows(slip, hint, capsys):
    def word_windows(words, size, overlap):
        step = size if slip == "no overlap" else size - overlap
        windows = []
        for start in range(0, len(words), step):
            windows.append(words[start:start + size])
            if start + size >= len(words) and slip != "one too many":
                break
        return windows

    if hint is None:
        exercises.ch10_word_windows(word_windows)
        assert capsys.readouterr().out.startswith("✓ Exercise 10.1 passed")
    else:
        assert hint in failure_of(exercises.ch10_word_windows, word_windows)


@pytest.mark.parametrize("slip, hint", [(None, None), ("cross-encoder only", "first[i] + mix"),
                                        ("unstable", "keep the lower position")])
def test_ch10_mixed_ranking(slip, hint, capsys):
    def mixed_ranking(first, cross, mix):
        scores = np.asarray(cross if slip == "cross-encoder only" else
                            np.asarray(first) + mix * np.asarray(cross), dtype=float)
        if slip == "unstable":
            return sorted(range(len(scores)), key=lambda i: (-scores[i], -i))
        return np.argsort(-scores, kind="stable")

    if hint is None:
        exercises.ch10_mixed_ranking(mixed_ranking)
        assert capsys.readouterr().out.startswith("✓ Exercise 10.2 passed")
    else:
        assert hint in failure_of(exercises.ch10_mixed_ranking, mixed_ranking)


@pytest.mark.parametrize("slip, hint", [(None, None), ("all questions", "say nothing"),
                                        ("one-sided", "twice the probability")])
def test_ch10_mcnemar(slip, hint, capsys):
    from math import comb

    def mcnemar_p(a, b):
        only_a = sum(1 for x, y in zip(a, b) if x and not y)
        only_b = sum(1 for x, y in zip(a, b) if y and not x)
        n = len(a) if slip == "all questions" else only_a + only_b
        if n == 0:
            return 1.0
        tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
        return tail if slip == "one-sided" else min(1.0, 2 * tail)

    if hint is None:
        exercises.ch10_mcnemar(mcnemar_p)
        assert capsys.readouterr().out.startswith("✓ Exercise 10.3 passed")
    else:
        assert hint in failure_of(exercises.ch10_mcnemar, mcnemar_p)
