"""ragtutor.elastic: Lucene's one-byte lengths, the standard analyzer, Lucene's BM25, the comparison
with chapter 01's exact BM25, Elasticsearch behind the retriever contract, and the network guard's
allowance for the server that RAGTUTOR_ES_URL names.

The Elasticsearch tests run only when RAGTUTOR_ES_URL names a server that answers; otherwise they
are skipped, with the command that starts one.
"""
import math
import os
import socket

import numpy as np
import pytest

from ragtutor.data import load_passages, load_questions
from ragtutor.elastic import (DOCKER_COMMAND, ES_URL_ENV, ElasticsearchRetriever,
                              ElasticsearchUnavailableError, LuceneBM25Retriever,
                              articles_by_title, compare_with_exact, decode_length, encode_length,
                              standard_analyzer)
from ragtutor.sparse import BM25Retriever
from ragtutor.text import tokenize
from ragtutor.tools import netguard
from ragtutor.tools.netguard import NetworkBlockedError

pytestmark = pytest.mark.filterwarnings("ignore::ragtutor.retrieval.UnknownQueryWarning")


@pytest.fixture(scope="module")
def passages():
    return load_passages()


@pytest.fixture(scope="module")
def questions():
    return [q["question"] for q in load_questions("test")]


# -- SmallFloat -----------------------------------------------------------------------------------
def test_every_code_round_trips_and_decoding_is_monotone():
    codes = np.arange(256)
    lengths = decode_length(codes)
    assert (encode_length(lengths) == codes).all()
    assert (decode_length(encode_length(lengths)) == lengths).all()
    assert (np.diff(lengths) > 0).all()
    assert encode_length(lengths).dtype == np.uint8


def test_lengths_below_24_are_exact_and_longer_ones_round_down():
    small = np.arange(24)
    assert (decode_length(encode_length(small)) == small).all()
    lengths = np.arange(0, 20_000)
    stored = decode_length(encode_length(lengths))
    assert (stored <= lengths).all()
    assert (np.diff(encode_length(lengths).astype(int)) >= 0).all()
    # 4 significant bits: a stored length is never more than 1/8 below the true one (beyond 24).
    assert ((lengths - stored)[24:] <= (lengths[24:] - 24) / 8).all()


# By hand from SmallFloat.java: L < 24 is stored as is; else 24 + longToInt4(L - 24), where
# longToInt4(x) keeps x's 4 leading bits (the first implicit) and stores shift + 1 above them.
@pytest.mark.parametrize("length, code, decoded", [
    (0, 0, 0), (23, 23, 23),
    (24, 24, 24),        # x = 0: subnormal
    (31, 31, 31),        # x = 7 = 0b111: subnormal, 3 bits
    (32, 32, 32),        # x = 8 = 0b1000: shift 0, code 0b000 | 1 << 3 = 8
    (40, 40, 40),        # x = 16 = 0b10000: shift 1, 0b1000 -> 0 | 2 << 3 = 16
    (41, 40, 40),        # x = 17 = 0b10001: the last bit is lost
    (100, 57, 96),       # x = 76 = 0b1001100: shift 3, 0b1001 -> 1 | 4 << 3 = 33; 9 << 3 = 72
    (1000, 87, 984),     # x = 976 = 0b1111010000: shift 6, 0b1111 -> 7 | 7 << 3 = 63; 15 << 6
    (2**31 - 1, 255, 2013265944),  # Integer.MAX_VALUE: the largest code, 24 + 15 << 27
])
def test_hand_computed_codes(length, code, decoded):
    assert encode_length([length]).tolist() == [code]
    assert decode_length([code]).tolist() == [decoded]


@pytest.mark.parametrize("call, error, problem", [
    (lambda: encode_length([-1]), ValueError, "0..2147483647"),
    (lambda: encode_length([2**31]), ValueError, "Java int"),
    (lambda: encode_length([1.5]), TypeError, "whole numbers"),
    (lambda: decode_length([256]), ValueError, "one byte"),
    (lambda: decode_length([1.0]), TypeError, "integers"),
])
def test_bad_lengths_and_codes_are_refused(call, error, problem):
    with pytest.raises(error, match=problem):
        call()


