"""The checks of chapter 01's exercises (sparse retrieval)."""
import numbers

import numpy as np

from ragtutor.exercises.checks import ExerciseFailed, check, check_close, check_function, exercise

__all__ = ["ch01_bm25_term_weight", "ch01_precision_at_k", "ch01_ndcg_at_k", "ch01_expand_query"]


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
    ``min_recall_at_1``, while Recall@1 on the others falls by at most ``max_plain_drop``. It
    also reports, without a threshold, what the expansion does to the development questions in
    new phrasings.
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
    # The same expansion on the development questions in new phrasings (worded as no training
    # question is, ``load_questions("dev", phrasing="new")``): what a hand-made table is worth
    # on wordings its author did not see.
    new = load_questions("dev", phrasing="new")
    new_mismatch = [q for q in new if q["mismatch"]]
    new_scores = [(recall_at_1(qs, [q["question"] for q in qs]),
                   recall_at_1(qs, [str(expand_query(q["question"])) for q in qs]))
                  for qs in (new, new_mismatch)]
    return (f"Recall@1 on the vocabulary-mismatch questions {before:.3f} -> {after:.3f}; on the "
            f"others {plain_before:.3f} -> {plain_after:.3f}. In new phrasings: all {len(new)} "
            f"questions {new_scores[0][0]:.3f} -> {new_scores[0][1]:.3f}, the "
            f"{len(new_mismatch)} vocabulary-mismatch ones {new_scores[1][0]:.3f} -> "
            f"{new_scores[1][1]:.3f}.")
