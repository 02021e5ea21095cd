"""The cross-encoder re-ranker (ragtutor.rerank): its scores, saving and loading, re-ranking on the
retriever contract, training, and the errors bad input gets.

The contract suite's own checks (tests/test_retrieval.py) run here on a Reranker of a tiny random
CrossEncoder over BM25: they are imported, and the fixtures they ask for (``backend``,
``passages``, ``queries``) are the suite's, except ``backend``, which is this module's.
"""
import math

import numpy as np
import pytest
import torch

from ragtutor.checksums import MANIFEST, ChecksumError
from ragtutor.data import load_questions
from ragtutor.dense import build_tokenizer
from ragtutor.rerank import (CrossEncoder, Reranker, cross_encoder_batches, listwise_loss,
                             train_cross_encoder)
from ragtutor.sparse import BM25Retriever
from test_retrieval import (N, N_NEW, passages, queries,  # noqa: F401 (fixtures and checks)
                            test_a_bad_corpus_is_refused,
                            test_add_then_delete_edits_the_index,
                            test_an_added_passage_can_be_found, test_an_unfitted_retriever_says_so,
                            test_bad_input_gets_the_same_clear_error_from_every_backend,
                            test_bare_documents_get_their_positions_as_ids,
                            test_search_returns_passage_ids_best_first)

# Random queries may share no word with the corpus or the tokenizer: the warning that says so is
# expected here (tests/test_retrieval.py tests it).
pytestmark = pytest.mark.filterwarnings("ignore::ragtutor.retrieval.UnknownQueryWarning")


@pytest.fixture(scope="module")
def tokenizer(passages):
    return build_tokenizer(passages, load_questions("dev")[:6] + load_questions("train"))


def tiny(tokenizer, seed=0, **sizes):
    """A tiny random cross-encoder whose head is scaled up, so that its scores of different pairs
    differ by far more than rounding (a random BERT's first-token vectors are nearly equal)."""
    torch.manual_seed(seed)
    model = CrossEncoder.build(tokenizer, **{"hidden_size": 16, "layers": 1, "heads": 2,
                                             "intermediate_size": 32, **sizes})
    torch.nn.init.normal_(model.head.weight, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def cross_encoder(tokenizer):
    return tiny(tokenizer)


@pytest.fixture
def backend(cross_encoder):
    """The contract suite's back-end: (make, exact). BM25 and the cross-encoder are both exact,
    so an edited re-ranker must equal a fresh one."""
    return (lambda: Reranker(BM25Retriever(), cross_encoder)), True


# -- scores -------------------------------------------------------------------------------------
def test_a_pair_reads_question_then_passage_in_two_segments(cross_encoder, passages):
    batch = cross_encoder.tokenize(["What money?"], [passages[0]])
    tok = cross_encoder.tokenizer
    ids = batch["input_ids"][0].tolist()
    question = tok("What money?", add_special_tokens=False).input_ids
    passage = tok(f"{passages[0]['title']} {passages[0]['text']}",
                  add_special_tokens=False).input_ids
    assert ids == [tok.bos_token_id, *question, tok.eos_token_id, *passage, tok.eos_token_id]
    segments = [0] * (len(question) + 2) + [1] * (len(passage) + 1)
    assert batch["token_type_ids"][0].tolist() == segments
    assert batch["attention_mask"].all()


def test_scores_have_one_value_per_pair_and_repeat_exactly(cross_encoder, passages, queries):
    pairs = [(q, p) for q in queries[:3] for p in passages[:4]]
    texts, docs = [q for q, _ in pairs], [p for _, p in pairs]
    cross_encoder.train()  # score() must switch dropout off by itself, and restore the mode
    first = cross_encoder.score(texts, docs)
    assert cross_encoder.training
    cross_encoder.eval()
    assert first.shape == (len(pairs),) and first.dtype == torch.float32
    assert torch.equal(first, cross_encoder.score(texts, docs))
    # Batching (and so padding) does not change a pair's score beyond rounding.
    torch.testing.assert_close(first, cross_encoder.score(texts, docs, batch_size=1),
                               rtol=1e-5, atol=1e-6)
    # The score depends on the passage and on the question.
    assert first[:4].unique().numel() == 4
    assert not torch.allclose(first[:4], first[4:8])


def test_save_and_load_give_the_same_scores_and_a_changed_byte_is_caught(cross_encoder, passages,
                                                                          queries, tmp_path):
    cross_encoder.save_pretrained(tmp_path / "reranker")
    loaded = CrossEncoder.from_pretrained(tmp_path / "reranker")
    assert not loaded.training
    texts, docs = [queries[0]] * 5, passages[:5]
    assert torch.equal(loaded.score(texts, docs), cross_encoder.score(texts, docs))
    listed = (tmp_path / "reranker" / MANIFEST).read_text()
    for name in ("config.json", "model.safetensors", "rerank.json", "tokenizer/tokenizer.json"):
        assert f"  {name}\n" in listed
    weights = tmp_path / "reranker" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors does not match its checksum"):
        CrossEncoder.from_pretrained(tmp_path / "reranker")


def test_a_folder_of_another_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="rerank.json is missing"):
        CrossEncoder.from_pretrained(tmp_path)


