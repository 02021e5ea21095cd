"""Chapter 05's package side: RAGModel (retriever + generator trained end to end) and train_rag,
checked against chapter 04's losses computed by hand from the model's parts."""
import copy
import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtutor.data import load_passages, load_questions
from ragtutor.dense import (BiEncoder, build_tokenizer, cold_question_encoder,
                            train_question_encoder)
from ragtutor.generation import build_seq2seq, combined_input, train_tokenizer
from ragtutor.rag import rag_sequence_nll, rag_token_nll, teacher_forcing
from ragtutor.rag_model import RAGModel, train_rag
from ragtutor.sparse import BM25Retriever
from reproduction import assert_same_start

N_PASSAGES = 40
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture(scope="module")
def parts():
    """A tiny random bi-encoder and BART over the first 40 passages of the knowledge base."""
    torch.manual_seed(0)
    passages = load_passages()[:N_PASSAGES]
    entities = {p["entity_id"] for p in passages}
    questions = [q for split in ("train", "dev", "test") for q in load_questions(split)
                 if q["entity_id"] in entities]
    bi_tokenizer = build_tokenizer(passages, questions)
    biencoder = BiEncoder.build(bi_tokenizer, hidden_size=16, layers=1, heads=2,
                                intermediate_size=32, max_positions=128)
    texts = [combined_input(p["title"], p["text"], q["question"]) for p in passages
             for q in questions[:1]] + [q["question"] for q in questions]
    texts += [a for q in questions for a in q["answers"]]
    gen_tokenizer = train_tokenizer(texts + [p["text"] for p in passages])
    generator = build_seq2seq(gen_tokenizer, d_model=16, layers=1, heads=2, ffn_dim=32,
                              max_positions=128)
    return biencoder, generator, gen_tokenizer, passages, questions


def model_of(parts, **settings):
    biencoder, generator, tokenizer, passages, _ = parts
    return RAGModel(biencoder, generator, tokenizer, passages, **settings)


def by_hand(model, questions, answers, ids):
    """Chapter 04's loss from the model's parts, without RAGModel.forward, for the documents
    ``ids`` [B, K]; also checks that they are a top K of the brute-force scores q(x)·e(d)."""
    encoder = model.biencoder
    q = encoder.question_vectors(encoder.tokenize_questions(questions))
    e = torch.from_numpy(encoder.encode_passages(model.passages))
    all_scores = (q.detach() @ e.T).numpy()
    kth_best = np.sort(all_scores, axis=1)[:, -model.n_docs]
    picked = np.take_along_axis(all_scores, ids.numpy(), axis=1)
    assert (picked >= kth_best[:, None] - 1e-4).all()  # ties among random vectors may reorder
    assert (np.diff(picked, axis=1) <= 1e-4).all()     # best first
    scores = (q[:, None, :] * e[ids]).sum(-1)
    sources = [combined_input(model.passages[i]["title"], model.passages[i]["text"], question)
               for question, row in zip(questions, ids.tolist()) for i in row]
    batch = model.generator_tokenizer(sources, padding=True, return_tensors="pt")
    answer_ids = [a[1:] for a in model.generator_tokenizer(answers).input_ids]
    decoder_input_ids, target = teacher_forcing(answer_ids, 1, 0)
    logits = model.generator(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             decoder_input_ids=decoder_input_ids.repeat_interleave(model.n_docs, 0)
                             ).logits
    logprobs = torch.log_softmax(logits, -1).view(len(questions), model.n_docs, *logits.shape[1:])
    nll = rag_sequence_nll if model.variant == "sequence" else rag_token_nll
    return nll(logprobs, scores, target, 0)


@pytest.mark.parametrize("variant", ["sequence", "token"])
def test_forward_equals_the_chapter_04_loss_from_the_parts(parts, variant):
    model = model_of(parts, n_docs=4, variant=variant).eval()
    questions = [q["question"] for q in parts[4][:6]]
    answers = [q["answers"][0] for q in parts[4][:6]]
    out = model(questions, answers)
    expected = by_hand(model, questions, answers, out["doc_ids"])
    assert torch.allclose(out["nll"], expected, atol=1e-5)
    assert torch.isclose(out["loss"], expected.mean(), atol=1e-5)


