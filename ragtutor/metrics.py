"""Evaluation metrics.

Question answering (every chapter): exact match and token F1 with SQuAD's answer normalisation
(Rajpurkar et al., 2016): lower-case, drop punctuation and the articles a/an/the, squeeze spaces.
A question may have several acceptable answers (aliases); a prediction scores the best over them.

Retrieval (chapter 01 on): recall@k, precision@k, reciprocal rank and MRR, average precision and
nDCG@k with graded relevance (Manning, Raghavan & Schütze, 2008, ch. 8), over ranked lists of
document ids; ``retrieval_scores`` gives a table row of their means.
"""
import collections
import math
import numbers
import re
import string

__all__ = ["normalize_answer", "exact_match", "f1_score", "qa_scores",
           "recall_at_k", "precision_at_k", "reciprocal_rank", "mean_reciprocal_rank",
           "average_precision", "ndcg_at_k", "retrieval_scores", "bootstrap_interval"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """SQuAD normalisation: ``"The  Euro."`` -> ``"euro"``."""
    if not isinstance(text, str):
        raise TypeError(f"an answer must be a string, got {type(text).__name__}: {text!r}")
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_list(answers):
    if isinstance(answers, str):
        return [answers]
    if not hasattr(answers, "__iter__"):
        raise TypeError(f"answers must be a string or a list of acceptable strings, got "
                        f"{type(answers).__name__}: {answers!r}")
    answers = list(answers)
    if not answers:
        raise ValueError("no acceptable answers were given: pass a non-empty list of strings")
    for a in answers:
        if not isinstance(a, str):
            raise TypeError(f"acceptable answers must be strings, got {type(a).__name__}: {a!r}")
    return answers


def _f1(prediction_tokens, answer_tokens):
    common = collections.Counter(prediction_tokens) & collections.Counter(answer_tokens)
    overlap = sum(common.values())
    if not prediction_tokens or not answer_tokens:
        # SQuAD convention: two empty answers agree, an empty one against a non-empty one scores 0.
        return float(prediction_tokens == answer_tokens)
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction, answers):
    """1.0 if the normalised prediction equals any normalised acceptable answer, else 0.0.

    ``answers`` is one string or a non-empty list of strings (all acceptable aliases).
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in _answer_list(answers)))


def f1_score(prediction, answers):
    """Token-overlap F1 between prediction and answer, the best over all acceptable answers."""
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in _answer_list(answers))


def _paired(first, second, first_name, second_name, fix, what="predictions"):
    """Both lists, checked to be the same non-zero length (one item of each per question)."""
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"{len(first)} {first_name} but {len(second)} {second_name}: {fix}")
    if not first:
        raise ValueError(f"no {what} to score: the lists are empty")
    return first, second


def qa_scores(predictions, answers):
    """Mean exact match and F1 over a data set: ``{"em": ..., "f1": ..., "n": ...}``.

    ``predictions`` is a list of strings, ``answers`` a list of the same length whose items are each a
    string or a list of acceptable strings.
    """
    for name, value in (("predictions", predictions), ("answers", answers)):
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise TypeError(f"{name} must be a list (one item per question), got "
                            f"{type(value).__name__}: {value!r}; for one question pass [{name[:-1]}]")
    predictions, answers = _paired(predictions, answers, "predictions", "answer lists",
                                   "pass one list of acceptable answers per prediction")
    em = sum(exact_match(p, a) for p, a in zip(predictions, answers)) / len(predictions)
    f1 = sum(f1_score(p, a) for p, a in zip(predictions, answers)) / len(predictions)
    return {"em": em, "f1": f1, "n": len(predictions)}


# --- Retrieval (chapter 01 on) -------------------------------------------------------------------
#
# Input conventions, shared by every function below. A query's ``retrieved`` is its ranked list of
# document ids, best first, without repeats (a list, tuple or 1-D array; ids are any hashable values
# such as passage ids or corpus positions). Its ``relevant`` ids are a set (or list, tuple) of the
# ids that answer it, or a dict id -> grade for graded relevance (grade 0 = judged not relevant);
# the binary metrics count every id with a positive grade as relevant. Rank i counts from 1.


def _ranking(retrieved, k=None):
    """The first k retrieved ids as a list, after checking that it is a ranking."""
    unordered = (str, bytes, set, frozenset, dict)
    if isinstance(retrieved, unordered) or not hasattr(retrieved, "__len__"):
        raise TypeError(f"retrieved must be a ranked list of ids, best first, got "
                        f"{type(retrieved).__name__}: {retrieved!r}")
    retrieved = list(retrieved)
    try:
        distinct = set(retrieved)
    except TypeError:
        raise TypeError(f"retrieved must be a flat list of ids (one query's ranking), got "
                        f"{retrieved!r}") from None
    if len(distinct) != len(retrieved):
        repeated = next(d for i, d in enumerate(retrieved) if d in retrieved[:i])
        raise ValueError(f"retrieved lists id {repeated!r} more than once: a ranking names each "
                         "document once")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an integer, got {type(k).__name__}: {k!r}")
        if k <= 0:
            raise ValueError(f"k must be at least 1, got k={k}")
        retrieved = retrieved[:k]
    return retrieved


def _grades(relevant):
    """``relevant`` as a dict id -> grade, checked to name at least one relevant id."""
    if isinstance(relevant, dict):
        grades = dict(relevant)
    elif isinstance(relevant, (set, frozenset, list, tuple)):
        grades = dict.fromkeys(relevant, 1)
    else:
        raise TypeError(f"relevant must be a set of ids (or a dict id -> grade), got "
                        f"{type(relevant).__name__}: {relevant!r}; wrap a single id as {{id}}")
    for doc, grade in grades.items():
        if isinstance(grade, bool) or not isinstance(grade, numbers.Real) or not grade >= 0 \
                or not math.isfinite(grade):
            raise ValueError(f"relevance grades must be finite, non-negative numbers, got {grade!r} "
                             f"for id {doc!r}")
    if not any(grade > 0 for grade in grades.values()):
        raise ValueError("no relevant ids were given: every query needs at least one relevant "
                         "document (an id with a positive grade)")
    return grades


def _relevant_set(relevant):
    return {doc for doc, grade in _grades(relevant).items() if grade > 0}


def recall_at_k(retrieved, relevant, k):
    r"""Share of the relevant documents found in the top k:
    :math:`\mathrm{R@}k = |\{d_1..d_k\} \cap R| / |R|`. With one relevant document, 1 if it is in
    the top k, else 0."""
    relevant = _relevant_set(relevant)
    return len(relevant.intersection(_ranking(retrieved, k))) / len(relevant)


def precision_at_k(retrieved, relevant, k):
    r"""Share of the top k that is relevant: :math:`\mathrm{P@}k = |\{d_1..d_k\} \cap R| / k`.

    The denominator is k even when fewer than k ids were retrieved (trec_eval's convention): an
    empty slot is a miss."""
    relevant = _relevant_set(relevant)
    return len(relevant.intersection(_ranking(retrieved, k))) / k


def reciprocal_rank(retrieved, relevant, k=None):
    r"""1 / (rank of the first relevant document), or 0 if none is in the (top k of the) ranking:
    :math:`\mathrm{RR} = 1 / \min\{i : d_i \in R\}`."""
    relevant = _relevant_set(relevant)
    for rank, doc in enumerate(_ranking(retrieved, k), start=1):
        if doc in relevant:
            return 1 / rank
    return 0.0


def average_precision(retrieved, relevant, k=None):
    r"""Mean of the precisions at the ranks of the relevant documents:
    :math:`\mathrm{AP} = \frac{1}{|R|} \sum_{i} \mathrm{P@}i \cdot [d_i \in R]`.

    Relevant documents missing from the (top k of the) ranking contribute precision 0, so AP = 1
    only when every relevant document is ranked above every other. Its mean over queries is MAP."""
    relevant = _relevant_set(relevant)
    hits, total = 0, 0.0
    for rank, doc in enumerate(_ranking(retrieved, k), start=1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def ndcg_at_k(retrieved, relevant, k):
    r"""Normalised discounted cumulative gain (Järvelin & Kekäläinen, 2002), with graded relevance:

    .. math::
        \mathrm{DCG@}k = \sum_{i=1}^{k} \frac{g(d_i)}{\log_2(i + 1)}, \qquad
        \mathrm{nDCG@}k = \frac{\mathrm{DCG@}k}{\mathrm{IDCG@}k}

    g(d) is d's grade (0 when unjudged; 1 for every id of a set), and IDCG@k is the DCG@k of the
    ideal ranking, all judged documents by decreasing grade. The gain is linear in the grade, as
    in trec_eval and scikit-learn's ``ndcg_score``. In [0, 1]; 1 for an ideal top k."""
    grades = _grades(relevant)
    ranking = _ranking(retrieved, k)
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking, 1))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, 1))
    return dcg / idcg


