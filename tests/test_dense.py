"""ragtutor.dense: the loss, the tokenizer, the DPR encoders, batches, retrievers, the checkpoint."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, DPRContextEncoder, DPRQuestionEncoder

from ragtutor.data import load_passages, load_questions
from ragtutor.dense import (BiEncoder, DenseRetriever, HybridRetriever, biencoder_batches,
                            bm25_hard_negatives, build_tokenizer, evaluate_retriever,
                            in_batch_negatives_loss, reciprocal_rank_fusion, train_biencoder,
                            training_examples)
from ragtutor.index import VectorIndex
from ragtutor.sparse import BM25Retriever
from reproduction import assert_same_start

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "retriever"


@pytest.fixture(scope="module")
def kb():
    passages = load_passages()
    questions = {split: load_questions(split) for split in ("train", "dev", "test")}
    return passages, questions


@pytest.fixture(scope="module")
def tokenizer(kb):
    passages, questions = kb
    return build_tokenizer(passages, [q for split in questions.values() for q in split])


def small_model(tokenizer, **options):
    torch.manual_seed(0)
    return BiEncoder.build(tokenizer, hidden_size=16, layers=1, heads=2, intermediate_size=32,
                           **options)


# --- the loss ----------------------------------------------------------------------------------

def brute_force_loss(q, p):
    """-log softmax of each question's own passage among all passages, one example at a time."""
    losses = []
    for i in range(len(q)):
        scores = [float(q[i] @ p[j]) for j in range(len(p))]
        top = max(scores)
        log_normaliser = top + math.log(sum(math.exp(s - top) for s in scores))
        losses.append(log_normaliser - scores[i])
    return sum(losses) / len(losses)


@pytest.mark.parametrize("batch, extra", [(1, 0), (5, 0), (8, 8), (4, 3)])
def test_loss_equals_a_brute_force_per_example_computation(batch, extra):
    generator = torch.Generator().manual_seed(batch + extra)
    q = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
    p = torch.randn(batch + extra, 6, generator=generator, dtype=torch.float64)
    assert in_batch_negatives_loss(q, p).item() == pytest.approx(brute_force_loss(q, p), rel=1e-12)


def test_loss_is_ln_batch_when_every_score_is_equal():
    q, p = torch.zeros(64, 8), torch.zeros(128, 8)
    assert in_batch_negatives_loss(q, p).item() == pytest.approx(math.log(128))


def test_loss_gradient_reaches_both_sides():
    q = torch.randn(4, 3, requires_grad=True)
    p = torch.randn(8, 3, requires_grad=True)
    in_batch_negatives_loss(q, p).backward()
    assert q.grad.abs().sum() > 0 and p.grad[4:].abs().sum() > 0  # hard negatives get gradient too


@pytest.mark.parametrize("q, p, problem", [
    (torch.zeros(4, 3), torch.zeros(4, 5), "same H"),
    (torch.zeros(4), torch.zeros(4, 3), "same H"),
    (torch.zeros(4, 3), torch.zeros(3, 3), "fewer than the 4 questions"),
])
def test_loss_rejects_bad_shapes(q, p, problem):
    with pytest.raises(ValueError, match=problem):
        in_batch_negatives_loss(q, p)


# --- the tokenizer -----------------------------------------------------------------------------

def test_tokenizer_adds_the_first_token_and_decodes_losslessly(tokenizer, kb):
    passages, questions = kb
    texts = [q["question"] for q in questions["test"]] + ["What is the capital of Guinea-Bissau?"]
    ids = tokenizer(texts).input_ids
    assert all(row[0] == tokenizer.bos_token_id and row[-1] == tokenizer.eos_token_id for row in ids)
    assert tokenizer.unk_token_id not in {t for row in ids for t in row}
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == texts
    pair = tokenizer("France", "The capital of France is Paris.").input_ids
    assert tokenizer.convert_ids_to_tokens(pair)[:4] == ["<s>", "▁France", "</s>", "▁The"]
    assert tokenizer.convert_ids_to_tokens(pair)[-1] == "</s>"
    assert "token_type_ids" not in tokenizer("x")  # DPR's segment ids are all zero


def test_tokenizer_saved_and_loaded_with_autotokenizer_behaves_the_same(tokenizer, kb, tmp_path):
    passages, questions = kb
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [q["question"] for q in questions["dev"][:100]]
    assert loaded(texts).input_ids == tokenizer(texts).input_ids
    titles, bodies = [p["title"] for p in passages[:50]], [p["text"] for p in passages[:50]]
    assert loaded(titles, bodies).input_ids == tokenizer(titles, bodies).input_ids
    assert loaded.batch_decode(loaded(texts).input_ids, skip_special_tokens=True) == texts
    assert loaded.model_input_names == ["input_ids", "attention_mask"]