def test_gradients_reach_the_question_encoder_and_generator_not_the_index(parts):
    biencoder = parts[0]
    before = {k: v.clone() for k, v in biencoder.state_dict().items()}
    model = model_of(parts, n_docs=3, train_generator=True)
    model.train()
    model([q["question"] for q in parts[4][:4]], [q["answers"][0] for q in parts[4][:4]])[
        "loss"].backward()
    question_bert = model.biencoder.question_encoder.question_encoder.bert_model
    layer = question_bert.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    assert question_bert.embeddings.word_embeddings.weight.grad is None  # frozen by default
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    assert all(p.grad is None for p in model.biencoder.context_encoder.parameters())
    assert not model.passage_vectors.requires_grad
    # The caller's bi-encoder is copied, never changed (nor untied).
    assert biencoder.tied
    assert all(torch.equal(before[k], v) for k, v in biencoder.state_dict().items())


def test_a_frozen_generator_gets_no_gradient(parts):
    model = model_of(parts, n_docs=3)
    model.train()
    model([q["question"] for q in parts[4][:3]], [q["answers"][0] for q in parts[4][:3]])[
        "loss"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(not p.requires_grad for p in model.generator.parameters())


def test_save_and_load_round_trip(parts, tmp_path):
    model = model_of(parts, n_docs=3, variant="token").eval()
    questions = [q["question"] for q in parts[4][:5]]
    answers = [q["answers"][0] for q in parts[4][:5]]
    model.save_pretrained(tmp_path / "rag")
    loaded = RAGModel.from_pretrained(tmp_path / "rag")
    assert (loaded.n_docs, loaded.variant) == (3, "token")
    with torch.no_grad():
        a, b = model(questions, answers), loaded(questions, answers)
    assert torch.equal(a["doc_ids"], b["doc_ids"])
    assert torch.allclose(a["nll"], b["nll"], atol=1e-6)
    assert loaded.generate(questions) == model.generate(questions)
    assert RAGModel.from_pretrained(tmp_path / "rag", n_docs=2).n_docs == 2


def test_loading_a_folder_without_a_model_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="rag.json is missing"):
        RAGModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("variant", ["sequence", "token"])
def test_batched_decoding_equals_one_question_at_a_time(parts, variant):
    model = model_of(parts, n_docs=3, variant=variant)
    questions = [q["question"] for q in parts[4][:7]]
    assert model.generate(questions, max_new_tokens=5) == [
        model.generate([q], max_new_tokens=5)[0] for q in questions]


def test_rag_sequence_decoding_picks_the_most_likely_candidate(parts):
    model = model_of(parts, n_docs=3, variant="sequence").eval()
    question = parts[4][0]["question"]
    answer_ids, _, _ = model._decode_batch([question], max_new_tokens=6)
    best = model.generator_tokenizer.decode(answer_ids[0], skip_special_tokens=True)
    # Every document's own greedy answer is a candidate; none may be more likely than the pick.
    with torch.no_grad():
        scores, ids = model.retrieve_rows([question])
        inputs, mask = model.generator_inputs([question], ids)
        states = model.generator.get_encoder()(input_ids=inputs, attention_mask=mask)
        per_doc = model._greedy(states.last_hidden_state, mask, None, 6)
    texts = {model.generator_tokenizer.decode(a, skip_special_tokens=True) for a in per_doc}
    if "" in texts or best == "":
        pytest.skip("an untrained model produced an empty answer")
    with torch.no_grad():
        nll = {t: float(model([question], [t])["nll"][0]) for t in texts}
    assert best in nll
    assert nll[best] <= min(nll.values()) + 1e-5


def test_answer_reports_passages_with_prior_and_posterior(parts):
    model = model_of(parts, n_docs=4, variant="token")
    result = model.answer(parts[4][0]["question"])
    assert len(result["passages"]) == 4
    assert math.isclose(sum(p["prior"] for p in result["passages"]), 1.0, abs_tol=1e-6)
    assert math.isclose(sum(p["posterior"] for p in result["passages"]), 1.0, abs_tol=1e-6)
    for t in range(len(result["tokens"])):
        assert math.isclose(sum(p["token_posteriors"][t] for p in result["passages"]), 1.0,
                            abs_tol=1e-6)


