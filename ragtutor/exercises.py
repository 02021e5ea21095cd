"""Self-checks for the exercises that end every chapter ("Check yourself").

An exercise cell ends with a call to the exercise's check, named after its chapter::

    ragtutor.exercises.ch01_precision_at_k(precision_at_k)

A right answer prints one line and returns ``None``::

    ✓ Exercise 1.2 passed: precision_at_k is right on 4 rankings.

A wrong one raises :class:`ExerciseFailed`, which says what is wrong, what was expected, what the
learner's code gave, and a hint::

    ExerciseFailed: Exercise 1.2: precision_at_k([3, 1, 2], {1}, 2) is wrong
      expected: 0.5
      got:      1.0
      hint:     precision@k divides by k, not by the number of relevant documents.

Writing a check (chapter authors): decorate it with ``@exercise("N.M")``, name it ``chNN_...``
after its chapter, build it from :func:`check`, :func:`check_equal`, :func:`check_close` and
:func:`check_function`, and return a short success message (or ``None``)::

    @exercise("1.2")
    def ch01_precision_at_k(precision_at_k):
        check_function(precision_at_k, [(([3, 1, 2], {1}, 2), 0.5), (([3, 1, 2], {4}, 3), 0.0)],
                       compare=check_close,
                       hint="precision@k divides by k, not by the number of relevant documents.")
        return "precision_at_k is right on 2 rankings."

The checks live in this module, grouped by chapter; :data:`EXERCISES` maps each exercise number
to its check. notebooks/README.md describes the whole convention, solutions included.
"""
import copy
import functools
import numbers
import re
import reprlib

import numpy as np

__all__ = ["EXERCISES", "ExerciseFailed", "exercise", "check", "check_equal", "check_close",
           "check_function"]

EXERCISES = {}  # exercise number ("1.2") -> its registered check, filled by @exercise

_MISSING = object()  # "no expected/got to show", distinct from a legitimate None
_NUMBER = re.compile(r"^(\d+)\.(\d+)$")

# Short, readable reprs of a learner's values: long lists and strings are elided in the middle.
_repr = reprlib.Repr()
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdict = 10
_repr.maxstring, _repr.maxother = 120, 300


def _show(value):
    if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
        return f"{_repr.repr(value)} (shape {list(value.shape)})"
    return _repr.repr(value)


class ExerciseFailed(AssertionError):
    """A learner's answer is wrong. ``str()`` gives the problem, expected, got and hint lines.

    ``expected`` and ``got`` are shown only when given (``None`` is a value worth showing).
    ``exercise`` is the exercise number, filled in by :func:`exercise` when the check runs.
    """

    def __init__(self, problem, *, expected=_MISSING, got=_MISSING, hint=None):
        super().__init__(problem)
        self.problem, self.expected, self.got, self.hint = problem, expected, got, hint
        self.exercise = None

    def __str__(self):
        lead = f"Exercise {self.exercise}: " if self.exercise else ""
        lines = [lead + self.problem]
        if self.expected is not _MISSING:
            lines.append(f"  expected: {_show(self.expected)}")
        if self.got is not _MISSING:
            lines.append(f"  got:      {_show(self.got)}")
        if self.hint:
            lines.append(f"  hint:     {self.hint}")
        return "\n".join(lines)


