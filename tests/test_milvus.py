"""MilvusRetriever (ragtutor.milvus): equal to the course's own retrievers, and safe to edit.

Every test runs on Milvus Lite, in this process. The retriever contract itself (shapes, errors,
edits equal to a fresh fit) is tested by tests/test_retrieval.py for every back-end.
"""
import gc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from ragtutor import CHECKPOINT_DIR  # noqa: E402
from ragtutor.data import load_passages, load_questions  # noqa: E402
from ragtutor.dense import BiEncoder, DenseRetriever  # noqa: E402
from ragtutor.milvus import MilvusRetriever, milvus_string  # noqa: E402
from ragtutor.retrieval import UnknownQueryWarning  # noqa: E402
from ragtutor.sparse import BM25Retriever  # noqa: E402

N = 60


@pytest.fixture(scope="module")
def passages():
    return load_passages()[:N]


@pytest.fixture(scope="module")
def questions(passages):
    # Dev questions about the passages' countries, so that the right passage is in the index.
    ids = {p["id"] for p in passages}
    return [q for q in load_questions("dev") if q["passage_id"] in ids][:12]


@pytest.fixture(scope="module")
def encoder():
    # The trained retriever: a random encoder maps every text to nearly the same vector, whose
    # scores differ only in float32 rounding, and then no two implementations rank alike.
    return BiEncoder.from_pretrained(CHECKPOINT_DIR / "retriever")


def record(doc_id, title, text):
    return {"id": doc_id, "title": title, "text": text}


def test_dense_mode_equals_the_course_dense_retriever(encoder, passages, questions):
    texts = [q["question"] for q in questions]
    with MilvusRetriever(encoder).fit(passages) as milvus:
        scores, ids = milvus.search(texts, 10)
    expected_scores, expected_ids = DenseRetriever(encoder).fit(passages).search(texts, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)


def test_bm25_with_the_course_tokeniser_equals_bm25_retriever(passages, questions):
    texts = [q["question"] for q in questions]
    with MilvusRetriever(mode="bm25", analyzer="ragtutor", k1=0.9, b=0.4).fit(passages) as milvus:
        scores, ids = milvus.search(texts, 10)
    expected_scores, expected_ids = BM25Retriever(k1=0.9, b=0.4).fit(passages).search(texts, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_bm25_with_milvus_analyzer_finds_the_right_passage(passages, questions):
    texts = [q["question"] for q in questions]
    with MilvusRetriever(mode="bm25").fit(passages) as milvus:
        _, ids = milvus.search(texts, 5)
        _, mine = milvus.search(["What is the capital of Afghanistan?"], 1)
    assert mine[0, 0] == "AFG/capital"
    found = np.mean([q["passage_id"] in row for q, row in zip(questions, ids)])
    _, course = BM25Retriever().fit(passages).search(texts, 5)
    assert found == np.mean([q["passage_id"] in row for q, row in zip(questions, course)])


def test_the_analyzers_differ_on_accents_only():
    # Milvus Lite's standard analyzer keeps accents; the course's tokeniser strips them.
    corpus = [record("a", "Colombia", "The capital is Bogotá."), record("b", "Peru", "Lima.")]
    query = ["capital Bogota"]
    with MilvusRetriever(mode="bm25").fit(corpus) as standard, \
            MilvusRetriever(mode="bm25", analyzer="ragtutor").fit(corpus) as course:
        standard_scores, _ = standard.search(query, 2)
        course_scores, _ = course.search(query, 2)
    expected, _ = BM25Retriever().fit(corpus).search(query, 2)
    np.testing.assert_allclose(course_scores, expected, rtol=1e-5)
    assert standard_scores[0, 0] < course_scores[0, 0]  # "bogota" is not "bogotá" for Milvus


def test_add_delete_and_upsert_edit_the_index(passages):
    with MilvusRetriever(mode="bm25", analyzer="ragtutor").fit(passages[:40]) as milvus:
        new = record("NEW/capital", "Zyxland", "The capital city of Zyxland is Qwerton.")
        milvus.add([new])
        _, ids = milvus.search(["Qwerton Zyxland"], 1)
        assert ids[0, 0] == "NEW/capital"

        milvus.delete(["NEW/capital", passages[3]["id"]])
        with pytest.warns(UnknownQueryWarning):
            scores, _ = milvus.search(["Qwerton Zyxland"], 1)
        assert scores[0, 0] == 0  # the only passage with these words is gone at once

        changed = record(passages[5]["id"], "Xanadu", "Kublai built Xanadu.")
        added = record("NEW/other", "Other", "Another passage about Xanadu.")
        milvus.upsert([changed, added])
        assert list(milvus.doc_ids_) == ([p["id"] for p in passages[:40] if p != passages[3]]
                                         + ["NEW/other"])  # a replaced passage keeps its row
        corpus = [changed if p["id"] == changed["id"] else p for p in passages[:40]
                  if p != passages[3]] + [added]
        got = milvus.search(["Kublai Xanadu", "capital of Afghanistan"], 10)
        expected = BM25Retriever().fit(corpus).search(["Kublai Xanadu", "capital of Afghanistan"],
                                                      10)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


def test_dense_edits_equal_a_fresh_fit(encoder, passages, questions):
    texts = [q["question"] for q in questions]
    corpus = [p for p in passages if p["id"] != passages[7]["id"]]
    changed = record(passages[9]["id"], passages[9]["title"], "Nothing about it anymore.")
    with MilvusRetriever(encoder).fit(passages[:30]) as milvus:
        milvus.add(passages[30:]).delete([passages[7]["id"]]).upsert([changed])
        scores, ids = milvus.search(texts, 8)
    corpus = [changed if p["id"] == changed["id"] else p for p in corpus]
    expected_scores, expected_ids = DenseRetriever(encoder).fit(corpus).search(texts, 8)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)