# -- re-ranking ---------------------------------------------------------------------------------
def test_the_reranker_reorders_the_first_stages_top_depth_by_cross_encoder_score(
        cross_encoder, passages, queries):
    corpus = passages[:N]
    first = BM25Retriever().fit(corpus)
    reranker = Reranker(BM25Retriever(), cross_encoder).fit(corpus)
    by_id = {p["id"]: p for p in corpus}
    depth = 10
    _, first_ids = first.search(queries, depth)
    scores, ids = reranker.search(queries, depth, depth=depth)
    assert scores.dtype == np.float32 and ids.shape == (len(queries), depth)
    reordered = 0
    for query, row, got_scores, got in zip(queries, first_ids, scores, ids):
        assert sorted(got) == sorted(row)  # a permutation of the first stage's top depth
        expected = cross_encoder.score([query] * depth, [by_id[i] for i in row]).numpy()
        order = np.argsort(-expected, kind="stable")
        assert list(got) == [row[i] for i in order]
        np.testing.assert_allclose(got_scores, expected[order], rtol=1e-5, atol=1e-6)
        reordered += list(got) != list(row)
    assert reordered >= len(queries) // 2  # the cross-encoder, not the first stage, decided
    # k < depth: the first k of the same re-ranked list.
    top_scores, top = reranker.search(queries, 3, depth=depth)
    np.testing.assert_array_equal(top, ids[:, :3])
    np.testing.assert_allclose(top_scores, scores[:, :3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_depth_equal_to_k_returns_the_first_stages_passages(cross_encoder, passages, queries, k):
    first = BM25Retriever().fit(passages[:N])
    reranker = Reranker(BM25Retriever(), cross_encoder).fit(passages[:N])
    _, expected = first.search(queries, k)
    _, got = reranker.search(queries, k, depth=k)
    for a, b in zip(got, expected):
        assert set(a) == set(b)


def test_the_default_depth_grows_to_k_and_stops_at_the_corpus(cross_encoder, passages, queries):
    reranker = Reranker(BM25Retriever(), cross_encoder, depth=4).fit(passages[:N])
    assert reranker.search(queries, 6)[1].shape == (len(queries), 6)  # depth raised to k
    _, everything = reranker.search(queries[:1], 5, depth=10 * N)  # the whole corpus re-scored
    _, all_ids = reranker.search(queries[:1], N, depth=N)
    np.testing.assert_array_equal(everything[0], all_ids[0, :5])


def test_mixing_adds_the_first_stages_score_to_a_share_of_the_cross_encoders(
        cross_encoder, passages, queries):
    corpus = passages[:N]
    by_id = {p["id"]: p for p in corpus}
    depth = 10
    first_scores, first_ids = BM25Retriever().fit(corpus).search(queries, depth)
    _, kept = Reranker(BM25Retriever(), cross_encoder, depth=depth, mix=0).fit(corpus).search(
        queries, depth)
    np.testing.assert_array_equal(kept, first_ids)  # mix 0: the first stage's ranking
    # The untrained cross-encoder's scores differ little, so a large share is needed to matter.
    scores, ids = Reranker(BM25Retriever(), cross_encoder, depth=depth, mix=1e3).fit(corpus).search(
        queries, depth)
    differs = 0
    for query, row, s, got_scores, got in zip(queries, first_ids, first_scores, scores, ids):
        ce = cross_encoder.score([query] * depth, [by_id[i] for i in row]).numpy()
        mixed = dict(zip(row, np.asarray(s, dtype=np.float64) + 1e3 * ce.astype(np.float64)))
        assert sorted(got) == sorted(row)
        # Each returned score is that passage's mix (the batch the scores were computed in can
        # move the last digits), and the list is sorted by it.
        np.testing.assert_allclose(got_scores, [mixed[i] for i in got], rtol=1e-4)
        assert all(np.diff([mixed[i] for i in got]) <= 1e-3)
        differs += list(got) != list(row)
    assert differs  # the mix changed some ranking


@pytest.mark.parametrize("mix", [-0.1, float("nan"), float("inf"), True, "0.3"])
def test_a_bad_mix_is_refused_at_fit(cross_encoder, passages, mix):
    with pytest.raises(ValueError, match="mix must be None"):
        Reranker(BM25Retriever(), cross_encoder, mix=mix).fit(passages[:N])


# -- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def training_set(passages):
    known = {p["id"] for p in passages}
    return [q for q in load_questions("train") if q["passage_id"] in known][:16]


def test_a_few_steps_of_listwise_training_lower_the_loss(tokenizer, passages, training_set):
    model = tiny(tokenizer, seed=0)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # start near chance, as build() does
    first_stage = BM25Retriever().fit(passages)
    history = train_cross_encoder(model, training_set, passages, first_stage, steps=40,
                                  batch_size=8, lr=3e-3, n_negatives=3, warmup=0, log_every=10)
    assert history["step"] == [10, 20, 30, 40]
    assert abs(history["loss"][0] - math.log(4)) < 0.1  # chance among 1 + 3 passages
    assert history["loss"][-1] < history["loss"][0] - 0.3
    assert not model.training


def test_the_negatives_are_hard_ones_first_never_the_gold_one_and_distinct(passages, training_set):
    question = training_set[0]
    gold = question["passage_id"]
    hard = [p["id"] for p in passages[:3] if p["id"] != gold][:2]
    batches = cross_encoder_batches([question], passages, [[gold, *hard]], batch_size=1,
                                    n_negatives=5, seed=0)
    for _ in range(20):
        [(text, group)] = next(batches)
        ids = [p["id"] for p in group]
        assert text == question["question"] and ids[0] == gold
        assert gold not in ids[1:] and len(set(ids)) == 6
        assert set(hard) <= set(ids[1:])  # both hard negatives, then random passages


def test_listwise_loss_is_the_cross_entropy_of_the_first_column():
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = -(torch.log_softmax(scores, 1)[:, 0]).mean()
    torch.testing.assert_close(listwise_loss(scores), expected)
    with pytest.raises(ValueError, match=r"\[B, 1 \+ n\]"):
        listwise_loss(torch.zeros(4, 1))


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(cross_encoder, passages):
    return Reranker(BM25Retriever(), cross_encoder).fit(passages[:N])


@pytest.mark.parametrize("call, error, problem", [
    (lambda r: r.search([], 3), ValueError, "queries is empty"),
    (lambda r: r.search(["What money?", 7], 3), TypeError,
     r"queries\[1\] must be a non-empty string"),
    (lambda r: r.search(["What money?", "  "], 3), ValueError, r"queries\[1\] must be a non-empty"),
    (lambda r: r.search(["What money?"], 5, depth=3), ValueError, "depth=3 is smaller than k=5"),
    (lambda r: r.search(["What money?"], 0), ValueError, "k must be at least 1"),
    (lambda r: r.search(["What money?"], -2, depth=5), ValueError, "k must be at least 1"),
    (lambda r: r.search(["What money?"], 1, depth=0), ValueError, "depth must be a positive int"),
    (lambda r: r.search(["What money?"], 1, depth=2.5), ValueError, "depth must be a positive int"),
])
def test_bad_searches_are_refused_clearly(fitted, call, error, problem):
    with pytest.raises(error, match=problem):
        call(fitted)


@pytest.mark.parametrize("call, error, problem", [
    (lambda m, p: m.score([], []), ValueError, "questions is empty"),
    (lambda m, p: m.score(["What money?", None], p[:2]), TypeError,
     r"questions\[1\] must be a non-empty string"),
    (lambda m, p: m.score("What money?", p[:1]), TypeError, "must be a list of strings"),
    (lambda m, p: m.score(["What money?"], p[:2]), ValueError, "1 questions and 2 passages"),
    (lambda m, p: m.score(["What money?"], [{"text": "no title"}]), ValueError,
     "needs the keys 'title' and 'text'"),
    (lambda m, p: m.score(["What money?"], p[:1], batch_size=0), ValueError,
     "batch_size must be a positive int"),
])
def test_bad_pairs_are_refused_clearly(cross_encoder, passages, call, error, problem):
    with pytest.raises(error, match=problem):
        call(cross_encoder, passages)


def test_bad_settings_are_refused_at_fit(cross_encoder, passages):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        Reranker(BM25Retriever(), cross_encoder, depth=0).fit(passages[:N])
    with pytest.raises(TypeError, match="cross_encoder must be a CrossEncoder"):
        Reranker(BM25Retriever(), BM25Retriever()).fit(passages[:N])
    with pytest.raises(ValueError, match=r"corpus\[0\] has no id"):
        Reranker(BM25Retriever(), cross_encoder).fit([{"title": "t", "text": "x"}])


@pytest.mark.parametrize("change, problem", [
    (lambda q, p: ([], p), "questions is empty"),
    (lambda q, p: ([{"question": q[0]["question"]}], p),
     "must be a dict with 'question' and 'passage_id'"),
    (lambda q, p: (q, [{"title": x["title"], "text": x["text"]} for x in p]), "dicts with 'id'"),
    (lambda q, p: (q, [x for x in p if x["id"] != q[0]["passage_id"]]), "not among the passages"),
])
def test_bad_training_data_is_refused_clearly(tokenizer, passages, training_set, change, problem):
    questions, docs = change(training_set, passages)
    with pytest.raises(ValueError, match=problem):
        train_cross_encoder(tiny(tokenizer), questions, docs, BM25Retriever().fit(passages),
                            steps=1)


def test_bad_training_settings_are_refused_clearly(tokenizer, passages, training_set):
    bm25 = BM25Retriever().fit(passages)
    with pytest.raises(ValueError, match="n_negatives must be a positive int"):
        train_cross_encoder(tiny(tokenizer), training_set, passages, bm25, steps=1, n_negatives=0)
    with pytest.raises(ValueError, match="batch_size=17 is larger than the 16"):
        train_cross_encoder(tiny(tokenizer), training_set, passages, bm25, steps=1, batch_size=17)
    with pytest.raises(TypeError, match="model must be a CrossEncoder"):
        train_cross_encoder(bm25, training_set, passages, bm25, steps=1)


def test_an_over_long_pair_is_refused_not_cut(tokenizer, passages):
    # Policy: nothing is truncated. A pair of exactly max_positions tokens is read; one token more
    # is refused with an error that names the pair.
    question, passage = "What money?", passages[0]
    length = tiny(tokenizer).tokenize([question], [passage])["input_ids"].shape[1]
    exact = tiny(tokenizer, max_positions=length)
    assert exact.score([question], [passage]).shape == (1,)
    short = tiny(tokenizer, max_positions=length - 1)
    with pytest.raises(ValueError, match=rf"1 of the 2 .* pairs are longer than the model's "
                                         rf"max_position_embeddings={length - 1}.*pair 1 "
                                         rf"\({length} tokens.*Nothing is cut"):
        short.score(["Money?", question], [("", "Paris."), passage])
    reranker = Reranker(BM25Retriever(), short).fit(passages[:N])
    with pytest.raises(ValueError, match="Nothing is cut"):
        reranker.search([question], N)  # the whole corpus: some pair is too long