def exercise(number):
    """Register the decorated function as the check of exercise ``number`` (``"chapter.index"``).

    The function must be named ``chNN_...`` with NN its two-digit chapter. When it returns, the
    check prints ``✓ Exercise N.M passed`` followed by the message it returned, if any; when it
    raises :class:`ExerciseFailed`, the error names the exercise.
    """
    match = _NUMBER.match(number) if isinstance(number, str) else None
    if not match:
        raise ValueError(f"an exercise number looks like '1.2' (chapter.index), got {number!r}")
    prefix = f"ch{int(match[1]):02d}_"

    def register(check_answer):
        if not check_answer.__name__.startswith(prefix):
            raise ValueError(f"the check of exercise {number} must be named {prefix}..., "
                             f"got {check_answer.__name__}")
        # The same name again is a notebook cell run twice; another name is a mistake.
        if number in EXERCISES and EXERCISES[number].__name__ != check_answer.__name__:
            raise ValueError(f"exercise {number} already has a check: "
                             f"{EXERCISES[number].__name__}")

        @functools.wraps(check_answer)
        def run(*args, **kwargs):
            __tracebackhide__ = True  # pytest and IPython leave the check's frames out of tracebacks
            try:
                message = check_answer(*args, **kwargs)
            except ExerciseFailed as failure:
                failure.exercise = number
                raise
            print(f"✓ Exercise {number} passed" + (f": {message}" if message else "."))

        run.exercise = number
        EXERCISES[number] = run
        return run

    return register


def check(condition, problem, *, expected=_MISSING, got=_MISSING, hint=None):
    """Raise :class:`ExerciseFailed` with ``problem`` (and what is given of the rest) unless
    ``condition`` holds. The building block for anything the other helpers do not cover."""
    __tracebackhide__ = True
    if not condition:
        raise ExerciseFailed(problem, expected=expected, got=got, hint=hint)


def _check_not_none(got, expected, what, hint):
    __tracebackhide__ = True
    check(got is not None or expected is None,
          f"{what} is None: does your code `return` its result (a bare `print` returns None)?",
          expected=expected, got=got, hint=hint)


def _as_array(value):
    if hasattr(value, "detach"):  # a torch tensor, possibly requiring grad
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _difference(missing, extra, kind=""):
    """"misses {..}", "has {..} too many" or both, for a set or a dict's keys."""
    parts = ([f"misses {kind}{_show(missing)}"] if missing else []) + (
        [f"has {kind}{_show(extra)} too many"] if extra else [])
    return " and ".join(parts)


def check_equal(got, expected, *, what="your answer", hint=None):
    """Check that ``got == expected`` exactly: for strings, integers, ids, lists, sets, dicts.

    The message points at the difference: a wrong length, the first differing position of a
    list or tuple (either may stand for the other), missing and extra set items or dict keys.
    Arrays and tensors must be equal element by element; compare floats with :func:`check_close`.
    """
    __tracebackhide__ = True
    _check_not_none(got, expected, what, hint)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        check(len(got) == len(expected), f"{what} has {len(got)} items, expected {len(expected)}",
              expected=expected, got=got, hint=hint)
        for index, (item, wanted) in enumerate(zip(got, expected)):
            check_equal(item, wanted, what=f"{what}[{index}]", hint=hint)
        return
    if isinstance(expected, (set, frozenset)) and isinstance(got, (set, frozenset)):
        check(got == expected, f"{what} {_difference(expected - got, got - expected)}",
              expected=expected, got=got, hint=hint)
        return
    if isinstance(expected, dict) and isinstance(got, dict):
        check(got.keys() == expected.keys(), f"{what} " + _difference(
            expected.keys() - got.keys(), got.keys() - expected.keys(), "the keys "),
            expected=expected, got=got, hint=hint)
        for key in expected:
            check_equal(got[key], expected[key], what=f"{what}[{key!r}]", hint=hint)
        return
    both_numbers = isinstance(got, numbers.Number) and isinstance(expected, numbers.Number)
    if not both_numbers and not hasattr(expected, "shape"):
        check(isinstance(got, type(expected)),
              f"{what} is of type {type(got).__name__}, expected {type(expected).__name__}",
              expected=expected, got=got, hint=hint)
    if hasattr(expected, "shape") or hasattr(got, "shape"):
        got_array, expected_array = _as_array(got), _as_array(expected)
        check(got_array.shape == expected_array.shape,
              f"{what} has shape {list(got_array.shape)}, expected {list(expected_array.shape)}",
              expected=expected, got=got, hint=hint)
        equal = bool(np.all(got_array == expected_array))
    else:
        equal = got == expected
    check(equal, f"{what} is wrong", expected=expected, got=got, hint=hint)