# -- the standard analyzer ------------------------------------------------------------------------
@pytest.mark.parametrize("text, tokens", [
    ("France's capital", ["france's", "capital"]),
    ("São Tomé", ["são", "tomé"]),                    # no accent folding
    ("The U.S. and the UK", ["the", "u.s", "and", "the", "uk"]),
    ("1,000 km or 3.14 m", ["1,000", "km", "or", "3.14", "m"]),
    ("well-known 3rd snake_case", ["well", "known", "3rd", "snake_case"]),
    ("'quoted' and ‘curly’ words", ["quoted", "and", "curly", "words"]),
    ("end, of. sentence!", ["end", "of", "sentence"]),
    ("巴黎是", ["巴", "黎", "是"]),                      # one token per ideograph
    ("", []),
])
def test_standard_analyzer(text, tokens):
    assert standard_analyzer(text) == tokens


def test_standard_analyzer_cuts_very_long_words():
    assert [len(t) for t in standard_analyzer("x" * 600)] == [255, 255, 90]


# -- BM25 as Lucene scores it ---------------------------------------------------------------------
THREE = [["a", "b"], ["a", "a", "c"], ["c"] * 40 + ["d"]]  # lengths 2, 3, 41 (stored as 40)


@pytest.mark.parametrize("quantize", [True, False])
def test_a_three_document_example_by_hand(quantize):
    retriever = LuceneBM25Retriever(quantize_lengths=quantize).fit(THREE)
    avgdl = 46 / 3
    idf_a = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))      # ln 1.6: "a" is in 2 of 3 documents
    idf_d = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))      # ln(8/3)
    a0 = idf_a * 1 / (1 + 1.2 * (0.25 + 0.75 * 2 / avgdl))
    a1 = idf_a * 2 / (2 + 1.2 * (0.25 + 0.75 * 3 / avgdl))
    d2 = idf_d * 1 / (1 + 1.2 * (0.25 + 0.75 * (40 if quantize else 41) / avgdl))
    np.testing.assert_allclose(retriever.score(["a"]), [a0, a1, 0], rtol=1e-12)
    np.testing.assert_allclose(retriever.score(["a", "d"]), [a0, a1, d2], rtol=1e-12)
    # A repeated query word is a repeated SHOULD clause: Lucene sums it, as a boost of 2.
    np.testing.assert_allclose(retriever.score(["a", "a"]), [2 * a0, 2 * a1, 0], rtol=1e-12)
    assert retriever.norms_.tolist() == [2, 3, 40] and retriever.avgdl_ == avgdl


def test_an_empty_document_is_indexed_but_not_counted_in_n():
    retriever = LuceneBM25Retriever().fit(["a b", "", "c"])
    assert retriever.doc_count_ == 2 and retriever.avgdl_ == 1.5
    np.testing.assert_allclose(retriever.idf_[retriever.vocabulary_["a"]],
                               math.log(1 + 1.5 / 1.5))


@pytest.mark.parametrize("k1, b", [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0), (1.2, 0.0)])
def test_with_exact_lengths_and_the_course_tokens_it_is_chapter_01s_bm25(passages, questions, k1,
                                                                         b):
    mine = LuceneBM25Retriever(k1, b, analyzer="course", quantize_lengths=False).fit(passages)
    exact = BM25Retriever(k1, b).fit(passages)
    for query in questions[:20]:
        np.testing.assert_allclose(mine.score(query) * (k1 + 1), exact.score(query), rtol=0,
                                   atol=1e-9)
    got, expected = mine.search(questions, 10), exact.search(questions, 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0] * (k1 + 1), expected[0], rtol=0, atol=1e-9)


def test_a_callable_analyzer_is_used():
    retriever = LuceneBM25Retriever(analyzer=tokenize).fit(["São Tomé", "Paris"])
    assert "sao" in retriever.vocabulary_ and "são" not in retriever.vocabulary_
    standard = LuceneBM25Retriever().fit(["São Tomé", "Paris"])
    assert "são" in standard.vocabulary_