def test_bad_input_gets_a_clear_error(parts):
    model = model_of(parts, n_docs=3)
    with pytest.raises(ValueError, match="is empty"):
        model(["  "], ["x"])
    with pytest.raises(ValueError, match="questions is empty"):
        model.generate([])
    with pytest.raises(TypeError, match="list of strings"):
        model.generate("What is the capital of France?")
    long_question = "What is " + " ".join(["France"] * 150) + "?"
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate([long_question])
    with pytest.raises(ValueError, match="more than the 40 passages"):
        model_of(parts, n_docs=41)
    with pytest.raises(ValueError, match="variant"):
        model_of(parts, variant="both")
    with pytest.raises(ValueError, match="non-empty string"):
        model(["What is the capital of France?"], [""])


def test_a_question_of_unknown_tokens_only_is_flagged(parts):
    from ragtutor.retrieval import UnknownQueryWarning

    model = model_of(parts, n_docs=3)
    with pytest.warns(UnknownQueryWarning, match=r"1 of 2 queries .*\[1\] '😀'"):
        model.generate(["What is the capital of France?", "😀"], max_new_tokens=2)
    with pytest.warns(UnknownQueryWarning, match="the question encoder"):
        model.retrieve(["巴黎"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.retrieve(["What is the capital of France?"])


@pytest.mark.parametrize("question", ["巴黎", "😀", "\x00"])
def test_the_shipped_models_flag_a_question_of_no_known_word(question):
    # The shipped tokenizers are BPE: they read "巴黎" as a bare word-boundary piece "▁" and two
    # unknown tokens, and the lone "▁" used to count as a known word (answer '97', no warning).
    from ragtutor.dense import DenseRetriever
    from ragtutor.retrieval import UnknownQueryWarning

    model = RAGModel.from_pretrained(CHECKPOINTS / "rag_token")
    with pytest.warns(UnknownQueryWarning, match="the question encoder"):
        model.generate([question])
    retriever = DenseRetriever(BiEncoder.from_pretrained(CHECKPOINTS / "retriever"))
    retriever.fit(load_passages()[:20])
    with pytest.warns(UnknownQueryWarning, match="the question encoder"):
        retriever.search([question], k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.retrieve(["capital of germany", "Which city is the capital of France?"])
        retriever.search(["capital of germany"], k=2)


def test_a_fixed_retriever_must_index_the_models_own_passages(parts):
    # A BM25 retriever fitted on more passages than the model holds used to fail deep inside
    # retrieval (KeyError 'FRA/capital', or IndexError for bare documents).
    from ragtutor.sparse import BM25Retriever

    _, generator, tokenizer, passages, _ = parts
    bm25 = BM25Retriever().fit(passages)
    with pytest.raises(ValueError, match="not among the model's passages .* fit the retriever"):
        RAGModel(bm25, generator, tokenizer, passages[:20], n_docs=2)
    bare = BM25Retriever().fit([p["title"] + " " + p["text"] for p in passages])
    with pytest.raises(ValueError, match="fitted on 40 bare documents but the model has 20"):
        RAGModel(bare, generator, tokenizer, passages[:20], n_docs=2)
    assert RAGModel(bm25, generator, tokenizer, passages, n_docs=2).generate(
        ["What is the capital of France?"], max_new_tokens=2)  # the same passages: accepted


def test_passages_with_a_repeated_id_are_refused(parts):
    biencoder, generator, tokenizer, passages, _ = parts
    with pytest.raises(ValueError, match=r"passages\[3\] repeats the id .* of passages\[0\]"):
        RAGModel(biencoder, generator, tokenizer, passages[:3] + passages[:1], n_docs=2)


def test_a_question_too_long_for_the_generator_is_refused(parts):
    biencoder, generator, tokenizer, passages, _ = parts
    big = BiEncoder.build(biencoder.tokenizer, hidden_size=16, layers=1, heads=2,
                          intermediate_size=32, max_positions=512)
    model = RAGModel(big, generator, tokenizer, passages, n_docs=2)
    question = "What is " + " ".join(["France"] * 120) + "?"
    with pytest.raises(ValueError, match="generator's input .* shorten the question"):
        model.generate([question])


def test_bm25_scores_as_document_logits(parts):
    _, generator, tokenizer, passages, questions = parts
    bm25 = BM25Retriever().fit([f"{p['title']} {p['text']}" for p in passages])
    model = RAGModel(bm25, generator, tokenizer, passages, n_docs=3)
    scores, ids = model.retrieve([questions[0]["question"]])
    expected_scores, expected_rows = bm25.search([questions[0]["question"]], 3)
    assert ids.tolist() == [[passages[i]["id"] for i in expected_rows[0]]]
    assert np.allclose(scores, expected_scores)
    # A retriever fitted on the passage records, answering with ids, gives the same model.
    by_ids = RAGModel(BM25Retriever().fit(passages), generator, tokenizer, passages, n_docs=3)
    assert by_ids.retrieve([questions[0]["question"]])[1].tolist() == ids.tolist()
    assert not model.trainable_parameters()
    with pytest.raises(ValueError, match="nothing to train"):
        train_rag(model, questions[:4], max_steps=1, progress=False)
    with pytest.raises(ValueError, match="only a RAGModel with a dense retriever"):
        model.save_pretrained("unused")


def test_train_rag_records_its_history(parts):
    model = model_of(parts, n_docs=3)
    train, dev = parts[4][:32], parts[4][32:44]
    history = train_rag(model, train, max_steps=6, batch_size=4, lr=1e-3, warmup=2, dev=dev,
                        eval_every=3, log_every=2, progress=False)
    assert history["step"] == [2, 4, 6]
    assert [e["step"] for e in history["eval"]] == [0, 3, 6]
    assert all(math.isfinite(x) for x in history["loss"])
    assert {"em", "f1", "recall@1", "recall@3", "n"} <= set(history["eval"][0])
    assert history["eval"][0]["n"] == 12
    assert not model.training


def test_reindexing_follows_a_training_passage_encoder(parts):
    model = model_of(parts, n_docs=3, train_context_encoder=True)
    before = model.passage_vectors.clone()
    history = train_rag(model, parts[4][:16], max_steps=4, batch_size=4, lr=1e-2, warmup=1,
                        reindex_every=2, progress=False)
    assert len(history["reindex_seconds"]) == 2
    assert not torch.allclose(before, model.passage_vectors)
    fresh = model.biencoder.encode_passages(model.passages)
    assert np.allclose(fresh, model.passage_vectors.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="train_context_encoder=True"):
        train_rag(model_of(parts, n_docs=3), parts[4][:4], max_steps=1, reindex_every=1,
                  progress=False)


def test_a_counterfactual_edit_changes_the_passages_read_and_the_target(parts):
    """forward's ``edits``: when a retrieved passage states ``old``, every retrieved passage is read
    with ``new`` in its place and the target is ``new``; otherwise nothing changes. The edited loss
    equals the loss of the model reading passages edited the same way."""
    model = model_of(parts, n_docs=3).eval()
    pool = [q for q in parts[4] if q["answers"][0].isalpha()]

    def states(q, row):
        return any(re.search(r"\b" + re.escape(q["answers"][0]) + r"\b", model.passages[i]["text"])
                   for i in row)

    with torch.no_grad():
        _, rows = model.retrieve_rows([q["question"] for q in pool])
        flags = [states(q, row) for q, row in zip(pool, rows.tolist())]
        questions = ([q for q, f in zip(pool, flags) if f][:3]
                     + [q for q, f in zip(pool, flags) if not f][:3])
        assert len(questions) == 6
        texts, answers = [q["question"] for q in questions], [q["answers"][0] for q in questions]
        plain = model(texts, answers)
        stated = [states(q, row) for q, row in zip(questions, plain["doc_ids"].tolist())]
        assert stated == [True] * 3 + [False] * 3
        new = next(w for w in ("Europe", "Africa", "Asia") if w not in answers)  # spelt by the tiny tokenizer
        edits = [(a, new) for a in answers]
        edited = model(texts, answers, edits=edits)
        tokenizer = model.generator_tokenizer
        targets = tokenizer.batch_decode(edited["target"].clamp(min=0), skip_special_tokens=True)
        assert [t.strip() for t in targets] == [new if s else a for a, s in zip(answers, stated)]
        for b, s in enumerate(stated):
            if not s:
                assert edited["nll"][b] == plain["nll"][b]
        # the same loss as the model reading passages that say so (its stored vectors unchanged)
        b = stated.index(True)
        other = copy.deepcopy(model)
        for p in other.passages:
            p["text"] = re.sub(r"\b" + re.escape(answers[b]) + r"\b", new, p["text"])
        assert other([texts[b]], [new])["nll"].item() == pytest.approx(
            edited["nll"][b].item(), abs=1e-6)
        assert other([texts[b]], [new])["nll"].item() != pytest.approx(
            model([texts[b]], [new])["nll"].item(), abs=1e-6)  # a tiny random reader barely reads
    with pytest.raises(ValueError, match="6 answers but 2 edits"):
        model(texts, answers, edits=edits[:2])
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="counterfactual is a probability"):
            train_rag(model, questions, max_steps=1, counterfactual=bad, progress=False)


def test_word_dropout_changes_the_questions_read_and_nothing_else(parts, monkeypatch):
    model = model_of(parts)
    questions = parts[4][:8]
    read = []
    original = type(model).forward

    def spy(self, texts, answers, **kwargs):
        read.append((list(texts), list(answers)))
        return original(self, texts, answers, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    train_rag(model, questions, max_steps=3, batch_size=4, lr=1e-3, warmup=1, seed=3,
              word_dropout=0.5, progress=False)
    shortened = 0
    for texts, answers in read:
        for text, answer in zip(texts, answers):
            q = next(q for q in questions if q["answers"][0] == answer
                     and set(text.split()) <= set(q["question"].split()))
            assert q["entity"].split()[0].lower() in text.lower()
            shortened += text != q["question"]
    assert shortened > 0
    for bad in (-0.1, 1.0, True):
        with pytest.raises(ValueError, match="word_dropout is a probability"):
            train_rag(model, questions, max_steps=1, word_dropout=bad, progress=False)
    with pytest.raises(ValueError, match="has no 'entity' field"):
        train_rag(model, [{k: v for k, v in q.items() if k != "entity"} for q in questions],
                  max_steps=1, word_dropout=0.1, progress=False)


def test_train_rag_needs_a_stopping_rule(parts):
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        train_rag(model_of(parts), parts[4][:4], progress=False)


def test_keep_best_puts_back_the_weights_of_the_best_evaluation(parts, monkeypatch):
    model = model_of(parts, n_docs=3)
    snapshots = []
    scores = iter([0.2, 0.7, 0.4, 0.1])  # dev Recall@1 at steps 0, 2, 4, 6: best at step 2

    def fake_evaluate(questions):
        snapshots.append(copy.deepcopy(model.biencoder.question_encoder.state_dict()))
        return {"em": 0.0, "f1": 0.0, "recall@1": next(scores), "recall@3": 0.0, "n": 1,
                "predictions": []}

    monkeypatch.setattr(model, "evaluate", fake_evaluate)
    history = train_rag(model, parts[4][:16], max_steps=6, batch_size=4, lr=1e-2, warmup=1,
                        dev=parts[4][16:20], eval_every=2, keep_best="recall@1", progress=False)
    assert history["best_step"] == 2
    kept = model.biencoder.question_encoder.state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], snapshots[3][k]) for k in kept)
    with pytest.raises(ValueError, match="keep_best chooses among dev evaluations"):
        train_rag(model, parts[4][:4], max_steps=1, keep_best="recall@1", progress=False)