def check_close(got, expected, *, what="your answer", rtol=1e-5, atol=1e-8, hint=None):
    """Check that a number, list of numbers, array or tensor equals ``expected`` within tolerance.

    Element-wise ``|got - expected| <= atol + rtol * |expected|`` (NumPy's ``isclose``), after
    checking that the shapes agree. For an array the message names the first wrong entry and how
    many are wrong.
    """
    __tracebackhide__ = True
    _check_not_none(got, expected, what, hint)
    got_array, expected_array = _as_array(got), _as_array(expected).astype(float)
    check(got_array.dtype.kind in "iuf", f"{what} should be a number or an array of numbers, "
          f"not of type {type(got).__name__}", expected=expected, got=got, hint=hint)
    got_array = got_array.astype(float)
    check(got_array.shape == expected_array.shape,
          f"{what} has shape {list(got_array.shape)}, expected {list(expected_array.shape)}",
          expected=expected, got=got, hint=hint)
    close = np.isclose(got_array, expected_array, rtol=rtol, atol=atol)
    if close.all():
        return
    if got_array.ndim == 0:
        raise ExerciseFailed(f"{what} is wrong", expected=expected, got=got, hint=hint)
    first = tuple(int(i) for i in np.argwhere(~close)[0])
    raise ExerciseFailed(
        f"{(~close).sum()} of {close.size} entries of {what} are wrong; the first is "
        f"{what}[{', '.join(map(str, first))}]", expected=expected_array[first].item(),
        got=got_array[first].item(), hint=hint)


def check_function(function, cases, *, compare=check_equal, hint=None):
    """Call the learner's ``function`` on test inputs and compare each result with ``compare``.

    ``cases`` is a list of ``(args, expected)``, ``args`` a tuple of positional arguments (a
    lone argument need not be wrapped in a tuple). ``compare`` is :func:`check_equal` or
    :func:`check_close` (use ``functools.partial`` to change its tolerance). The message shows the
    call that went wrong; a function that still raises ``NotImplementedError`` is reported as not
    written yet, and any other exception as what it is, with the learner's traceback above it.
    """
    __tracebackhide__ = True
    name = getattr(function, "__name__", "your function")
    check(callable(function), f"expected a function, got {_show(function)} of type "
          f"{type(function).__name__}", hint=hint)
    for args, expected in cases:
        args = args if isinstance(args, tuple) else (args,)
        call = f"{name}({', '.join(_repr.repr(a) for a in args)})"
        try:
            # A copy, so that a function that changes its inputs cannot spoil the next case.
            got = function(*copy.deepcopy(args))
        except NotImplementedError:
            raise ExerciseFailed(f"{name} is not written yet: it still raises "
                                 "NotImplementedError. Replace that line with your code.",
                                 hint=hint) from None
        except Exception as error:
            raise ExerciseFailed(f"{call} raised {type(error).__name__}: {error}",
                                 hint=hint) from error
        compare(got, expected, what=call, hint=hint)


# ---------------------------------------------------------------------------------------------
# Chapter 00 — welcome
# ---------------------------------------------------------------------------------------------

def _q(entity_id, answer, relation="capital"):
    return {"entity_id": entity_id, "relation": relation, "answers": [answer]}


@exercise("0.1")
def ch00_majority_answer(majority_answer):
    """Exercise 0.1: the most frequent first answer among questions (ties: alphabetically first)."""
    check_function(majority_answer, [
        ([_q("A", "Africa"), _q("B", "Asia"), _q("C", "Africa")], "Africa"),
        ([_q("A", "Europe")], "Europe"),
        ([_q("A", "Asia"), _q("B", "Africa")], "Africa"),
        ([_q("A", "Oceania"), _q("B", "Asia"), _q("C", "Asia"), _q("D", "Oceania")], "Asia"),
    ], hint="count questions[i]['answers'][0] with collections.Counter; on a tie, return the "
            "alphabetically first answer (sorted() or min() help).")
    return "majority_answer finds the most frequent answer and breaks ties alphabetically."