# --- the encoders ------------------------------------------------------------------------------

def test_first_token_pooling_is_the_first_output_vector(tokenizer, kb):
    model = small_model(tokenizer).eval()
    batch = model.tokenize_questions(["What is the capital of France?", "What money is spent in Chad?"])
    bert = model.question_encoder.question_encoder.bert_model
    with torch.no_grad():
        expected = bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state[:, 0]
        torch.testing.assert_close(model.question_vectors(batch), expected)


def test_mean_pooling_ignores_padding(tokenizer):
    model = small_model(tokenizer, pooling="mean").eval()
    alone = model.encode_questions(["Which landmass is Chad on?"])
    padded = model.encode_questions(["Which landmass is Chad on?",
                                     "How many grams does a cubic centimetre of iron weigh?"])
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-5, atol=1e-6)


def test_tied_encoders_share_every_weight_until_untied(tokenizer):
    model = small_model(tokenizer)
    assert model.tied
    question = model.question_encoder.question_encoder.bert_model
    assert model.context_encoder.ctx_encoder.bert_model is question
    before = model.encode_passages(["The capital of France is Paris."])
    model.untie()
    assert not model.tied
    np.testing.assert_array_equal(model.encode_passages(["The capital of France is Paris."]), before)
    with torch.no_grad():
        question.embeddings.word_embeddings.weight.add_(1.0)
    np.testing.assert_array_equal(model.encode_passages(["The capital of France is Paris."]), before)
    assert not small_model(tokenizer, tied=False).tied


@pytest.mark.parametrize("tied", [True, False])
def test_encoders_round_trip_through_save_pretrained(tokenizer, kb, tmp_path, tied):
    passages, questions = kb
    model = small_model(tokenizer, tied=tied)
    if not tied:
        with torch.no_grad():  # make the two sides differ, so a mix-up would show
            model.context_encoder.ctx_encoder.bert_model.embeddings.word_embeddings.weight.mul_(2)
    texts = [q["question"] for q in questions["dev"][:20]]
    model.save_pretrained(tmp_path)
    loaded = BiEncoder.from_pretrained(tmp_path)
    assert loaded.tied == tied and loaded.pooling == "first"
    np.testing.assert_array_equal(loaded.encode_questions(texts), model.encode_questions(texts))
    np.testing.assert_array_equal(loaded.encode_passages(passages[:20]), model.encode_passages(passages[:20]))
    # Each side is a plain Hugging Face DPR model, as chapter 06 loads it.
    hf_question = DPRQuestionEncoder.from_pretrained(tmp_path / "question_encoder").eval()
    hf_context = DPRContextEncoder.from_pretrained(tmp_path / "context_encoder").eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        np.testing.assert_allclose(hf_question(**batch).pooler_output.numpy(),
                                   model.encode_questions(texts), rtol=1e-6, atol=1e-6)
        batch = tokenizer([p["title"] for p in passages[:20]], [p["text"] for p in passages[:20]],
                          padding=True, return_tensors="pt")
        np.testing.assert_allclose(hf_context(**batch).pooler_output.numpy(),
                                   model.encode_passages(passages[:20]), rtol=1e-6, atol=1e-6)
    assert (tmp_path / "question_encoder" / "model.safetensors").is_file()


def test_loading_a_folder_that_is_not_a_biencoder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="biencoder.json is missing"):
        BiEncoder.from_pretrained(tmp_path)


def test_an_input_longer_than_the_model_is_refused(tokenizer):
    model = small_model(tokenizer, max_positions=8)
    with pytest.raises(ValueError, match="more than the model's max_position_embeddings=8"):
        model.encode_questions(["How many grams does a cubic centimetre of iron weigh?"])


@pytest.mark.parametrize("passages, error", [
    ("one passage", TypeError), ([{"title": "France"}], ValueError), ([3], TypeError)])
def test_bad_passages_are_refused(tokenizer, passages, error):
    with pytest.raises(error):
        small_model(tokenizer).encode_passages(passages)


# --- training data -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(kb):
    passages, questions = kb
    return training_examples(passages, questions["train"][:600])


def test_hard_negatives_never_come_from_the_gold_passages_group(examples):
    negatives = bm25_hard_negatives(examples)
    found = [(e, n) for e, n in zip(examples, negatives) if n is not None]
    assert len(found) > 0.9 * len(examples)
    assert all(n["group"] != e["group"] for e, n in found)
    # The best BM25 negative usually names the question's entity: a hard one.
    assert np.mean([n["title"] == e["title"] for e, n in found]) > 0.5