def test_linear_schedule_decays_to_zero_and_needs_max_steps(parts, monkeypatch):
    model = model_of(parts, n_docs=3)
    rates = []
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    train_rag(model, parts[4][:16], max_steps=6, batch_size=2, lr=1e-3, warmup=2,
              schedule="linear", progress=False)
    assert rates == pytest.approx([5e-4, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    with pytest.raises(ValueError, match="give max_steps"):
        train_rag(model, parts[4][:4], max_seconds=1, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="schedule must be"):
        train_rag(model, parts[4][:4], max_steps=1, schedule="cosine", progress=False)


def test_cold_question_encoder_keeps_the_index_and_embeddings_only(parts):
    biencoder = parts[0]
    before = copy.deepcopy(biencoder.state_dict())
    cold = cold_question_encoder(biencoder, seed=3)
    assert all(torch.equal(v, biencoder.state_dict()[k]) for k, v in before.items())  # untouched
    assert not cold.tied
    old, new = (m.question_encoder.question_encoder.bert_model for m in (biencoder, cold))
    assert all(torch.equal(a, b) for a, b in zip(old.embeddings.state_dict().values(),
                                                  new.embeddings.state_dict().values()))
    assert not torch.equal(old.encoder.layer[0].attention.self.query.weight,
                           new.encoder.layer[0].attention.self.query.weight)
    passages = parts[3]
    assert np.allclose(cold.encode_passages(passages), biencoder.encode_passages(passages))
    again = cold_question_encoder(biencoder, seed=3)
    assert np.allclose(again.encode_questions(["What is the capital of Angola?"]),
                       cold.encode_questions(["What is the capital of Angola?"]))
    with pytest.raises(TypeError, match="must be a BiEncoder"):
        cold_question_encoder("checkpoints/retriever")


def test_train_question_encoder_learns_labels_against_a_frozen_index(parts):
    """Chapter 02's trained passage index over 300 passages, a cold question encoder: 100 labelled
    steps lift Recall@1 on the training questions from chance (measured 0.00 -> 0.90)."""
    passages = load_passages()[:300]
    position = {p["id"]: i for i, p in enumerate(passages)}
    labelled = [q for q in load_questions("train") if q["passage_id"] in position]
    model = cold_question_encoder(BiEncoder.from_pretrained(CHECKPOINTS / "retriever"), seed=0)
    index = model.encode_passages(passages)

    def recall():
        scores = model.encode_questions([q["question"] for q in labelled]) @ index.T
        return np.mean([scores[i].argmax() == position[q["passage_id"]]
                        for i, q in enumerate(labelled)])

    start = recall()
    embeddings = model.question_encoder.question_encoder.bert_model.embeddings
    words = embeddings.word_embeddings.weight.clone()
    losses = train_question_encoder(model, passages, labelled, max_steps=100)
    assert len(losses) == 100
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 1.0
    assert start < 0.05 and recall() > start + 0.3
    assert np.allclose(model.encode_passages(passages), index)   # the index did not move
    assert torch.equal(embeddings.word_embeddings.weight, words)  # frozen by default
    with pytest.raises(ValueError, match="call model.untie"):
        train_question_encoder(parts[0], parts[3], parts[4], max_steps=1)
    with pytest.raises(ValueError, match="not among the passages"):
        train_question_encoder(model, passages[:5], labelled, max_steps=1)
    with pytest.raises(ValueError, match="max_steps must be"):
        train_question_encoder(model, passages, labelled, max_steps=0)


@pytest.mark.parametrize("folder", ["rag_sequence", "rag_token", "rag_sequence_reader_frozen",
                                    "rag_token_reader_frozen"])
def test_the_joint_checkpoints_kept_chapter_02s_passage_encoder(folder):
    """scripts/train_rag.py never trains the passage encoder: the saved one (and so the index
    built from it) must be chapter 02's, weight for weight. The generator trained with the question
    encoder (full joint training), except in ``_reader_frozen``, where it is chapter 03's reader
    unchanged."""
    joint = BiEncoder.from_pretrained(CHECKPOINTS / folder / "retriever")
    chapter_02 = BiEncoder.from_pretrained(CHECKPOINTS / "retriever")
    assert not joint.tied
    for (name, a), b in zip(joint.context_encoder.state_dict().items(),
                            chapter_02.context_encoder.state_dict().values()):
        assert torch.equal(a, b), name
    question = joint.question_encoder.question_encoder.bert_model
    words = chapter_02.question_encoder.question_encoder.bert_model.embeddings.word_embeddings
    assert torch.equal(question.embeddings.word_embeddings.weight, words.weight)  # frozen
    record = json.loads((CHECKPOINTS / folder / "training.json").read_text())
    full = not folder.endswith("_reader_frozen")
    assert record["variant"] == folder.split("_")[1] and len(record["runs"]) == 3
    assert record["config"]["train_generator"] is full
    same_generator = ((CHECKPOINTS / folder / "generator" / "model.safetensors").read_bytes()
                      == (CHECKPOINTS / "reader" / "model.safetensors").read_bytes())
    assert same_generator is not full


@pytest.mark.parametrize("folder", ["rag_sequence", "rag_token", "rag_sequence_reader_frozen",
                                    "rag_token_reader_frozen"])
def test_the_saved_seed_is_the_one_the_rule_picks(folder):
    """scripts/train_rag.py saves the seed with the most right answers on the dev questions in new
    and typed wordings together (a count; a tie to the earlier seed): each shipped folder's record
    must name that seed, and its step count must be the script's for the variant (the
    reader-frozen folders were made with --steps 600)."""
    from ragtutor.tools.records import load_script

    script = load_script("train_rag")
    record = json.loads((CHECKPOINTS / folder / "training.json").read_text())
    counts = [script.held_out_dev_em(run) for run in record["runs"]]
    assert record["saved_seed"] == record["runs"][counts.index(max(counts))]["seed"], counts
    steps = (600 if folder.endswith("_reader_frozen")
             else script.CONFIG["steps_by_variant"][record["variant"]])
    assert record["config"]["joint"]["steps"] == steps


def test_the_saved_seed_rule_counts_right_answers_from_rounded_rates():
    """Two seeds with the same number of right answers tie, whatever their rounded rates: the
    shipped RAG-Sequence's seeds 1 and 2 both answer 453 of 477, and a comparison of their rounded
    rates could split them."""
    from ragtutor.tools.records import load_script

    script = load_script("train_rag")
    run = lambda new, typed: {"trained": {"dev_new": {"em": new / 354, "n": 354},  # noqa: E731
                                          "dev_typed": {"em": typed / 123, "n": 123}}}
    # Rates rounded to four decimals, as recorded, must still count the same answers.
    rounded = lambda r: {"trained": {k: {"em": round(v["em"], 4), "n": v["n"]}  # noqa: E731
                                     for k, v in r["trained"].items()}}
    assert script.held_out_dev_em(rounded(run(339, 114))) == 453
    assert script.held_out_dev_em(rounded(run(338, 115))) == 453


# The slow test reruns the weak start and the first REPRODUCE_STEPS joint steps of RAG-Token's
# saved seed (tests/reproduction.py says why the start). The recorded run leaves its weak start
# (dev Recall@1 about 0.14) in a jump: Recall@1 is about 0.9 by step 50 and 1.0 by step 100, and
# in the middle of such a jump a step more or less of progress moves the metric by far more than
# any tolerance. So the rerun stops at step 30, before the first evaluation after the start: it
# compares the weak start's metrics (after its 48 labelled steps) and three 10-step loss windows.
# What that still catches, tried on the previous checkpoints: a warm-up one step late (the
# learning rate 0 at the first step) departs by 0.11 at step 10. What it does not: AdamW's weight
# decay 0.01 instead of 0 moved no loss window by more than 6e-4 in 200 steps.
REPRODUCE_STEPS = 30
LOSS_TOLERANCE = 0.01
METRIC_TOLERANCE = 0.01  # 1 of the 174 dev questions evaluated during training; 5 of 521, 538


@pytest.mark.slow
@pytest.mark.parametrize("folder, options", [("rag_token", []),
                                             ("rag_token_reader_frozen", ["--freeze-generator"])])
def test_the_rag_checkpoint_script_reproduces_the_start_of_its_recorded_run(tmp_path, folder,
                                                                             options):
    """Rerun scripts/train_rag.py for RAG-Token's saved seed (with the generator, and the
    question encoder alone), stopping joint training after 30 of its steps with the schedule of
    the full run (its recorded step count; seconds on one thread), and compare the weak start's metrics, the loss curve
    and the dev evaluations with the record."""
    recorded = json.loads((CHECKPOINTS / folder / "training.json").read_text())
    seed = recorded["saved_seed"]
    subprocess.run([sys.executable, str(CHECKPOINTS.parent / "scripts" / "train_rag.py"),
                    "--variant", "token", "--seeds", str(seed), "--out", str(tmp_path),
                    "--threads", "1", "--stop-after", str(REPRODUCE_STEPS),
                    "--steps", str(recorded["config"]["joint"]["steps"]), *options],
                   check=True, cwd=CHECKPOINTS.parent, capture_output=True)
    fresh = json.loads((tmp_path / folder / "training.json").read_text())
    assert fresh["config"] == recorded["config"] and fresh["stop_after"] == REPRODUCE_STEPS
    rerun = fresh["runs"][0]
    expected = next(run for run in recorded["runs"] if run["seed"] == seed)
    for split in ("dev", "test"):
        for key in ("em", "recall@1", "recall@5"):
            assert rerun["weak_start"][split][key] == pytest.approx(
                expected["weak_start"][split][key], abs=METRIC_TOLERANCE), (split, key)
    assert_same_start(rerun["history"], expected["history"], REPRODUCE_STEPS, LOSS_TOLERANCE,
                      dict.fromkeys(("em", "recall@1", "recall@5"), METRIC_TOLERANCE))


@pytest.mark.parametrize("folder", ["rag_sequence", "rag_token", "rag_sequence_reader_frozen",
                                    "rag_token_reader_frozen"])
def test_the_shipped_rag_folders_are_their_parts(folder):
    """checkpoints/rag_<variant> (and the reader-frozen models beside them) is one RAGModel folder
    (RAGModel.from_pretrained, the documented entry point); loaded whole, it must give the model
    built from its parts — its retriever/ and generator/ folders, loaded on their own, with the
    knowledge base's passages — the same answers, documents and losses on every test question,
    and the recorded test exact match of its saved seed."""
    from transformers import BartForConditionalGeneration, PreTrainedTokenizerFast

    folder = CHECKPOINTS / folder
    loaded = RAGModel.from_pretrained(folder)
    variant = loaded.variant
    generator = BartForConditionalGeneration.from_pretrained(folder / "generator").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "generator")
    parts = RAGModel(BiEncoder.from_pretrained(folder / "retriever"), generator, tokenizer,
                     load_passages(), n_docs=5, variant=variant).eval()
    assert loaded.n_docs == 5 and folder.name.split("_")[1] == variant
    test = load_questions("test")
    questions = [q["question"] for q in test]
    answers = loaded.generate(questions)
    assert answers == parts.generate(questions)
    scores, ids = loaded.retrieve(questions[:50])
    assert ids.tolist() == parts.retrieve(questions[:50])[1].tolist()
    assert np.array_equal(scores, parts.retrieve(questions[:50])[0])
    with torch.no_grad():
        for start in range(0, len(test), 64):
            batch = test[start:start + 64]
            args = ([q["question"] for q in batch], [q["answers"][0] for q in batch])
            torch.testing.assert_close(loaded(*args)["nll"], parts(*args)["nll"], rtol=0, atol=0)
    # The recorded test exact match of the saved seed, from the same answers.
    from ragtutor.metrics import qa_scores
    record = json.loads((folder / "training.json").read_text())
    em = qa_scores(answers, [q["answers"] for q in test])["em"]
    saved = next(run for run in record["runs"] if run["seed"] == record["saved_seed"])
    assert em == pytest.approx(saved["trained"]["test"]["em"], abs=1e-4)


@pytest.mark.parametrize("max_new_tokens", [0, -1])
def test_generate_refuses_a_budget_of_no_tokens(parts, max_new_tokens):
    # Such a budget used to answer [''] without a word.
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        model_of(parts).generate(["What is the capital of France?"], max_new_tokens=max_new_tokens)


def test_evaluate_refuses_gold_passages_the_model_does_not_hold(parts):
    # An unknown passage_id used to count as a retrieval miss: recall 0.0, no error.
    question = {**parts[4][0], "passage_id": "NOWHERE/capital"}
    with pytest.raises(ValueError, match="not among the model's passages"):
        model_of(parts).evaluate([question])


def test_the_readme_example_gives_what_the_readme_says():
    """The README's example of the final model, run as written: its answers and passage ids."""
    import ast
    import re

    readme = (CHECKPOINTS.parent / "README.md").read_text()
    answers = ast.literal_eval(re.search(r"^# (\['Paris'.*\])$", readme, re.M).group(1))
    ids = ast.literal_eval(re.search(r"^# ids: (\[\[.*?\]\])", readme, re.M).group(1))
    model = RAGModel.from_pretrained(CHECKPOINTS / "rag_token")
    assert model.generate(["What is the capital of France?",
                           "Which currency is used in Japan?"]) == answers
    scores, got = model.retrieve(["What is the capital of France?"])
    assert np.asarray(got).tolist() == ids and np.asarray(scores).shape == (1, 5)