@pytest.mark.parametrize("params, error, problem", [
    ({"analyzer": "english"}, ValueError, "unknown analyzer 'english'"),
    ({"analyzer": lambda text: "not a list"}, TypeError, "list of string tokens"),
    ({"k1": -1}, ValueError, "k1 must be non-negative"),
    ({"b": 2}, ValueError, r"b must lie in \[0, 1\]"),
    ({"quantize_lengths": 1}, TypeError, "quantize_lengths must be True or False"),
])
def test_bad_parameters_are_refused(params, error, problem):
    with pytest.raises(error, match=problem):
        LuceneBM25Retriever(**params).fit(["a b", "c"])


def test_edits_leave_the_index_as_a_fresh_fit_on_the_edited_corpus(passages, questions):
    first, more = passages[:300], passages[300:340]
    removed = [first[5]["id"], more[3]["id"]]
    edited = LuceneBM25Retriever().fit(first).add(more).delete(removed)
    remaining = [p for p in first + more if p["id"] not in removed]
    fresh = LuceneBM25Retriever().fit(remaining)
    assert list(edited.doc_ids_) == [p["id"] for p in remaining]
    got, expected = edited.search(questions, 10), fresh.search(questions, 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)


# -- the comparison with chapter 01 -----------------------------------------------------------------
def test_the_comparison_separates_the_analyzer_from_the_length(passages, questions):
    articles = articles_by_title(passages)
    assert len(articles) == len({p["title"] for p in passages})
    report = compare_with_exact(articles, questions[:100], k=10)
    check = report["course tokens, exact length"]
    assert check["top1"] == check["top_k_same_set"] == 1.0
    assert check["kendall_tau"] == pytest.approx(1.0)
    assert check["max_rel_score_diff"] < 1e-12
    # Articles are hundreds of tokens long: 4 significant bits move scores by up to 1/8 of the
    # length term and reorder some top 10s.
    quantized = report["course tokens, one-byte length"]
    assert 0 < quantized["max_rel_score_diff"] < 0.1 and quantized["top_k_same_set"] < 1


# -- Elasticsearch --------------------------------------------------------------------------------
def test_without_a_url_fit_says_how_to_start_a_server(monkeypatch, passages):
    monkeypatch.delenv(ES_URL_ENV, raising=False)
    with pytest.raises(ElasticsearchUnavailableError, match=ES_URL_ENV) as caught:
        ElasticsearchRetriever().fit(passages[:5])
    assert DOCKER_COMMAND in str(caught.value)
    assert "discovery.type=single-node" in DOCKER_COMMAND
    assert "xpack.security.enabled=false" in DOCKER_COMMAND


def test_a_url_where_nothing_answers_says_how_to_start_a_server(passages):
    # The discard port on loopback: nothing listens there, and the guard lets loopback through.
    retriever = ElasticsearchRetriever("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ElasticsearchUnavailableError, match="no Elasticsearch server answers at "
                                                            "http://127.0.0.1:9") as caught:
        retriever.fit(passages[:5])
    assert "docker run" in str(caught.value)


@pytest.mark.parametrize("params, error, problem", [
    ({"mode": "sparse"}, ValueError, "unknown mode 'sparse'"),
    ({"mode": "dense"}, TypeError, "needs encoder="),
    ({"index_name": "Capitals"}, ValueError, "lower-case"),
])
def test_bad_settings_are_refused_before_connecting(params, error, problem, passages):
    with pytest.raises(error, match=problem):
        ElasticsearchRetriever("http://127.0.0.1:9", **params).fit(passages[:5])


@pytest.fixture(scope="module")
def es_url():
    url = os.environ.get(ES_URL_ENV, "").strip()
    if not url:
        pytest.skip(f"{ES_URL_ENV} is not set: no Elasticsearch server to test against. To run "
                    f"these tests: {DOCKER_COMMAND}, then {ES_URL_ENV}=http://localhost:9200")
    try:
        ElasticsearchRetriever(url)._connect()
    except ElasticsearchUnavailableError as error:
        pytest.skip(f"{ES_URL_ENV}={url}, but no Elasticsearch server answers there: {error}")
    return url


def test_elasticsearch_scores_as_lucene_bm25(es_url, passages, questions):
    corpus = passages[:200]
    server = ElasticsearchRetriever(es_url, index_name="ragtutor-test").fit(corpus)
    local = LuceneBM25Retriever().fit(corpus)
    got, expected = server.search(questions[:30], 10), local.search(questions[:30], 10)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    assert (got[1][:, 0] == expected[1][:, 0]).mean() > 0.95  # float32 may swap near-ties
    _, everything = server.search(questions[:1], len(corpus))
    assert sorted(everything[0]) == sorted(p["id"] for p in corpus)


