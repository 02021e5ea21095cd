"""BM25 and TF-IDF: equal to rank_bm25, bm25s and scikit-learn; search, ties, bad input."""
import warnings

import bm25s
import numpy as np
import pytest
import rank_bm25
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from ragtutor.retrieval import UnknownQueryWarning
from ragtutor.sparse import BM25Retriever, TfidfRetriever, top_k
from ragtutor.text import STOPWORDS, tokenize

# Random queries may share no word with a random corpus: their all-zero scores and ties by
# lower id are part of what is tested here, so the warning that flags them (tested on its own
# below) is expected, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::ragtutor.retrieval.UnknownQueryWarning")


def random_corpus(seed, n_docs=120, n_queries=40):
    """Zipf-distributed tokens, with the cases where BM25 implementations part ways: an empty
    document, a document of one repeated term, and a term in 70% of documents (negative raw idf)."""
    rng = np.random.default_rng(seed)
    docs = [[f"w{w}" for w in rng.zipf(1.4, size=rng.integers(1, 40)) if w < 200]
            for _ in range(n_docs)]
    for doc in docs:
        if rng.random() < 0.7:
            doc.append("common")
    docs[5] = []
    docs[7] = ["w3"] * 12
    queries = [[f"w{w}" for w in rng.integers(1, 40, size=rng.integers(1, 6))]
               for _ in range(n_queries)]
    queries += [["common"], ["common", "w1", "w1"], ["w3", "unseen"], ["unseen"]]
    return docs, queries


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k1, b, epsilon", [(1.5, 0.75, 0.25), (1.2, 0.4, 0.5), (0.5, 0.9, 0.1),
                                            (2.0, 0.0, 0.25)])
def test_okapi_equals_rank_bm25(seed, k1, b, epsilon):
    docs, queries = random_corpus(seed)
    ours = BM25Retriever(k1=k1, b=b, method="okapi", epsilon=epsilon).fit(docs)
    theirs = rank_bm25.BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
    df = np.diff(ours.index_.indptr)
    assert (df > len(docs) / 2).any(), "the corpus must exercise rank_bm25's floor for negative idf"
    for query in queries:
        np.testing.assert_allclose(ours.score(query), theirs.get_scores(query),
                                   rtol=1e-9, atol=1e-9)


def bm25s_scores(docs, queries, method, k1, b):
    index = bm25s.BM25(k1=k1, b=b, method=method, backend="numpy")
    index.index(docs, show_progress=False)
    # bm25s.get_scores rejects an empty token list; a query of unseen words scores 0 everywhere.
    return np.array([index.get_scores(q) if any(t in index.vocab_dict for t in q)
                     else np.zeros(len(docs)) for q in queries])


def assert_ranked_alike(ours, theirs, rtol):
    """Each system's ranking, read with the other's scores, never goes up by more than the
    tolerance: the rankings are equal up to ties."""
    tol = rtol * np.abs(theirs).max(axis=1, keepdims=True)
    for a, b in ((ours, theirs), (theirs, ours)):
        order = np.argsort(-a, axis=1, kind="stable")
        along = np.take_along_axis(b, order, axis=1)
        assert (np.diff(along, axis=1) <= tol).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k1, b", [(1.2, 0.75), (0.9, 0.4), (1.5, 1.0)])