def _runs(retrieved_lists, relevant_lists):
    return _paired(retrieved_lists, relevant_lists, "rankings", "sets of relevant ids",
                   "pass one of each per query", what="queries")


def mean_reciprocal_rank(retrieved_lists, relevant_lists, k=None):
    """MRR: the mean of :func:`reciprocal_rank` over queries (one ranking and one relevant set
    each)."""
    retrieved_lists, relevant_lists = _runs(retrieved_lists, relevant_lists)
    return sum(reciprocal_rank(r, rel, k)
               for r, rel in zip(retrieved_lists, relevant_lists)) / len(retrieved_lists)


def retrieval_scores(retrieved_lists, relevant_lists, ks=(1, 5, 20), ndcg_k=10):
    """Mean retrieval quality over queries, the chapters' table row:
    ``{"recall@1": ..., "recall@5": ..., "recall@20": ..., "mrr": ..., "ndcg@10": ..., "map": ...,
    "n": ...}``.

    ``retrieved_lists`` holds one ranking per query and ``relevant_lists`` one set (or dict of
    grades) per query. MRR and MAP use the whole ranking given, so with top-20 lists they are
    MRR@20 and MAP@20."""
    retrieved_lists, relevant_lists = _runs(retrieved_lists, relevant_lists)
    pairs = list(zip(retrieved_lists, relevant_lists))
    scores = {f"recall@{k}": sum(recall_at_k(r, rel, k) for r, rel in pairs) / len(pairs)
              for k in ks}
    scores["mrr"] = sum(reciprocal_rank(r, rel) for r, rel in pairs) / len(pairs)
    scores[f"ndcg@{ndcg_k}"] = sum(ndcg_at_k(r, rel, ndcg_k) for r, rel in pairs) / len(pairs)
    scores["map"] = sum(average_precision(r, rel) for r, rel in pairs) / len(pairs)
    scores["n"] = len(pairs)
    return scores


def bootstrap_interval(hits, n_resamples=2000, level=0.95, seed=0):
    """The percentile bootstrap interval of the mean of ``hits`` (one score per question, e.g.
    exact match 0/1): ``(low, high)``. The course's thresholds are its lower end, rounded down."""
    import numpy as np

    hits = np.asarray(hits, dtype=float)
    if hits.ndim != 1 or len(hits) == 0 or not np.isfinite(hits).all():
        raise ValueError(f"hits must be a non-empty 1-D list of finite scores, got shape "
                         f"{list(hits.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level!r}")
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), size=(n_resamples, len(hits)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
