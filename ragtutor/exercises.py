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


# ---------------------------------------------------------------------------------------------
# Chapter 02 — dense retrieval
# ---------------------------------------------------------------------------------------------

def _in_batch_loss(q, p):
    """DPR's in-batch-negatives loss written out one question at a time, for the check."""
    losses = []
    for i in range(len(q)):
        scores = p @ q[i]
        losses.append(np.logaddexp.reduce(scores) - scores[i])
    return float(np.mean(losses))


@exercise("2.1")
def ch02_symmetric_loss(symmetric_loss):
    """Exercise 2.1: the in-batch loss in both directions, questions -> passages and back."""
    import torch

    rng = np.random.default_rng(21)
    cases = []
    for b, h in [(4, 3), (6, 5), (2, 2), (5, 4)]:
        q, p = rng.normal(size=(b, h)), 2 * rng.normal(size=(b, h))
        cases.append(((torch.tensor(q), torch.tensor(p)), (_in_batch_loss(q, p) + _in_batch_loss(p, q)) / 2))
    for (q, p), expected in cases:
        try:
            got = float(symmetric_loss(q.clone(), p.clone()))
        except Exception:
            break  # check_function reports the exception, or the answer that is not a number
        if np.isclose(got, expected):
            continue
        forward, backward = _in_batch_loss(q.numpy(), p.numpy()), _in_batch_loss(p.numpy(), q.numpy())
        for slip, hint in ((forward, "that is only the question -> passage direction (the rows "
                                     "of S); add the passage -> question one (the columns)."),
                           (backward, "that is only the passage -> question direction; add the "
                                      "question -> passage one."),
                           (forward + backward, "average the two directions: divide their sum by 2."),
                           (len(q) * (forward + backward) / 2,
                            "average the per-example losses over the batch; do not sum them.")):
            if np.isclose(got, slip):
                raise ExerciseFailed(f"symmetric_loss(q, p of shape {list(q.shape)}) is wrong",
                                     expected=expected, got=got, hint=hint)
        break
    check_function(symmetric_loss, cases, compare=check_close,
                   hint="with S = q @ p.T, average cross_entropy(S, targets) and "
                        "cross_entropy(S.T, targets), targets = 0..B-1.")
    return f"symmetric_loss is right on {len(cases)} batches."


def _rrf(rankings, n_docs, k):
    fused = np.zeros(n_docs)
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] += 1 / (k + rank)
    return fused


@exercise("2.2")
def ch02_rrf_scores(rrf_scores):
    """Exercise 2.2: reciprocal rank fusion of several rankings of one query."""
    cases = [([[2, 0, 1], [0, 3]], 5, 60), ([[1, 0]], 2, 60), ([[0, 1, 2], [2, 1, 0], [1]], 4, 1),
             ([[3], [3]], 4, 10)]
    for rankings, n_docs, k in cases:
        try:
            got = rrf_scores([list(r) for r in rankings], n_docs, k)
        except Exception:
            break
        expected = _rrf(rankings, n_docs, k)
        if np.shape(got) != expected.shape or np.allclose(got, expected):
            continue
        zero_based = np.zeros(n_docs)
        for ranking in rankings:
            for rank, doc in enumerate(ranking):
                zero_based[doc] += 1 / (k + rank)
        if np.allclose(got, zero_based):
            raise ExerciseFailed(f"rrf_scores({rankings}, {n_docs}, {k}) is wrong", expected=expected,
                                 got=got, hint="ranks count from 1: the first document of a "
                                               "ranking gets 1 / (k + 1), not 1 / k.")
        break
    check_function(rrf_scores, [((r, n, k), _rrf(r, n, k)) for r, n, k in cases],
                   compare=check_close,
                   hint="RRF(d) = sum over rankings of 1 / (k + rank of d), ranks counted from 1; "
                        "a document absent from a ranking gets nothing from it, and one absent "
                        "from all of them scores 0.")
    return f"rrf_scores fuses {len(cases)} sets of rankings correctly."