def test_lucene_equals_bm25s_up_to_the_constant_factor(seed, k1, b):
    docs, queries = random_corpus(seed)
    ours = BM25Retriever(k1=k1, b=b, method="lucene").fit(docs)
    scores = np.array([ours.score(q) for q in queries])
    theirs = bm25s_scores(docs, queries, "lucene", k1, b)
    # bm25s drops the factor (k1 + 1), a constant per query, and computes in float32.
    np.testing.assert_allclose(scores / (k1 + 1), theirs, rtol=1e-5, atol=1e-6)
    assert_ranked_alike(scores / (k1 + 1), theirs, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_atire_equals_bm25s(seed):
    docs, queries = random_corpus(seed)
    ours = BM25Retriever(k1=1.5, b=0.75, method="atire").fit(docs)
    scores = np.array([ours.score(q) for q in queries])
    np.testing.assert_allclose(scores, bm25s_scores(docs, queries, "atire", 1.5, 0.75),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("smooth_idf", [True, False])
@pytest.mark.parametrize("sublinear_tf", [True, False])
def test_tfidf_equals_sklearn_cosine(seed, smooth_idf, sublinear_tf):
    docs, queries = random_corpus(seed)
    ours = TfidfRetriever(smooth_idf=smooth_idf, sublinear_tf=sublinear_tf).fit(docs)
    vectorizer = TfidfVectorizer(analyzer=lambda tokens: tokens, smooth_idf=smooth_idf,
                                 sublinear_tf=sublinear_tf).fit(docs)
    expected = (vectorizer.transform(queries) @ vectorizer.transform(docs).T).toarray()
    for query, row in zip(queries, expected):
        np.testing.assert_allclose(ours.score(query), row, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.idf_[[ours.vocabulary_[t] for t in vectorizer.vocabulary_]],
                               vectorizer.idf_[list(vectorizer.vocabulary_.values())], rtol=1e-12)


@pytest.mark.parametrize("retriever", [BM25Retriever(), BM25Retriever(method="okapi"),
                                       TfidfRetriever()])
def test_search_is_score_sorted_with_ties_by_lower_id(retriever):
    docs, queries = random_corpus(0)
    docs += [["w3", "w9"], ["w3", "w9"], ["w3", "w9"]]  # three identical documents tie exactly
    retriever.fit(docs)
    queries += [["w3", "w9"]]
    for k in (1, 3, 10, len(docs)):
        scores, ids = retriever.search(queries, k)
        assert scores.shape == ids.shape == (len(queries), k)
        assert scores.dtype == np.float64 and np.issubdtype(ids.dtype, np.integer)
        for query, row_scores, row_ids in zip(queries, scores, ids):
            full = retriever.score(query)
            expected = np.lexsort((np.arange(len(docs)), -full))[:k]  # by score, then by id
            np.testing.assert_array_equal(row_ids, expected)
            np.testing.assert_array_equal(row_scores, full[expected])


def test_top_k_breaks_ties_by_lower_index():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(float)  # many ties at every cut
    scores[0] = 0.0
    for k in (1, 2, 7, 30):
        top, ids = top_k(scores, k)
        expected = np.array([np.lexsort((np.arange(30), -row))[:k] for row in scores])
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))


def test_batches_give_the_same_answer_as_one_query_at_a_time(monkeypatch):
    docs, queries = random_corpus(1)
    retriever = BM25Retriever().fit(docs)
    scores, ids = retriever.search(queries, 5)
    monkeypatch.setattr("ragtutor.sparse._MAX_BATCH_SCORES", 3 * len(docs))  # batches of 3 queries
    batched_scores, batched_ids = retriever.search(queries, 5)
    np.testing.assert_array_equal(ids, batched_ids)
    np.testing.assert_array_equal(scores, batched_scores)


def test_the_index_is_a_sparse_term_by_document_matrix():
    docs = [["a", "b", "a"], [], ["b", "c"]]
    retriever = BM25Retriever().fit(docs)
    assert sp.issparse(retriever.index_) and retriever.index_.format == "csr"
    assert retriever.index_.shape == (3, 3)  # [V, n_docs]
    assert retriever.index_.nnz == 4  # one entry per distinct (term, document) pair
    np.testing.assert_array_equal(retriever.doc_len_, [3, 0, 2])
    assert retriever.avgdl_ == pytest.approx(5 / 3)
    # Row "b" is b's posting list: documents 0 and 2.
    np.testing.assert_array_equal(retriever.index_[[retriever.vocabulary_["b"]]].indices, [0, 2])


def test_strings_are_tokenised_with_the_course_tokeniser():
    texts = ["Paris is the capital of France.", "Bogotá is the capital of Colombia.",
             "The euro is the currency of France."]
    from_strings = BM25Retriever().fit(texts)
    from_tokens = BM25Retriever().fit([tokenize(t) for t in texts])
    np.testing.assert_array_equal(from_strings.score("capital of FRANCE?"),
                                  from_tokens.score(["capital", "of", "france"]))
    assert from_strings.search(["bogota"], 1)[1][0, 0] == 1  # accents folded
    assert "of" not in BM25Retriever(stopwords=STOPWORDS).fit(texts).vocabulary_


def test_fit_starts_afresh_and_init_only_stores_parameters():
    retriever = BM25Retriever(k1=0.9, b=0.3)
    assert vars(retriever) == {"k1": 0.9, "b": 0.3, "method": "lucene", "epsilon": 0.25,
                               "stopwords": None}
    retriever.fit([["a", "b"], ["c"]])
    retriever.fit([["x"], ["y"], ["z"]])
    assert retriever.n_docs_ == 3 and set(retriever.vocabulary_) == {"x", "y", "z"}
    assert retriever.score(["a"]).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("cls", [BM25Retriever, TfidfRetriever])