@pytest.mark.parametrize("use_negatives", [False, True])
def test_a_batch_never_repeats_a_passage_group(examples, use_negatives):
    negatives = bm25_hard_negatives(examples) if use_negatives else None
    by_question = {}
    for e in examples:
        by_question.setdefault(e["question"], set()).add(e["group"])
    groups = {(e["title"], e["text"]): e["group"] for e in examples}
    if negatives:
        groups.update({(n["title"], n["text"]): n["group"] for n in negatives if n})
    batches = biencoder_batches(examples, 32, seed=0, hard_negatives=negatives)
    for _ in range(40):  # more than one epoch
        questions, positives, hard = next(batches)
        assert len(questions) == len(positives) == 32
        assert (hard is None) == (not use_negatives)
        shown = [groups[p] for p in positives + (hard or [])]
        assert len(set(shown)) == len(shown)


def test_batches_reject_a_batch_larger_than_the_data(examples):
    with pytest.raises(ValueError, match="batch_size must be between 1"):
        next(biencoder_batches(examples[:10], 64))


def test_training_lowers_the_loss(tokenizer, examples):
    torch.manual_seed(0)
    model = BiEncoder.build(tokenizer, hidden_size=32, layers=1, heads=2, intermediate_size=64,
                            pooling="mean")
    history = train_biencoder(model, biencoder_batches(examples[:64], 16, seed=0), lr=3e-3, warmup=5,
                              max_steps=60, log_every=10, progress=False)
    assert history["step"] == [10, 20, 30, 40, 50, 60]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert not model.training


def test_training_needs_a_stopping_rule(tokenizer, examples):
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        train_biencoder(small_model(tokenizer), biencoder_batches(examples, 8))


# --- retrievers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dense(tokenizer, kb):
    # Bare (title, text) pairs, so that ids are positions, which the brute-force checks index by.
    return DenseRetriever(small_model(tokenizer)).fit([(p["title"], p["text"]) for p in kb[0][:300]])