@exercise("2.3")
def ch02_mean_pool(mean_pool):
    """Exercise 2.3: mean pooling of token vectors that skips the padding."""
    import torch

    rng = np.random.default_rng(23)
    cases = []
    for lengths, width, h in [([3, 1], 4, 2), ([5, 5], 5, 3), ([2, 4, 1], 6, 4)]:
        hidden = rng.normal(size=(len(lengths), width, h))
        mask = np.array([[1] * n + [0] * (width - n) for n in lengths])
        expected = np.stack([hidden[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
        cases.append(((torch.tensor(hidden), torch.tensor(mask)), expected))
    (hidden, mask), expected = cases[0]
    try:
        got = mean_pool(hidden.clone(), mask.clone())
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and hasattr(got, "shape") and tuple(got.shape) == expected.shape:
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
        everything = hidden.numpy().mean(axis=1)
        masked_sum_over_width = (hidden.numpy() * mask.numpy()[..., None]).sum(1) / mask.shape[1]
        for slip, hint in ((everything, "the padding positions are averaged in too: multiply by "
                                        "the mask before summing."),
                           (masked_sum_over_width, "divide by the number of real tokens "
                                                   "(mask.sum(1)), not by the padded length.")):
            if np.allclose(got, slip) and not np.allclose(got, expected):
                raise ExerciseFailed("mean_pool(hidden of shape [2, 4, 2], mask) is wrong",
                                     expected=expected, got=got, hint=hint)
    check_function(mean_pool, cases, compare=check_close,
                   hint="sum(hidden * mask[..., None], dim=1) / mask.sum(dim=1, keepdim=True): "
                        "the mean of each row's real tokens, of shape [B, H].")
    return f"mean_pool averages only the real tokens, on {len(cases)} padded batches."


# ---------------------------------------------------------------------------------------------
# Chapter 03 — seq2seq generation
# ---------------------------------------------------------------------------------------------

def _ch03_labels():
    """Label batches with -100 padding, as ragtutor.generation.encode_pairs makes them."""
    import torch

    return [torch.tensor([[17, 42, 2]]), torch.tensor([[5, 2, -100, -100], [7, 8, 9, 2]]),
            torch.tensor([[2], [2]])]


@exercise("3.1")
def ch03_shift_right(shift_right):
    """Exercise 3.1: teacher forcing's decoder input, the labels shifted one step to the right."""
    import torch

    def expected(labels, start_id, pad_id):  # written out here, independent of the chapter
        shifted = torch.cat([torch.full_like(labels[:, :1], start_id), labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, pad_id)

    cases = [(labels, 1, 0) for labels in _ch03_labels()] + [(_ch03_labels()[1], 2, 9)]
    for labels, start_id, pad_id in cases:
        right = expected(labels, start_id, pad_id)
        try:
            got = shift_right(labels.clone(), start_id, pad_id)
            values = _as_array(got)
        except Exception:
            break  # check_function reports it with its input
        if values.shape != tuple(labels.shape) or np.array_equal(values, right.numpy()):
            continue
        if (values == -100).any():
            raise ExerciseFailed("the decoder input still holds -100", expected=right, got=got,
                                 hint="-100 only tells the loss to skip a position; it is not a "
                                      "token id. Replace it by pad_id after shifting.")
        if np.array_equal(values[:, -1], labels[:, -1].numpy()):
            raise ExerciseFailed("the last label is still in the decoder input", expected=right,
                                 got=got, hint="shift to the right: the decoder reads the start "
                                               "token first and never reads the last label, which "
                                               "it only predicts.")
        break
    check_function(shift_right, [((labels, start_id, pad_id), expected(labels, start_id, pad_id))
                                 for labels, start_id, pad_id in cases],
                   hint="put start_id in front, drop the last column, then replace -100 by pad_id.")
    return ("shift_right builds the decoder input of teacher forcing, the same as Hugging Face's "
            "shift_tokens_right.")


@exercise("3.2")
def ch03_beam_step(beam_step):
    """Exercise 3.2: one step of beam search over n beams and a vocabulary of V tokens."""
    import torch

    generator = torch.Generator().manual_seed(3)
    cases = []
    for n, vocab, k in [(1, 6, 3), (3, 5, 3), (2, 7, 4)]:
        scores = -torch.rand(n, generator=generator) * 3
        log_probs = torch.log_softmax(torch.randn(n, vocab, generator=generator) * 2, dim=-1)
        cases.append((scores, log_probs, k))

    def expected(scores, log_probs, k):
        totals = (scores[:, None] + log_probs).flatten()
        best, index = totals.topk(k)
        return [divmod(int(i), log_probs.shape[1]) + (float(s),) for s, i in zip(best, index)]

    def as_triples(got):
        return [(int(b), int(t), float(s)) for b, t, s in zip(*got)]

    for scores, log_probs, k in cases:
        try:
            got = as_triples(beam_step(scores.clone(), log_probs.clone(), k))
        except Exception:
            break
        right = expected(scores, log_probs, k)
        if [g[:2] for g in got] == [r[:2] for r in right]:
            continue
        per_beam = [(b, t) for b in range(len(scores))
                    for t in log_probs[b].topk(k).indices.tolist()]
        unscored = expected(torch.zeros_like(scores), log_probs, k)
        if [g[:2] for g in got] == [r[:2] for r in unscored]:
            hint = ("a candidate's score is its beam's score plus the token's log-probability: "
                    "add scores[:, None] before ranking.")
        elif set(g[:2] for g in got) <= set(per_beam) and len(scores) > 1:
            hint = ("rank all n * V candidates together (flatten them), not the top k of each beam "
                    "separately.")
        else:
            hint = ("flatten the [n, V] totals, take topk(k), and recover beam = i // V and "
                    "token = i % V.")
        raise ExerciseFailed(f"beam_step picks the wrong candidates for {len(scores)} beams and "
                             f"k={k}", expected=[r[:2] for r in right], got=[g[:2] for g in got],
                             hint=hint)
    for scores, log_probs, k in cases:
        got = beam_step(scores.clone(), log_probs.clone(), k)
        check(isinstance(got, tuple) and len(got) == 3,
              "beam_step must return three things: (beam ids, token ids, scores)", got=got)
        check_close([s for *_, s in as_triples(got)],
                    [s for *_, s in expected(scores, log_probs, k)],
                    what="the scores beam_step returns", rtol=1e-5,
                    hint="return the summed scores of the chosen candidates, best first.")
    return "beam_step ranks all n x V extensions by their summed log-probability."


@exercise("3.3")
def ch03_sequence_log_prob(sequence_log_prob):
    """Exercise 3.3: log p(y | x) = sum_t log p(y_t | x, y_<t) from logits [B, T, V] and labels."""
    import torch

    generator = torch.Generator().manual_seed(0)
    cases = []
    for labels in _ch03_labels():
        logits = torch.randn(*labels.shape, 50, generator=generator) * 3
        log_probs = torch.log_softmax(logits, dim=-1)
        mask = labels != -100
        picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        cases.append((logits, labels, (picked * mask).sum(1), (picked * mask).sum(1) / mask.sum(1),
                      (logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask).sum(1),
                      picked.sum(1)))
    for logits, labels, right, mean, raw, unmasked in cases:
        try:
            got = _as_array(sequence_log_prob(logits.clone(), labels.clone())).astype(float)
        except Exception:
            break
        if got.shape != tuple(right.shape) or np.allclose(got, right.numpy(), rtol=1e-4):
            continue
        for slip, hint in [(mean, "sum over the answer's tokens; the model's loss takes the mean, "
                                  "but log p(y | x) is a sum."),
                           (raw, "turn the logits into log-probabilities first: "
                                 "torch.log_softmax(logits, dim=-1)."),
                           (unmasked, "the positions where labels == -100 are padding, not part "
                                      "of the answer: leave them out of the sum.")]:
            if np.allclose(got, slip.numpy(), rtol=1e-4):
                raise ExerciseFailed("sequence_log_prob is wrong", expected=right, got=got,
                                     hint=hint)
        break
    check_function(sequence_log_prob,
                   [((logits, labels), right) for logits, labels, right, *_ in cases],
                   compare=functools.partial(check_close, rtol=1e-4, atol=1e-5),
                   hint="log_softmax over V, gather each label's log-probability, zero the "
                        "positions where labels == -100, and sum over T.")
    return ("sequence_log_prob gives log p(y | x), the quantity chapter 04 sums over retrieved "
            "documents.")


# ---------------------------------------------------------------------------------------------
# Chapter 04 — the RAG likelihood
# ---------------------------------------------------------------------------------------------

def _log_prior(scores):
    """log p(d_k|x) = s_k - log Σ_j exp(s_j), written out for the checks (NumPy, float64)."""
    scores = np.asarray(scores, dtype=float)
    return scores - np.logaddexp.reduce(scores)


def _rag_sequence_ll(token_logprobs, scores):
    """log Σ_k p(d_k|x) Π_t p(y_t|x,d_k,y_<t) from per-token log-probs ``[K, T]``."""
    return float(np.logaddexp.reduce(_log_prior(scores) + np.asarray(token_logprobs).sum(1)))


def _ch04_problems(seed):
    """Per-token log-probs ``[K, T]`` and scores ``[K]`` as float64 tensors: an ordinary problem, a
    long answer whose probability underflows, scores of ±1e4, and a single document."""
    import torch

    rng = np.random.default_rng(seed)

    def log_softmax_rows(k, t):
        logits = 2 * rng.normal(size=(k, t, 6))
        return (logits - np.logaddexp.reduce(logits, axis=2, keepdims=True))[:, :, 0]

    problems = [(log_softmax_rows(3, 4), rng.normal(size=3)),
                (np.full((2, 400), np.log(0.05)) + 0.01 * rng.normal(size=(2, 400)),
                 np.array([0.5, -0.2])),
                (log_softmax_rows(3, 5), np.array([1e4, -1e4, 1e4 - 1.0])),
                (log_softmax_rows(1, 3), np.array([2.0]))]
    return [(torch.tensor(lp), torch.tensor(s)) for lp, s in problems]


@exercise("4.1")
def ch04_rag_sequence_log_likelihood(rag_sequence_log_likelihood):
    """Exercise 4.1: RAG-Sequence log p(y|x) from per-token log-probs, in log space."""
    problems = _ch04_problems(41)
    cases = [((lp, s), _rag_sequence_ll(lp.numpy(), s.numpy())) for lp, s in problems]
    for (lp, s), expected in cases:
        try:
            got = float(rag_sequence_log_likelihood(lp.clone(), s.clone()))
        except Exception:
            break  # check_function reports the exception, or an answer that is not a number
        if np.isclose(got, expected):
            continue
        lp_np, s_np = lp.numpy(), s.numpy()
        shape = f"token_logprobs of shape {list(lp.shape)}, doc_scores {s_np.round(2).tolist()}"
        check(np.isfinite(got), f"rag_sequence_log_likelihood({shape}) is not finite",
              expected=expected, got=got,
              hint="exp() of a sum of 400 log-probabilities underflows to 0, and exp(1e4) "
                   "overflows: stay in log space, log p(y|x) = logsumexp_k(log p(d_k|x) + "
                   "Σ_t log p(y_t|...)), with torch.logsumexp and torch.log_softmax.")
        slips = [
            (float(np.logaddexp.reduce(s_np + lp_np.sum(1))),
             "the scores are not log-probabilities: the prior is log p(d_k|x) = log_softmax(s)_k."),
            (float(np.sum(np.logaddexp.reduce(_log_prior(s_np)[:, None] + lp_np, axis=0))),
             "that is RAG-Token (a mixture for every token); RAG-Sequence mixes whole answers: "
             "sum over t inside, logsumexp over k outside."),
            (float(np.max(_log_prior(s_np) + lp_np.sum(1))),
             "the marginal sums over documents (logsumexp), it does not take the best one (max)."),
        ]
        for slip, hint in slips:
            if np.isclose(got, slip):
                raise ExerciseFailed(f"rag_sequence_log_likelihood({shape}) is wrong",
                                     expected=expected, got=got, hint=hint)
        break
    check_function(rag_sequence_log_likelihood, cases, compare=check_close,
                   hint="log p(y|x) = logsumexp_k( log_softmax(s)_k + Σ_t token_logprobs[k, t] ).")
    return (f"log p(y|x) is right on {len(cases)} problems, a 400-token answer and scores of "
            "±1e4 included.")


def _rag_token_ll_torch(token_logprobs, scores):
    import torch

    prior = torch.log_softmax(scores, dim=0)
    return torch.logsumexp(prior[:, None] + token_logprobs, dim=0).sum()


@exercise("4.2")
def ch04_rag_token_score_gradient(rag_token_score_gradient):
    """Exercise 4.2: ∂ log p(y|x) / ∂ s_k for RAG-Token, without autograd."""
    import torch

    cases = []
    for lp, s in _ch04_problems(42):
        s = s.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(_rag_token_ll_torch(lp, s), s)
        cases.append(((lp, s.detach()), gradient.numpy()))
    lp, s = cases[0][0]
    try:
        got = rag_token_score_gradient(lp.clone(), s.clone())
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == cases[0][1].shape and not np.allclose(got, cases[0][1]):
        lp_np, s_np = lp.numpy(), s.numpy()
        prior = np.exp(_log_prior(s_np))
        joint = np.log(prior)[:, None] + lp_np  # [K, T]
        per_token = np.exp(joint - np.logaddexp.reduce(joint, axis=0))  # p(z_t = k | x, y)
        whole = np.exp(np.log(prior) + lp_np.sum(1) - _rag_sequence_ll(lp_np, s_np))
        slips = [(whole - prior, "that is RAG-Sequence's gradient, posterior minus prior over "
                                 "whole answers; RAG-Token has one latent document per token."),
                 (per_token.sum(1) - prior, "each of the T tokens contributes its own "
                                            "-p(d_k|x): the prior term is T * p(d_k|x)."),
                 (per_token.sum(1), "differentiate log p(d_k|x) = s_k - logsumexp(s) too: it "
                                    "brings -p(d_k|x) for every token.")]
        for slip, hint in slips:
            if np.allclose(got, slip):
                raise ExerciseFailed("rag_token_score_gradient(token_logprobs of shape [3, 4], "
                                     "doc_scores) is wrong", expected=cases[0][1], got=got,
                                     hint=hint)
    check_function(rag_token_score_gradient, cases, compare=check_close,
                   hint="∂/∂s_k Σ_t log Σ_j p(d_j|x) p(y_t|x,d_j,y_<t) = Σ_t [p(z_t=k|x,y) - "
                        "p(d_k|x)], with p(z_t=k|x,y) the softmax over k of log p(d_k|x) + "
                        "token_logprobs[k, t].")
    return ("your gradient equals autograd's on 4 problems: the retriever moves toward the "
            "documents that explain each token.")


def _fast_decode(beams, scores, use_prior=True, combine="sum"):
    """Fast decoding written out: the best answer and its score log Σ_{k: y in beam k} p(d_k|x)
    p(y|x,d_k), and the slips it diagnoses (no prior, max over documents)."""
    log_prior = _log_prior(scores) if use_prior else np.zeros(len(beams))
    terms = {}
    for k, beam in enumerate(beams):
        for answer, log_p in beam.items():
            terms.setdefault(answer, []).append(log_prior[k] + log_p)
    reduce = np.logaddexp.reduce if combine == "sum" else np.max
    totals = {answer: float(reduce(values)) for answer, values in terms.items()}
    best = min(totals, key=lambda a: (-totals[a], a))
    return best, totals[best]


@exercise("4.3")
def ch04_fast_decode(fast_decode):
    """Exercise 4.3: RAG-Sequence fast decoding from each document's beam."""
    problems = [  # (each document's beam as {answer: p(answer|x,d_k)}, the doc scores)
        ([{"Paris": 0.5, "Lyon": 0.4}, {"Lyon": 0.3, "Nice": 0.6}], [0.0, 0.0]),
        ([{"Paris": 0.5, "Lyon": 0.1}, {"Rome": 0.9, "Lyon": 0.2}], [float(np.log(4.0)), 0.0]),
        ([{"Bern": 0.7}], [3.0]),
        ([{"Rome": 0.2, "Milan": 0.1}, {"Milan": 0.3}, {"Turin": 0.45}], [0.0, 0.5, -0.5]),
    ]
    problems = [([{answer: float(np.log(p)) for answer, p in beam.items()} for beam in beams],
                 scores) for beams, scores in problems]
    cases = [((beams, scores), _fast_decode(beams, scores)) for beams, scores in problems]
    slips = [({"use_prior": False}, "weight each document's p(y|x,d_k) by its prior p(d_k|x) = "
                                    "softmax(doc_scores)_k."),
             ({"combine": "max"}, "fast decoding *sums* p(d_k|x) p(y|x,d_k) over the documents "
                                  "whose beam holds y (logsumexp in log space), not the max.")]
    for (beams, scores), expected in cases:
        try:
            got = fast_decode(copy.deepcopy(beams), list(scores))
        except Exception:
            break  # check_function reports the exception with its input
        check(isinstance(got, tuple) and len(got) == 2,
              f"fast_decode should return a pair (answer, log score), got {_show(got)}")
        if got[0] == expected[0]:
            continue
        for options, hint in slips:
            if got[0] == _fast_decode(beams, scores, **options)[0]:
                raise ExerciseFailed(f"fast_decode({beams}, {list(scores)}) picks the wrong answer",
                                     expected=expected, got=got, hint=hint)
        break

    def compare(got, expected, what, hint):
        __tracebackhide__ = True
        check(isinstance(got, tuple) and len(got) == 2,
              f"{what} should return a pair (answer, log score)", expected=expected, got=got)
        check_equal(got[0], expected[0], what=f"the answer of {what}", hint=hint)
        check_close(got[1], expected[1], what=f"the log score of {what}", hint=hint)

    check_function(fast_decode, cases, compare=compare,
                   hint="score(y) = logsumexp over the documents k whose beam holds y of "
                        "log_softmax(doc_scores)_k + beams[k][y]; an answer missing from a beam "
                        "gets nothing from that document.")
    return f"fast_decode picks the right answer, with its score, on {len(cases)} problems."


# ---------------------------------------------------------------------------------------------
# Chapter 05 — joint training
# ---------------------------------------------------------------------------------------------

def _ch05_gradient_problems(seed):
    """Per-document answer log-likelihoods log p(y|x,d_k) and scores s_k, both ``[B, K]``."""
    import torch

    rng = np.random.default_rng(seed)
    return [(torch.tensor(-3 * rng.random((b, k))), torch.tensor(2 * rng.normal(size=(b, k))))
            for b, k in ((2, 3), (4, 5), (1, 4))]


def _ch05_gradient(answer_logliks, doc_scores):
    """d/ds of the batch's mean RAG-Sequence loss, by autograd."""
    import torch

    scores = doc_scores.clone().requires_grad_(True)
    loss = -torch.logsumexp(torch.log_softmax(scores, 1) + answer_logliks, 1).mean()
    (gradient,) = torch.autograd.grad(loss, scores)
    return gradient.numpy()


@exercise("5.1")
def ch05_retriever_gradient(retriever_gradient):
    """Exercise 5.1: the gradient a batch's RAG-Sequence loss sends to the document scores."""
    cases = [((lp, s), _ch05_gradient(lp, s)) for lp, s in _ch05_gradient_problems(51)]
    (lp, s), expected = cases[0]
    try:
        got = _as_array(retriever_gradient(lp.clone(), s.clone())).astype(float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.allclose(got, expected):
        b = s.shape[0]
        prior = np.exp(_log_prior(s.numpy().T).T)
        joint = np.log(prior) + lp.numpy()
        posterior = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
        likelihood = np.exp(lp.numpy() - np.logaddexp.reduce(lp.numpy(), axis=1, keepdims=True))
        slips = [((posterior - prior) / b, "that is the gradient of the log-likelihood; the loss "
                                           "is its negative, so the sign flips."),
                 (prior - posterior, "the loss is the mean over the batch: divide by B."),
                 ((prior - likelihood) / b, "the posterior weighs each document's likelihood by "
                                            "its prior: p(d_k|x,y) ∝ p(d_k|x) p(y|x,d_k).")]
        for slip, hint in slips:
            if np.allclose(got, slip):
                raise ExerciseFailed(f"retriever_gradient(answer_logliks [{b}, {s.shape[1]}], "
                                     "doc_scores) is wrong", expected=expected, got=got, hint=hint)
    check_function(retriever_gradient, cases, compare=check_close,
                   hint="∂L/∂s_bk = (p(d_k|x_b) - p(d_k|x_b,y_b)) / B, prior = softmax over k of "
                        "doc_scores, posterior = softmax over k of log prior + answer_logliks.")
    return ("your gradient equals autograd's on 3 batches: each score moves by prior minus "
            "posterior, so a document that explains the answer better than the retriever "
            "expected is pulled up.")


def _stale(question_vectors, old, new, k, as_sets=True):
    q, old, new = (np.asarray(a, dtype=float) for a in (question_vectors, old, new))
    top_old = np.argsort(-(q @ old.T), axis=1, kind="stable")[:, :k]
    top_new = np.argsort(-(q @ new.T), axis=1, kind="stable")[:, :k]
    if as_sets:
        return float(np.mean([set(a) != set(b) for a, b in zip(top_old, top_new)]))
    return float(np.mean([list(a) != list(b) for a, b in zip(top_old, top_new)]))


def _ch05_stale_problems(seed):
    rng = np.random.default_rng(seed)
    problems = []
    for n_q, n_p, h, k, drift in ((6, 8, 4, 3, 0.3), (20, 30, 5, 5, 0.2), (10, 12, 3, 1, 0.5)):
        old = rng.normal(size=(n_p, h))
        problems.append((rng.normal(size=(n_q, h)), old, old + drift * rng.normal(size=(n_p, h)),
                         k))
    return problems


@exercise("5.2")
def ch05_stale_top_k(stale_top_k):
    """Exercise 5.2: how many questions' top-k sets change when the index is rebuilt."""
    cases = [((q, old, new, k), _stale(q, old, new, k)) for q, old, new, k in
             _ch05_stale_problems(52)]
    (q, old, new, k), expected = cases[1]
    try:
        got = stale_top_k(q.copy(), old.copy(), new.copy(), k)
    except Exception:
        got = None  # check_function reports the exception with its input
    if isinstance(got, numbers.Number) and not np.isclose(got, expected):
        slips = [(_stale(q, old, new, k, as_sets=False),
                  "compare the top-k *sets*: RAG marginalises over the K documents, so a "
                  "reordering among them is not a different retrieval."),
                 (_stale(q, old, new, 1),
                  "compare all k documents, not only the best one."),
                 (expected * len(q), "return the share of questions (a number between 0 and 1), "
                                     "not the count.")]
        for slip, hint in slips:
            if np.isclose(got, slip):
                raise ExerciseFailed(f"stale_top_k(20 questions, 30 passages, k={k}) is wrong",
                                     expected=expected, got=got, hint=hint)
    check_function(stale_top_k, cases, compare=check_close,
                   hint="score every passage with q @ vectors.T under each index, take each "
                        "question's k best under each, and count the questions whose two sets "
                        "differ; divide by the number of questions.")
    return ("your count matches on 3 problems: it says how stale an index has become once the "
            "passage encoder has moved.")


# ---------------------------------------------------------------------------------------------
# Chapter 06 — RAG with Hugging Face Transformers
# ---------------------------------------------------------------------------------------------

def _ch06_labels(answer_ids, start_id, end_id, pad_id):
    """Hugging Face RAG's labels written out: <s> y_1 .. y_T </s>, right-padded with pad_id."""
    rows = [[start_id, *ids, end_id] for ids in answer_ids]
    width = max(map(len, rows))
    return np.array([row + [pad_id] * (width - len(row)) for row in rows], dtype=np.int64)


@exercise("6.1")
def ch06_rag_labels(make_labels):
    """Exercise 6.1: the ``labels`` tensor of Hugging Face's RAG models."""
    cases = [(([[17, 4], [9]], 1, 2, 0), _ch06_labels([[17, 4], [9]], 1, 2, 0)),
             (([[5, 6, 7]], 1, 2, 0), _ch06_labels([[5, 6, 7]], 1, 2, 0)),
             (([[3], [8, 8, 8], [4, 5]], 0, 2, 1), _ch06_labels([[3], [8, 8, 8], [4, 5]], 0, 2, 1))]
    args, expected = cases[0]
    try:
        got = make_labels(*copy.deepcopy(args))
        got = np.asarray(got.detach() if hasattr(got, "detach") else got)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.array_equal(got, expected):
        slips = [(np.where(expected == 0, -100, expected),
                  "Hugging Face's RAG models feed the labels to the decoder, so they cannot hold "
                  "-100: pad with pad_id (the loss skips pad_id positions)."),
                 (np.array([[1, 17, 4, 2], [0, 1, 9, 2]]),
                  "pad on the right: the decoder reads the labels from the left, so padding must "
                  "come after the answer.")]
        for slip, hint in slips:
            if got.shape == slip.shape and np.array_equal(got, slip):
                raise ExerciseFailed("make_labels([[17, 4], [9]], 1, 2, 0) is wrong",
                                     expected=expected, got=got, hint=hint)
    if got is not None and got.ndim == 2 and got.shape[1] == expected.shape[1] - 1:
        first_is_start = got.shape[0] == 2 and got[0, 0] == 1
        raise ExerciseFailed("make_labels([[17, 4], [9]], 1, 2, 0) is one position too short",
                             expected=expected, got=got,
                             hint="the labels end with </s> (end_id) — it is what tells the model "
                                  "to stop." if first_is_start else
                                  "the labels begin with the decoder's start token (start_id): "
                                  "Hugging Face's RAG uses them as the decoder's input, unshifted.")
    check_function(make_labels, cases,
                   compare=lambda got, expected, what, hint: check_equal(
                       np.asarray(got.detach() if hasattr(got, "detach") else got).tolist(),
                       expected.tolist(), what=what, hint=hint),
                   hint="each row is [start_id] + answer + [end_id], then pad_id up to the "
                        "longest row.")
    return ("your labels are what RagTokenForGeneration and RagSequenceForGeneration train on, "
            "on 3 batches.")


def _ch06_problems(seed):
    """Per-document logits ``[B*K, T, V]``, scores ``[B, K]`` and right-padded labels ``[B, T]``
    (start id 1, pad id 0) as float64/int64 tensors."""
    import torch

    rng = np.random.default_rng(seed)
    problems = []
    for b, k, t, v in ((2, 3, 5, 7), (3, 2, 4, 6), (1, 4, 6, 9)):
        logits = torch.tensor(2 * rng.normal(size=(b * k, t, v)))
        scores = torch.tensor(rng.normal(size=(b, k)))
        labels = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):
            length = t if row == 0 else int(rng.integers(3, t + 1))
            labels[row, 0] = 1
            labels[row, 1:length] = torch.tensor(rng.integers(2, v, size=length - 1))
        problems.append((logits, scores, labels))
    return problems


def _ch06_token_loss(logits, scores, labels, pad_id=0, shift=True, mask=True, prior=True):
    """RAG-Token's loss the way Hugging Face computes it, written out in NumPy (float64), with
    switches for the slips the check diagnoses."""
    logits, scores, labels = logits.numpy(), scores.numpy(), labels.numpy()
    b, k = scores.shape
    target = np.concatenate([labels[:, 1:], np.full((b, 1), pad_id)], axis=1) if shift else labels
    logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    logprobs = logprobs.reshape(b, k, *logits.shape[1:])
    log_prior = (scores - np.logaddexp.reduce(scores, axis=1, keepdims=True) if prior
                 else np.full((b, k), -np.log(k)))
    losses = []
    for row in range(b):
        total = 0.0
        for t, y in enumerate(target[row]):
            if mask and y == pad_id:
                continue
            total += np.logaddexp.reduce(log_prior[row] + logprobs[row, :, t, y])
        losses.append(-total)
    return np.array(losses)


@exercise("6.2")
def ch06_rag_token_loss(rag_token_loss):
    """Exercise 6.2: RagTokenForGeneration's loss from its per-document logits."""
    cases = [((logits, scores, labels, 0), _ch06_token_loss(logits, scores, labels))
             for logits, scores, labels in _ch06_problems(62)]
    (logits, scores, labels, _), expected = cases[0]
    try:
        got = rag_token_loss(logits.clone(), scores.clone(), labels.clone(), 0)
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.allclose(got, expected):
        slips = [(dict(shift=False), "the labels begin with <s>: the logits at position t "
                                     "predict labels[:, t + 1], so shift the labels left by one "
                                     "(and append a pad) to make the target."),
                 (dict(mask=False), "positions where the target is pad_id are padding: leave "
                                    "them out of the sum."),
                 (dict(prior=False), "weigh each document by its prior p(d_k|x) = "
                                     "softmax(doc_scores)_k, not uniformly.")]
        for options, hint in slips:
            if np.allclose(got, _ch06_token_loss(logits, scores, labels, **options)):
                raise ExerciseFailed("rag_token_loss(logits [6, 5, 7], doc_scores [2, 3], labels "
                                     "[2, 5], 0) is wrong", expected=expected, got=got, hint=hint)
        b, k = scores.shape
        target = np.concatenate([labels.numpy()[:, 1:], np.zeros((b, 1), dtype=np.int64)], axis=1)
        lp = logits.numpy() - np.logaddexp.reduce(logits.numpy(), axis=-1, keepdims=True)
        lp = lp.reshape(b, k, *lp.shape[1:])
        per_doc = np.array([[sum(lp[row, d, t, y] for t, y in enumerate(target[row]) if y != 0)
                             for d in range(k)] for row in range(b)])
        log_prior = scores.numpy() - np.logaddexp.reduce(scores.numpy(), axis=1, keepdims=True)
        if np.allclose(got, -np.logaddexp.reduce(log_prior + per_doc, axis=1)):
            raise ExerciseFailed("rag_token_loss(...) gives RAG-Sequence's loss", expected=expected,
                                 got=got, hint="RAG-Token mixes the documents at every token: "
                                               "logsumexp over k inside, sum over t outside.")
    check_function(rag_token_loss, cases, compare=check_close,
                   hint="target = labels shifted left (pad appended); loss = -Σ_t over non-pad "
                        "targets of logsumexp_k( log_softmax(doc_scores)[k] + "
                        "log_softmax(logits)[b*K + k, t, target_t] ).")
    return ("your loss equals RagTokenForGeneration's formula on 3 batches, padding and the "
            "start token handled.")