@exercise("0.2")
def ch00_seen_entity_share(seen_entity_share):
    """Exercise 0.2: the share of test questions whose entity also has a training question."""
    check_function(seen_entity_share, [
        (([_q("A", "x"), _q("B", "y")], [_q("A", "x"), _q("C", "z")]), 0.5),
        (([_q("A", "x")], [_q("B", "y"), _q("B", "y"), _q("C", "z")]), 0.0),
        (([_q("A", "x"), _q("A", "x")], [_q("A", "y")]), 1.0),
    ], compare=check_close,
        hint="collect the training entity ids in a set, then count the test questions whose "
             "'entity_id' is in it and divide by the number of test questions.")
    return ("seen_entity_share is right: a model that memorised the training questions has "
            "never seen the entity of a single test question.")



# ---------------------------------------------------------------------------------------------
# Chapter 01 — sparse retrieval
# ---------------------------------------------------------------------------------------------

def _bm25_weight(tf, df, dl, n_docs, avgdl, k1, b):
    """BM25's weight of one term in one document, Lucene's idf, (k1 + 1) kept: written out here
    so that the check does not depend on the chapter's code."""
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return float(idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)))


def _bm25_slips(tf, df, dl, n_docs, avgdl, k1, b):
    """[(what a common slip computes, the hint that names it)] for one set of arguments."""
    right = _bm25_weight(tf, df, dl, n_docs, avgdl, k1, b)
    lucene_idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    robertson_idf = np.log((n_docs - df + 0.5) / (df + 0.5))
    return [
        (right / (k1 + 1), "the numerator is tf * (k1 + 1): the factor (k1 + 1) is missing."),
        (right / lucene_idf * robertson_idf,
         "Lucene's idf adds 1 inside the logarithm, ln(1 + (N - df + 0.5) / (df + 0.5)); without "
         "it the idf turns negative for terms in more than half of the documents."),
        (right / np.log(10), "use the natural logarithm (math.log or np.log), not log10."),
        (_bm25_weight(tf, df, avgdl, n_docs, dl, k1, b),
         "the length normalisation is 1 - b + b * dl / avgdl, so that a document longer than "
         "average (dl > avgdl) gets a larger denominator and a smaller weight."),
    ]


@exercise("1.1")
def ch01_bm25_term_weight(bm25_term_weight):
    """Exercise 1.1: BM25's weight of a term in a document (Lucene's idf, the (k1 + 1) kept)."""
    cases = [(1, 10, 20, 1000, 25.0, 1.2, 0.75), (3, 500, 40, 1000, 25.0, 1.2, 0.75),
             (2, 1, 10, 50, 10.0, 0.0, 0.5), (5, 999, 100, 1000, 50.0, 2.0, 1.0),
             (1, 3, 25, 100, 25.0, 1.2, 0.0)]
    for args in cases:
        try:
            got = bm25_term_weight(*args)
        except Exception:
            break  # check_function reports the exception with its input
        if not isinstance(got, numbers.Real) or np.isclose(got, _bm25_weight(*args)):
            continue
        for slip, hint in _bm25_slips(*args):
            if np.isclose(got, slip, rtol=1e-6):
                raise ExerciseFailed(f"bm25_term_weight{args} is wrong",
                                     expected=_bm25_weight(*args), got=got, hint=hint)
        break
    check_function(bm25_term_weight, [(args, _bm25_weight(*args)) for args in cases],
                   compare=check_close,
                   hint="idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), with "
                        "idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)).")
    return f"bm25_term_weight matches BM25 on {len(cases)} cases, k1 = 0 and b = 0 included."