@pytest.mark.parametrize("call, error, words", [
    (lambda r: r.fit([]), ValueError, "corpus is empty"),
    (lambda r: r.fit(["", "?!"]), ValueError, "every one of the 2 documents is empty"),
    (lambda r: r.fit("one document"), TypeError, "wrap a single document in a list"),
    (lambda r: r.fit([1, 2]), TypeError, r"corpus\[0\] must be a string or a list"),
    (lambda r: r.fit(["a b", ["a"]]), TypeError, "mixes strings and token lists"),
    (lambda r: r.fit([["a", 3]]), TypeError, r"corpus\[0\] .* contains int"),
    (lambda r: r.score("a"), ValueError, "not fitted yet: call fit"),
])
def test_bad_fit_input_is_explained(cls, call, error, words):
    with pytest.raises(error, match=words):
        call(cls())


@pytest.mark.parametrize("cls", [BM25Retriever, TfidfRetriever])
@pytest.mark.parametrize("call, error, words", [
    (lambda r: r.score(""), ValueError, "query is empty after tokenisation"),
    (lambda r: r.score([]), ValueError, "query is empty"),
    (lambda r: r.score(7), TypeError, "query must be a string or a list of string tokens"),
    (lambda r: r.search(["a", "?"], 1), ValueError, r"queries\[1\] is empty"),
    (lambda r: r.search("a b", 1), TypeError, r"for a single query pass \[query\]"),
    (lambda r: r.search([], 1), ValueError, "queries is empty"),
    (lambda r: r.search(["a"], 0), ValueError, "k must be at least 1"),
    (lambda r: r.search(["a"], -2), ValueError, "k must be at least 1"),
    (lambda r: r.search(["a"], 4), ValueError, "k=4 is larger than the corpus, which has 3"),
    (lambda r: r.search(["a"], 1.0), TypeError, "k must be an integer"),
    (lambda r: r.search(["a"], True), TypeError, "k must be an integer"),
])
def test_bad_query_input_is_explained(cls, call, error, words):
    retriever = cls().fit(["a b", "b c", "c d"])
    with pytest.raises(error, match=words):
        call(retriever)


@pytest.mark.parametrize("params, error, words", [
    ({"method": "bm42"}, ValueError, "unknown method 'bm42'"),
    ({"k1": -1}, ValueError, "k1 must be non-negative"),
    ({"b": 1.5}, ValueError, r"b must lie in \[0, 1\]"),
    ({"k1": "1.2"}, TypeError, "k1 must be a number"),
])
def test_bad_parameters_are_explained_at_fit(params, error, words):
    retriever = BM25Retriever(**params)  # scikit-learn convention: __init__ only stores
    with pytest.raises(error, match=words):
        retriever.fit(["a b"])


def test_numpy_integer_k_and_tuples_are_accepted():
    retriever = BM25Retriever().fit((("a", "b"), ("b",), ("c",)))
    scores, ids = retriever.search((("b",),), np.int64(2))
    assert ids.tolist() == [[1, 0]]


def test_stopwords_must_be_a_set_of_words():
    with pytest.raises(TypeError, match="stopwords must be None or a set of words"):
        BM25Retriever(stopwords="the").fit(["the cat"])


# --- properties: search equals ranking every document's score ----------------------------------

@given(st.lists(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6), min_size=1,
                max_size=25),
       st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=3), min_size=1,
                max_size=4),
       st.integers(1, 25), st.sampled_from(["lucene", "okapi", "atire"]))
def test_property_search_equals_top_k_of_every_score(corpus, queries, k, method):
    """A tiny vocabulary gives many equal scores and many documents that match nothing: search
    must still return exactly the top k of all scores, ties by the lower position."""
    retriever = BM25Retriever(method=method).fit(corpus)
    k = min(k, len(corpus))
    scores, ids = retriever.search(queries, k)
    expected_scores, expected_ids = top_k(np.stack([retriever.score(q) for q in queries]), k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [{"k1": float("nan")}, {"k1": float("inf")},
                                     {"method": "okapi", "epsilon": float("nan")},
                                     {"b": float("nan")}])
def test_parameters_that_are_not_finite_are_refused(options):
    with pytest.raises(ValueError, match="must be a finite number"):
        BM25Retriever(**options).fit(["a b", "b c"])



@pytest.mark.parametrize("retriever", [BM25Retriever(), TfidfRetriever()])
def test_a_query_with_no_word_of_the_corpus_is_flagged(retriever):
    retriever.fit(["the cat sat on the mat", "a dog ran in the park"])
    with pytest.warns(UnknownQueryWarning, match=r"1 of 3 queries contain no word .*\[1\] '巴黎'"):
        retriever.search(["cat", "巴黎", "dog park"], 1)
    with pytest.warns(UnknownQueryWarning, match="2 of 2"):
        retriever.search(["zzz", ["qqq"]], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever.search(["cat", "the dog"], 1)  # every query has a known word: no warning