@pytest.mark.parametrize("doc_id", [
    "it's", 'say "hi"', "back\\slash", "line\nbreak", '"] or id != "',
    "x' or id != '", "\\\" or true or \"",
    "x', 'plain",  # pymilvus's delete(ids=[this]) deletes "plain" and keeps this one
])
def test_ids_with_quotes_cannot_break_the_delete_filter(doc_id):
    corpus = [record(doc_id, "Odd", "An odd identifier."), record("plain", "Plain", "Plain text."),
              record("other", "Other", "Other text.")]
    with MilvusRetriever(mode="bm25").fit(corpus) as milvus:
        milvus.delete([doc_id])
        _, ids = milvus.search(["odd plain other text"], 2)
        assert sorted(ids[0]) == ["other", "plain"]  # exactly the one passage is gone
        left = milvus.client_.query(milvus.collection, filter="", output_fields=["id"], limit=10)
        assert sorted(row["id"] for row in left) == ["other", "plain"]
        milvus.add([record(doc_id, "Odd", "Back again.")])
        _, ids = milvus.search(["back again"], 1)
        assert ids[0, 0] == doc_id


def test_milvus_string_escapes_what_would_end_the_literal():
    assert milvus_string('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    with pytest.raises(TypeError, match="expected a string"):
        milvus_string(5)


def test_two_retrievers_in_one_process_do_not_collide(passages, tmp_path):
    first = MilvusRetriever(mode="bm25").fit(passages[:10])
    second = MilvusRetriever(mode="bm25").fit(passages[10:20])
    assert first.uri_ != second.uri_
    uri = tmp_path / "shared.db"
    third = MilvusRetriever(mode="bm25", uri=uri, collection="a").fit(passages[20:30])
    fourth = MilvusRetriever(mode="bm25", uri=uri, collection="b").fit(passages[30:40])
    for retriever, part in ((first, passages[:10]), (second, passages[10:20]),
                            (third, passages[20:30]), (fourth, passages[30:40])):
        _, ids = retriever.search(["capital"], 10)
        assert sorted(ids[0]) == sorted(p["id"] for p in part)
        retriever.close()


def test_the_temporary_database_is_removed_on_close(passages):
    with MilvusRetriever(mode="bm25").fit(passages[:5]) as milvus:
        folder = Path(milvus.uri_).parent
        assert folder.is_dir()
    assert not folder.exists()
    with pytest.raises(ValueError, match="not fitted yet"):
        milvus.search(["capital"], 1)
    milvus.close()  # twice is fine

    dropped = MilvusRetriever(mode="bm25").fit(passages[:5])
    folder = Path(dropped.uri_).parent
    del dropped
    gc.collect()
    assert not folder.exists()


def test_a_named_database_stays_and_a_refit_replaces_the_collection(passages, tmp_path):
    uri = tmp_path / "course.db"
    milvus = MilvusRetriever(mode="bm25", uri=uri).fit(passages[:5])
    milvus.fit(passages[5:8])
    assert milvus.client_.get_collection_stats("ragtutor")["row_count"] == 3
    milvus.close()
    assert uri.exists()


def test_bare_documents_are_keyed_by_position(encoder, passages):
    pairs = [(p["title"], p["text"]) for p in passages[:10]]
    with MilvusRetriever(encoder).fit(pairs) as milvus:
        milvus.add(pairs[:2]).delete([0, 3])
        _, ids = milvus.search(["What is the capital of Afghanistan?"], 10)
        assert sorted(ids[0].tolist()) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
        assert ids.dtype == np.int64
    with MilvusRetriever(mode="bm25").fit([["paris", "france"], ["berlin"]]) as milvus:
        _, ids = milvus.search([["berlin"]], 1)
        assert ids[0, 0] == 1


def test_an_integer_id_and_its_digits_are_refused_together():
    with MilvusRetriever(mode="bm25").fit([record(5, "Five", "five")]) as milvus:
        with pytest.raises(ValueError, match="primary key '5'"):
            milvus.add([record("5", "Five", "again")])
        assert milvus.n_docs_ == 1


def test_ties_are_ordered_by_row_even_across_the_cut():
    # Ten equal passages: Milvus picks among them arbitrarily, the retriever by row.
    corpus = [record(f"same/{i}", "Same", "identical words") for i in range(10)]
    corpus.insert(4, record("best", "Same", "identical words identical words"))
    with MilvusRetriever(mode="bm25").fit(corpus) as milvus:
        milvus.delete(["same/0"])
        scores, ids = milvus.search(["identical"], 4)
    assert ids[0].tolist() == ["best", "same/1", "same/2", "same/3"]
    assert scores[0, 1] == scores[0, 2] == scores[0, 3]


def test_a_query_with_no_known_word_warns_and_scores_zero(passages):
    with MilvusRetriever(mode="bm25").fit(passages[:10]) as milvus:
        with pytest.warns(UnknownQueryWarning, match="queries contain no word"):
            scores, ids = milvus.search(["zzqx", "capital"], 10)
    assert (scores[0] == 0).all() and list(ids[0]) == [p["id"] for p in passages[:10]]
    assert (scores[1] >= 0).all() and scores[1, 0] > 0


def test_index_params_reach_milvus(encoder, passages):
    hnsw = {"index_type": "HNSW", "params": {"M": 8, "efConstruction": 64}}
    with MilvusRetriever(encoder, index_params=hnsw, search_params={"ef": 64}) \
            .fit(passages[:20]) as milvus:
        index = milvus.client_.describe_index(milvus.collection, "vector")
        _, ids = milvus.search(["What is the capital of Afghanistan?"], 5)
    assert index["index_type"] == "HNSW" and index["metric_type"] == "IP"
    assert int(index["params"]["M"]) == 8
    assert len(set(ids[0])) == 5


@pytest.mark.parametrize("settings, error, problem", [
    ({"mode": "sql"}, ValueError, "unknown mode"),
    ({"mode": "dense"}, ValueError, "pass encoder="),
    ({"mode": "bm25", "collection": "my-passages"}, ValueError, "collection name"),
    ({"mode": "bm25", "k1": 0}, ValueError, "k1 > 0"),
    ({"mode": "bm25", "b": 2}, ValueError, "b in \\[0, 1\\]"),
    ({"mode": "bm25", "analyzer": "english!"}, ValueError, "analyzer must be"),
    ({"mode": "bm25", "batch_size": 0}, ValueError, "batch_size must be a positive int"),
])
def test_bad_settings_are_refused_before_milvus_is_touched(settings, error, problem, passages):
    milvus = MilvusRetriever(**settings)
    with pytest.raises(error, match=problem):
        milvus.fit(passages[:3])
    assert not hasattr(milvus, "client_")


def test_bm25_refuses_an_encoder_and_dense_a_metric_other_than_ip(encoder, passages):
    with pytest.raises(ValueError, match="does not use an encoder"):
        MilvusRetriever(encoder, mode="bm25").fit(passages[:3])
    with pytest.raises(ValueError, match="metric 'IP'"):
        MilvusRetriever(encoder, index_params={"metric_type": "L2"}).fit(passages[:3])


def test_upsert_needs_passage_records():
    with MilvusRetriever(mode="bm25").fit(["one text", "another"]) as milvus:
        with pytest.raises(TypeError, match="upsert\\(\\) replaces passages by id"):
            milvus.upsert(["a third"])
    with MilvusRetriever(mode="bm25").fit([record("a", "A", "x")]) as milvus:
        with pytest.raises(ValueError, match="given twice"):
            milvus.upsert([record("b", "B", "y"), record("b", "B", "z")])
        assert milvus.n_docs_ == 1


def test_a_failed_refit_leaves_no_stale_ids(passages):
    milvus = MilvusRetriever(mode="bm25").fit(passages[:5])
    with pytest.raises(ValueError, match="VARCHAR"):
        milvus.fit([record("long", "Long", "x" * 70_000)])
    assert milvus.n_docs_ == 5  # refused before the old collection was dropped
    milvus.close()