@exercise("1.2")
def ch01_precision_at_k(precision_at_k):
    """Exercise 1.2: precision@k of a ranking."""
    cases = [(([3, 1, 2], {1}, 2), 0.5), (([3, 1, 2], {4}, 3), 0.0), (([5], {5}, 1), 1.0),
             (([7, 8, 9, 10], {7, 9, 11}, 4), 0.5), (([5], {5}, 2), 0.5)]
    for (ranking, relevant, k), expected in cases:
        got = precision_at_k(list(ranking), set(relevant), k)
        recall = len(set(ranking[:k]) & relevant) / len(relevant)
        if (isinstance(got, numbers.Real) and np.isclose(got, recall)
                and not np.isclose(got, expected)):
            raise ExerciseFailed(f"precision_at_k({ranking}, {relevant}, {k}) is wrong",
                                 expected=expected, got=got,
                                 hint="that is recall@k: precision@k divides by k, not by the "
                                      "number of relevant documents.")
    check_function(precision_at_k, cases, compare=check_close,
                   hint="precision@k divides by k, not by the number of relevant documents, even "
                        "when the ranking is shorter than k (an empty slot is a miss).")
    return f"precision_at_k is right on {len(cases)} rankings."


def _ndcg(ranking, grades, k, gain=lambda g: g, ideal_from_ranking=False, normalise=True):
    """nDCG@k written out for the check, and the slips it diagnoses: another gain, an ideal
    ranking built only from the retrieved documents, or DCG left undivided."""
    discounts = 1 / np.log2(np.arange(2, k + 2))
    dcg = sum(gain(grades.get(doc, 0)) * discounts[i] for i, doc in enumerate(ranking[:k]))
    pool = [grades.get(doc, 0) for doc in ranking] if ideal_from_ranking else grades.values()
    ideal = sorted(pool, reverse=True)[:k]
    idcg = sum(gain(g) * discounts[i] for i, g in enumerate(ideal)) if normalise else 1.0
    return float(dcg / idcg) if idcg else float("nan")


@exercise("1.3")
def ch01_ndcg_at_k(ndcg_at_k):
    """Exercise 1.3: nDCG@k with graded relevance and the linear gain."""
    cases = [(["a", "b", "c"], {"a": 1}, 3), (["b", "a", "c"], {"a": 1}, 3),
             (["c", "b", "a"], {"a": 3, "b": 1}, 2),
             (["a", "b", "c", "d"], {"d": 2, "b": 1, "c": 0}, 4),
             (["x", "y", "z"], {"a": 2, "y": 1}, 3), (["x", "y"], {"a": 2, "b": 2}, 2)]
    slips = [({"normalise": False}, "that is DCG@k; nDCG@k divides it by IDCG@k, the DCG@k of "
                                    "the ideal ranking."),
             ({"gain": lambda g: 2 ** g - 1},
              "this chapter's nDCG uses the linear gain g(d) = grade, not 2**grade - 1."),
             ({"ideal_from_ranking": True},
              "the ideal ranking orders *all* judged documents by grade, including relevant ones "
              "the ranking missed; IDCG does not depend on the ranking.")]
    for ranking, grades, k in cases:
        try:
            got = ndcg_at_k(list(ranking), dict(grades), k)
        except Exception:
            break  # check_function reports the exception with its input
        expected = _ndcg(ranking, grades, k)
        if not isinstance(got, numbers.Real) or np.isclose(got, expected):
            continue
        for options, hint in slips:
            if np.isclose(got, _ndcg(ranking, grades, k, **options)):
                raise ExerciseFailed(f"ndcg_at_k({ranking}, {grades}, {k}) is wrong",
                                     expected=expected, got=got, hint=hint)
        break
    check_function(ndcg_at_k, [((r, g, k), _ndcg(r, g, k)) for r, g, k in cases],
                   compare=check_close,
                   hint="DCG@k = sum over ranks i = 1..k of grade(d_i) / log2(i + 1) (rank 1 is "
                        "not discounted); divide by the DCG@k of the ideal ranking.")
    return f"ndcg_at_k is right on {len(cases)} rankings, graded and binary."