def test_dense_search_is_exact_dot_product_search(dense, kb):
    queries = [q["question"] for q in kb[1]["dev"][:10]]
    scores, ids = dense.search(queries, 5)
    assert scores.shape == ids.shape == (10, 5)
    brute = dense.encoder.encode_questions(queries) @ dense.embeddings_.T
    # An untrained model's scores nearly tie, so compare scores: the ids found score what was
    # returned, and nothing better was missed.
    np.testing.assert_allclose(np.take_along_axis(brute, ids, axis=1), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(-np.sort(-brute, axis=1)[:, :5], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.score(queries[0]), brute[0], rtol=1e-5, atol=1e-6)


def test_dense_retriever_can_search_an_approximate_index(tokenizer, kb):
    retriever = DenseRetriever(small_model(tokenizer), index=VectorIndex("hnsw")).fit(kb[0][:300])
    assert retriever.index.ntotal == 0  # the given index is a template, left unfitted
    assert retriever.search(["What is the capital of France?"], 3)[1].shape == (1, 3)


@pytest.mark.parametrize("call, error, problem", [
    (lambda r: r.search("What money?", 3), TypeError, "list of queries"),
    (lambda r: r.search([], 3), ValueError, "queries is empty"),
    (lambda r: r.search(["What money?"], 301), ValueError, "k=301 is larger than the corpus"),
    (lambda r: r.score(["What money?"]), TypeError, "query must be a string"),
])
def test_dense_retriever_rejects_bad_queries(dense, call, error, problem):
    with pytest.raises(error, match=problem):
        call(dense)


def test_an_unfitted_dense_retriever_says_so(tokenizer):
    with pytest.raises(ValueError, match="not fitted yet"):
        DenseRetriever(small_model(tokenizer)).search(["x"], 1)


def test_reciprocal_rank_fusion_follows_the_formula():
    fused = reciprocal_rank_fusion([[2, 0, 1], [0, 3]], n_docs=5, k=60)
    expected = [1 / 62 + 1 / 61, 1 / 63, 1 / 61, 1 / 62, 0.0]
    np.testing.assert_allclose(fused, expected)


def test_hybrid_search_fuses_the_two_rankings(dense, kb):
    passages = kb[0][:300]
    bm25 = BM25Retriever().fit([f"{p['title']} {p['text']}" for p in passages])
    hybrid = HybridRetriever(bm25, dense, k=60, depth=50)
    queries = [q["question"] for q in kb[1]["dev"][:8]]
    scores, ids = hybrid.search(queries, 10)
    assert scores.shape == ids.shape == (8, 10)
    first, second = bm25.search(queries, 50)[1], dense.search(queries, 50)[1]
    for row_scores, row_ids, a, b in zip(scores, ids, first, second):
        expected = reciprocal_rank_fusion([a, b], 300)
        np.testing.assert_allclose(row_scores, np.sort(expected)[::-1][:10])
        np.testing.assert_allclose(expected[row_ids], row_scores)
    expected = reciprocal_rank_fusion([bm25.search(queries[:1], 50)[1][0],
                                       dense.search(queries[:1], 50)[1][0]], 300)
    np.testing.assert_allclose(hybrid.score(queries[0]), expected)


def test_hybrid_refuses_retrievers_of_different_corpora(dense, kb):
    bm25 = BM25Retriever().fit([p["text"] for p in kb[0][:100]])
    with pytest.raises(ValueError, match="different corpora"):
        HybridRetriever(bm25, dense).search(["What is the capital of France?"], 3)


def test_evaluate_retriever_reports_all_and_mismatch(kb):
    passages, questions = kb
    bm25 = BM25Retriever().fit([f"{p['title']} {p['text']}" for p in passages])
    report = evaluate_retriever(bm25, questions["dev"], [p["id"] for p in passages])
    assert report["all"]["n"] == len(questions["dev"])
    assert report["mismatch"]["n"] == sum(q["mismatch"] for q in questions["dev"])
    # Chapter 01's numbers for BM25 on dev.
    assert report["all"]["recall@1"] == pytest.approx(0.635, abs=0.001)
    assert report["mismatch"]["recall@1"] < 0.3


# --- the checkpoint ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def record():
    return json.loads((CHECKPOINT / "training.json").read_text())


def test_the_checkpoint_loads_and_reaches_its_recorded_metrics(kb, record):
    passages, questions = kb
    model = BiEncoder.from_pretrained(CHECKPOINT)
    assert model.tied and model.pooling == "first"
    retriever = DenseRetriever(model).fit(passages)
    ids = [p["id"] for p in passages]
    for split in ("dev", "test"):
        report = evaluate_retriever(retriever, questions[split], ids)
        for subset, row in record["metrics"][split].items():
            for name, value in row.items():
                assert report[subset][name] == pytest.approx(value, abs=1e-4), (split, subset, name)


def test_the_checkpoint_is_small_and_in_safetensors():
    files = list(CHECKPOINT.rglob("*"))
    assert sum(f.stat().st_size for f in files if f.is_file()) < 10e6
    assert {f.name for f in files} >= {"model.safetensors", "tokenizer.json", "training.json",
                                       "biencoder.json"}
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth")]


# The slow test reruns the first REPRODUCE_STEPS steps of the checkpoint's run (tests/reproduction.py
# says why the start). Measured: against the recording machine, reruns on another machine gave
# 50-step loss windows within 1e-4 of the recorded ones up to step 650 with 1 thread (4e-3 at step
# 800, 1e-2 at step 1,000, inside the jump in Recall@1) and up to step 500 with 2 threads, and
# the same dev Recall@1 at steps 250 and 500 to four decimals. The tolerances leave 100 times the measured gap. What
# they still catch, tried: seed 1 instead of 0 (another batch order and initialisation) departs
# by 0.26 at step 50; a loss that drops the hard negatives (scores against the gold passages
# only) departs by 0.71 at step 50 and never leaves the plateau (4.19 at step 500 against 2.67).
REPRODUCE_STEPS = 500
LOSS_TOLERANCE = 0.01
RECALL_TOLERANCE = 0.01  # 5 of the 521 dev questions


@pytest.mark.slow
def test_the_checkpoint_script_reproduces_the_start_of_its_recorded_run(record, tmp_path):
    """Rerun scripts/train_retriever.py with the checkpoint's settings for the first 500 of its
    3,000 steps (under two minutes on one thread) and compare the loss curve and the dev
    evaluations with the checkpoint's recorded history: the learning rate does not depend on
    the total number of steps, so these are the first 500 steps of the same run."""
    out = tmp_path / "retriever"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_retriever.py"), "--out", str(out),
                    "--stop-after", str(REPRODUCE_STEPS), "--threads", "1"],
                   check=True, cwd=ROOT, capture_output=True)
    rerun = json.loads((out / "training.json").read_text())
    assert rerun["config"] == record["config"] and rerun["stop_after"] == REPRODUCE_STEPS
    assert_same_start(rerun["history"], record["history"], REPRODUCE_STEPS, LOSS_TOLERANCE,
                      {"dev_recall@1": RECALL_TOLERANCE, "dev_mismatch_recall@1": RECALL_TOLERANCE})


def test_batches_that_cannot_be_filled_are_refused_instead_of_waited_for():
    # 44 passage groups cannot fill a batch of 64 examples with distinct groups: this used to loop
    # for ever.
    examples = [{"question": f"q{i}", "title": "t", "text": f"x{i}", "group": i % 44}
                for i in range(200)]
    with pytest.raises(ValueError, match="lower batch_size"):
        next(biencoder_batches(examples, batch_size=64))
    assert len(next(biencoder_batches(examples, batch_size=44))[0]) == 44