def test_elasticsearch_edits_match_lucene_bm25_after_the_merge(es_url, passages, questions):
    server = ElasticsearchRetriever(es_url, index_name="ragtutor-test").fit(passages[:100])
    local = LuceneBM25Retriever().fit(passages[:100])
    new = {"id": "NEW/capital", "title": "Zyxland", "text": "The capital city of Zyxland is Qwerton."}
    removed = [passages[3]["id"], passages[50]["id"]]
    for retriever in (server, local):
        retriever.add(passages[100:120] + [new]).delete(removed)
    assert list(server.doc_ids_) == list(local.doc_ids_)
    np.testing.assert_allclose(server.search(questions[:20], 5)[0],
                               local.search(questions[:20], 5)[0], rtol=1e-5)
    assert server.search(["capital city of Zyxland Qwerton"], 1)[1][0, 0] == "NEW/capital"


def test_elasticsearch_dense_mode_is_the_flat_dense_retriever(es_url, passages):
    import torch

    from ragtutor.dense import BiEncoder, DenseRetriever, build_tokenizer

    torch.manual_seed(0)
    dev = load_questions("dev")[:6]
    encoder = BiEncoder.build(build_tokenizer(passages[:60], dev), hidden_size=16, layers=1,
                              heads=2, intermediate_size=32)
    queries = [q["question"] for q in dev]
    server = ElasticsearchRetriever(es_url, index_name="ragtutor-test", encoder=encoder,
                                    mode="dense").fit(passages[:60])
    local = DenseRetriever(encoder).fit(passages[:60])
    got, expected = server.search(queries, 5), local.search(queries, 5)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)
    assert (got[1][:, 0] == expected[1][:, 0]).all()


# -- the network guard's allowance ----------------------------------------------------------------
def test_the_guard_lets_through_only_the_host_that_the_variable_names(monkeypatch):
    assert netguard.is_installed()
    allowed, other = ("192.0.2.1", 9200), ("192.0.2.2", 9200)  # TEST-NET-1: nothing is there
    with socket.socket() as sock:
        monkeypatch.delenv(ES_URL_ENV, raising=False)
        with pytest.raises(NetworkBlockedError):
            netguard._check(sock, allowed)
        monkeypatch.setenv(ES_URL_ENV, "http://192.0.2.1:9200")
        netguard._check(sock, allowed)  # no error: the connection would be attempted
        with pytest.raises(NetworkBlockedError, match="192.0.2.2:9200"):
            netguard._check(sock, other)
        netguard._check(sock, ("127.0.0.1", 9200))  # loopback as ever


def test_the_guard_allows_the_named_hosts_look_up_and_its_addresses(monkeypatch):
    monkeypatch.setenv(ES_URL_ENV, "https://Search.Example:9243/")
    monkeypatch.setattr(netguard, "_resolved", {})
    netguard._refuse_name("search.example")  # no error: the look-up may go out
    with pytest.raises(NetworkBlockedError, match="example.com"):
        socket.getaddrinfo("example.com", 80)
    with socket.socket() as sock:
        with pytest.raises(NetworkBlockedError):
            netguard._check(sock, ("203.0.113.7", 9243))
        # What the look-up of the named host returned may be connected to; nothing else.
        netguard._remember("search.example", [(socket.AF_INET, socket.SOCK_STREAM, 6, "",
                                               ("203.0.113.7", 9243))])
        netguard._check(sock, ("203.0.113.7", 9243))
        with pytest.raises(NetworkBlockedError):
            netguard._check(sock, ("203.0.113.8", 9243))
    monkeypatch.setenv(ES_URL_ENV, "http://[2001:db8::1]:9200")
    with socket.socket(socket.AF_INET6) as sock:
        netguard._check(sock, ("2001:db8::1", 9200, 0, 0))
        with pytest.raises(NetworkBlockedError):
            netguard._check(sock, ("2001:db8::2", 9200, 0, 0))