def _contains(tokens, phrase):
    """Whether the token list ``phrase`` occurs, contiguously, in ``tokens``."""
    return any(tokens[i:i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))


@exercise("1.4")
def ch01_expand_query(expand_query, min_recall_at_1=0.5, max_plain_drop=0.02):
    """Exercise 1.4: query expansion by hand against vocabulary mismatch.

    ``expand_query(question) -> str`` may add words to a question, never the answer's. The check
    retrieves with BM25 (the chapter's retriever: title + text, Lucene, k1 = 1.2, b = 0.75) for the
    development questions and requires Recall@1 on the vocabulary-mismatch ones of at least
    ``min_recall_at_1``, while Recall@1 on the others falls by at most ``max_plain_drop``.
    """
    # Imported here, so that importing the checks does not load the knowledge base.
    from ragtutor.data import load_passages, load_questions
    from ragtutor.sparse import BM25Retriever
    from ragtutor.text import tokenize

    passages, dev = load_passages(), load_questions("dev")
    bm25 = BM25Retriever().fit([f"{p['title']} {p['text']}" for p in passages])
    ids = [p["id"] for p in passages]

    def recall_at_1(questions, queries):
        top = bm25.search(queries, 1)[1][:, 0]
        return float(np.mean([ids[i] == q["passage_id"] for i, q in zip(top, questions)]))

    expanded = {}
    for q in dev:
        try:
            query = expand_query(q["question"])
        except NotImplementedError:
            raise ExerciseFailed("expand_query is not written yet: it still raises "
                                 "NotImplementedError. Replace that line with your code.") from None
        check(isinstance(query, str), f"expand_query({q['question']!r}) should return a string",
              got=query)
        check(set(tokenize(q["question"])) <= set(tokenize(query)),
              f"expand_query({q['question']!r}) dropped words of the question",
              expected=f"every word of {q['question']!r}, and more", got=query,
              hint="expansion only adds words; keep the question as it is and append to it.")
        leaked = [answer for answer in q["answers"]
                  if _contains(tokenize(query), tokenize(answer))
                  and not _contains(tokenize(q["question"]), tokenize(answer))]
        if leaked:
            raise ExerciseFailed(f"expand_query({q['question']!r}) adds the answer {leaked[0]!r}",
                                 got=query, hint="a retriever that is told the answer is not "
                                 "retrieving; add words that say what is asked (the relation), "
                                 "not the answer.")
        expanded[q["id"]] = query
    scores = {}
    for mismatch in (True, False):
        questions = [q for q in dev if q["mismatch"] == mismatch]
        scores[mismatch] = (recall_at_1(questions, [q["question"] for q in questions]),
                            recall_at_1(questions, [expanded[q["id"]] for q in questions]))
    (before, after), (plain_before, plain_after) = scores[True], scores[False]
    check(after >= min_recall_at_1,
          f"Recall@1 on the vocabulary-mismatch questions is {after:.3f} with your expansion "
          f"({before:.3f} without); it should reach {min_recall_at_1}",
          expected=f">= {min_recall_at_1}", got=round(after, 3),
          hint="print the mismatched questions that still fail and the aspect of their gold "
               "passage; map their question words to the words those passages use (money -> "
               "currency, tongue -> language, ...).")
    check(plain_after >= plain_before - max_plain_drop,
          f"your expansion hurts the other questions: Recall@1 {plain_before:.3f} -> "
          f"{plain_after:.3f}", expected=f">= {plain_before - max_plain_drop:.3f}",
          got=round(plain_after, 3),
          hint="expand only the words that signal a mismatch; an added word that many passages "
               "share pulls the wrong ones up.")
    return (f"Recall@1 on the vocabulary-mismatch questions {before:.3f} -> {after:.3f}; on the "
            f"others {plain_before:.3f} -> {plain_after:.3f}.")
