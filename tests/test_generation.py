"""Chapter 03's package side: tokenizer, tiny BART, batches, decoding, and the checkpoints."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.rag.retrieval_rag import RagRetriever

from ragtutor import generation
from ragtutor.data import load_entities, load_passages, load_questions
from ragtutor.generation import (build_seq2seq, closed_book_batches, combined_input, encode_pairs,
                                 generate_answers, max_combined_length, reader_batches,
                                 train_seq2seq, train_tokenizer)
from reproduction import assert_same_start

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "France / The capital of France is Paris. // What is the capital of France?"


@pytest.fixture(scope="module")
def kb_texts():
    passages = load_passages()
    questions = [q for split in ("train", "dev", "test") for q in load_questions(split)]
    return passages, questions


def _corpus(passages, questions):
    texts = [p["title"] + " " + p["text"] for p in passages] + [q["question"] for q in questions]
    return texts + [a for q in questions for a in q["answers"]]


@pytest.fixture(scope="module", params=["word", "bpe"])
def tokenizer(request, kb_texts):
    return train_tokenizer(_corpus(*kb_texts), kind=request.param, vocab_size=2000)


@pytest.fixture(scope="module")
def model(kb_texts):
    tokenizer = train_tokenizer(_corpus(*kb_texts))
    torch.manual_seed(0)
    # A large init_std makes the untrained model's output distribution far from uniform, so that
    # greedy and beam search have something to disagree about.
    bart = build_seq2seq(tokenizer, d_model=32, layers=2, heads=2, ffn_dim=64, init_std=0.5)
    return bart.eval(), tokenizer


# --- tokenizer ---------------------------------------------------------------------------------

def test_tokenizer_is_lossless_on_the_knowledge_base(tokenizer, kb_texts):
    passages, questions = kb_texts
    texts = [combined_input(p["title"], p["text"], q["question"])
             for p, q in zip(passages, questions)] + [a for q in questions for a in q["answers"]]
    ids = tokenizer(texts).input_ids
    assert all(i[0] == tokenizer.bos_token_id and i[-1] == tokenizer.eos_token_id for i in ids)
    assert tokenizer.unk_token_id not in {t for i in ids for t in i}
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == texts


def test_tokenizer_special_ids_are_the_course_convention(tokenizer):
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tokenizer.unk_token_id] == [0, 1, 2, 3]
    assert tokenizer.convert_ids_to_tokens(tokenizer("Guinea-Bissau").input_ids) == [
        "<s>", *tokenizer.tokenize("Guinea-Bissau"), "</s>"]


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, kb_texts, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    texts = [p["text"] for p in kb_texts[0][:200]]
    assert loaded(texts).input_ids == tokenizer(texts).input_ids
    assert len(loaded) == len(tokenizer)
    assert loaded.all_special_ids == tokenizer.all_special_ids


def test_train_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="kind must be"):
        train_tokenizer(["a b"], kind="char")
    with pytest.raises(ValueError, match="non-empty list of strings"):
        train_tokenizer([])


def test_bpe_spells_an_unseen_word_and_word_level_does_not(kb_texts):
    texts = [p["text"] for p in kb_texts[0]]
    word = train_tokenizer(texts, kind="word")
    bpe = train_tokenizer(texts, kind="bpe", vocab_size=2000)
    made_up = "Zubrovia"
    assert word.unk_token_id in word(made_up).input_ids
    assert bpe.decode(bpe(made_up).input_ids, skip_special_tokens=True) == made_up


# --- the combined input and its length ---------------------------------------------------------

class _RecordingTokenizer:
    """Stands in for the generator tokenizer: records the strings the retriever builds."""

    def __call__(self, strings, **kwargs):
        self.strings, self.kwargs = list(strings), kwargs
        return {"input_ids": [], "attention_mask": []}


@pytest.mark.parametrize("title, text, question", [
    ("France", "The capital of France is Paris.", "What is the capital of France?"),
    ('"Quoted"', "Text  with  double spaces.", "Why?"),
    ("Côte d'Ivoire", "Its capital is Yamoussoukro.", "What is the capital of Côte d'Ivoire?"),
    ("", "", ""),
])
def test_combined_input_is_what_hugging_face_rag_builds(title, text, question):
    """Run the real ``RagRetriever.postprocess_docs`` on a stand-in retriever and compare."""
    recorder = _RecordingTokenizer()
    retriever = types.SimpleNamespace(
        config=types.SimpleNamespace(title_sep=" / ", doc_sep=" // ", max_combined_length=128),
        generator_tokenizer=recorder)
    docs = [{"title": [title], "text": [text]}]
    RagRetriever.postprocess_docs(retriever, docs, [question], prefix=None, n_docs=1)
    assert recorder.strings == [combined_input(title, text, question)]
    assert recorder.kwargs["max_length"] == 128


def test_combined_input_rejects_non_strings():
    with pytest.raises(TypeError, match="question must be a string"):
        combined_input("France", "text", None)


def test_max_combined_length_is_the_longest_pair(tokenizer, kb_texts):
    passages, questions = kb_texts

    def length(text):
        return len(tokenizer(text).input_ids)

    longest_passage = max(passages, key=lambda p: length(p["title"] + " / " + p["text"]))
    longest_question = max(questions, key=lambda q: length(q["question"]))
    pair = combined_input(longest_passage["title"], longest_passage["text"],
                          longest_question["question"])
    assert max_combined_length(tokenizer, passages, questions) == length(pair)
    # The additivity it relies on, checked on a sample of real pairs.
    for p, q in zip(passages[::50], questions[::90]):
        assert length(combined_input(p["title"], p["text"], q["question"])) == (
            max_combined_length(tokenizer, [p], [q]))


def test_every_passage_with_every_question_fits_the_checkpoint():
    tokenizer = PreTrainedTokenizerFast.from_pretrained(ROOT / "checkpoints" / "reader")
    config = BartConfig.from_pretrained(ROOT / "checkpoints" / "reader")
    passages = load_passages()
    questions = [q for split in ("train", "dev", "test") for q in load_questions(split)]
    assert max_combined_length(tokenizer, passages, questions) <= config.max_position_embeddings
    assert config.max_position_embeddings == 128


# --- encoding batches ----------------------------------------------------------------------------

def test_encode_pairs_shapes_and_labels(model):
    _, tokenizer = model
    batch = encode_pairs(tokenizer, [SOURCE, "a"], ["Paris", "Dar es Salaam"])
    assert batch.input_ids.shape == batch.attention_mask.shape
    assert batch.input_ids.shape[0] == batch.labels.shape[0] == 2
    labels = batch.labels.tolist()
    assert labels[0][1:] == [tokenizer.eos_token_id, -100, -100]  # "Paris </s>", then padding
    assert labels[1][-1] == tokenizer.eos_token_id
    answer = tokenizer.decode([t for t in labels[1] if t >= 0], skip_special_tokens=True)
    assert answer == "Dar es Salaam"
    assert tokenizer.bos_token_id not in labels[0]  # the model prepends the decoder start itself


def test_encode_pairs_refuses_to_truncate(model):
    _, tokenizer = model
    long = " ".join(["Paris"] * 200)
    with pytest.raises(ValueError, match="202 tokens long, more than max_source_length=128"):
        encode_pairs(tokenizer, ["short", long], ["a", "b"])
    with pytest.raises(ValueError, match="max_target_length"):
        encode_pairs(tokenizer, ["short"], [long])
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        encode_pairs(tokenizer, ["a", "b"], ["a"])


# --- training data and the training loop ---------------------------------------------------------

def test_reader_batches_are_counterfactual_and_fresh():
    entities = load_entities()
    batches = reader_batches(entities, batch_size=8, seed=0)
    first, second = next(batches), next(batches)
    assert len(first[0]) == len(first[1]) == 8
    assert set(first[0]).isdisjoint(second[0])
    assert all(" / " in s and " // " in s for s in first[0])
    again = next(reader_batches(entities, batch_size=8, seed=0))
    assert again == first  # deterministic in the seed


def test_closed_book_batches_cover_each_question_once_per_epoch():
    questions = load_questions("train")[:40]
    batches = closed_book_batches(questions, batch_size=10, seed=0)
    seen = [q for _ in range(4) for q in next(batches)[0]]
    assert sorted(seen) == sorted(q["question"] for q in questions)


def test_closed_book_batches_reject_too_large_a_batch():
    with pytest.raises(ValueError, match="batch_size"):
        next(closed_book_batches(load_questions("train")[:5], batch_size=10))


def test_closed_book_questions_hold_no_fact_about_held_out_entities():
    entities = load_entities()
    held_out = {n for e in entities if e["split"] != "train" for n in [e["name"], *e["aliases"]]}
    train = load_questions("train")
    kept = generation.closed_book_questions(train, entities)
    assert 0 < len(train) - len(kept) < 0.05 * len(train)
    assert all(q["answers"][0] not in held_out for q in kept)


def test_train_seq2seq_fits_a_batch_and_records_its_history(model):
    _, tokenizer = model
    torch.manual_seed(0)
    small = build_seq2seq(tokenizer, d_model=32, layers=1, heads=2, ffn_dim=64)
    batch = ([SOURCE, "Iron / Iron has the symbol Fe. // What is the symbol of iron?"],
             ["Paris", "Fe"])
    history = train_seq2seq(small, tokenizer, iter([batch] * 60), lr=3e-3, warmup=5, max_steps=80,
                            log_every=20, evaluate=lambda m: {"answers": 2}, eval_every=25,
                            progress=False)
    assert history["step"] == [20, 40, 60]  # the batches ran out before max_steps
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert [e["step"] for e in history["eval"]] == [25, 50]
    assert not small.training
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        train_seq2seq(small, tokenizer, iter([batch]))
    with pytest.raises(ValueError, match="evaluate and eval_every go together"):
        train_seq2seq(small, tokenizer, iter([batch]), max_steps=1, eval_every=1)


# --- the model and decoding --------------------------------------------------------------------

@pytest.mark.parametrize("tie", [True, False])
def test_model_round_trips_through_save_pretrained(tie, model, tmp_path):
    _, tokenizer = model
    torch.manual_seed(0)
    built = build_seq2seq(tokenizer, d_model=32, layers=2, heads=2, ffn_dim=64, tie_embeddings=tie)
    assert (built.lm_head.weight is built.model.shared.weight) == tie
    built.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    built.eval()
    batch = encode_pairs(tokenizer, [SOURCE], ["Paris"])
    with torch.no_grad():
        assert torch.equal(built(**batch).logits, loaded(**batch).logits)
    assert loaded.config.max_position_embeddings == 128
    assert loaded.config.decoder_start_token_id == tokenizer.bos_token_id


def test_sequence_log_probs_is_the_teacher_forced_loss_summed(model):
    bart, tokenizer = model
    sources, targets = [SOURCE, "a // b"], ["Paris", "Dar es Salaam"]
    with torch.no_grad():
        log_probs = generation.sequence_log_probs(bart, tokenizer, sources, targets)
        assert log_probs.shape == (2,)
        for i, (source, target) in enumerate(zip(sources, targets)):
            batch = encode_pairs(tokenizer, [source], [target])
            tokens = int((batch.labels != -100).sum())
            expected = -bart(**batch).loss.item() * tokens
            assert log_probs[i].item() == pytest.approx(expected, rel=1e-5)


def test_generate_answers_is_greedy_argmax(model):
    """generate(num_beams=1) equals picking the most probable token step by step."""
    bart, tokenizer = model
    sources = [SOURCE, "Iron / Iron has the symbol Fe. // What is the chemical symbol for iron?"]
    answers = generate_answers(bart, tokenizer, sources, max_new_tokens=6)
    for source, answer in zip(sources, answers):
        batch = tokenizer([source], return_tensors="pt")
        decoded = [bart.config.decoder_start_token_id]
        with torch.no_grad():
            for _ in range(6):
                logits = bart(**batch, decoder_input_ids=torch.tensor([decoded])).logits
                decoded.append(int(logits[0, -1].argmax()))
                if decoded[-1] == tokenizer.eos_token_id:
                    break
        assert answer == tokenizer.decode(decoded, skip_special_tokens=True).strip()


def _generated(ids, tokenizer):
    """A generated row without its start token and whatever follows the first </s>."""
    ids = ids[1:]
    return ids[:ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids


def _hugging_face_beams(model, batch, beams, max_new_tokens):
    options = {"length_penalty": 0.0, "early_stopping": "never"} if beams > 1 else {}
    return model.generate(**batch, num_beams=beams, do_sample=False, max_new_tokens=max_new_tokens,
                          **options).tolist()


def test_beam_search_with_one_beam_equals_greedy(model):
    bart, tokenizer = model
    batch = tokenizer([SOURCE, "a // b"], return_tensors="pt", padding=True)
    for beams in (1, 4):
        ours = generation.beam_search(bart, batch.input_ids, batch.attention_mask,
                                      num_beams=beams, max_new_tokens=8)
        theirs = _hugging_face_beams(bart, batch, beams, max_new_tokens=8)
        assert [seq for seq, _ in ours] == [_generated(row, tokenizer) for row in theirs]


def test_beam_search_equals_hugging_face_on_a_trained_model():
    """On the closed-book checkpoint, whose answers are uncertain enough for beams to matter;
    the score of each answer is its log-probability."""
    model, tokenizer, _ = generation.load_checkpoint("closed_book")
    questions = [q["question"] for q in load_questions("test")[:24]]
    batch = tokenizer(questions, return_tensors="pt", padding=True)
    for beams in (1, 3):
        ours = generation.beam_search(model, batch.input_ids, batch.attention_mask, num_beams=beams)
        theirs = _hugging_face_beams(model, batch, beams, max_new_tokens=16)
        assert [seq for seq, _ in ours] == [_generated(row, tokenizer) for row in theirs]
        answers = [tokenizer.decode(seq, skip_special_tokens=True) for seq, _ in ours]
        with torch.no_grad():
            log_probs = generation.sequence_log_probs(model, tokenizer, questions, answers)
        assert [score for _, score in ours] == pytest.approx(log_probs.tolist(), abs=1e-4)


# --- the committed checkpoints -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["reader", "closed_book"])
def test_checkpoint_loads_offline_with_its_record(name):
    model, tokenizer, record = generation.load_checkpoint(name)
    keys = {"command", "seed", "threads", "config", "versions", "metrics", "history"}
    assert keys <= record.keys()
    assert len(tokenizer) == model.config.vocab_size == record["vocab_size"]
    assert (ROOT / "checkpoints" / name / "model.safetensors").stat().st_size < 8 * 2**20
    assert not model.training


def test_both_checkpoints_share_one_tokenizer():
    reader = PreTrainedTokenizerFast.from_pretrained(ROOT / "checkpoints" / "reader")
    closed_book = PreTrainedTokenizerFast.from_pretrained(ROOT / "checkpoints" / "closed_book")
    assert reader.get_vocab() == closed_book.get_vocab()


def test_load_checkpoint_says_how_to_make_a_missing_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/train_generation.py"):
        generation.load_checkpoint("reader", folder=tmp_path)


# The slow test reruns the first REPRODUCE_STEPS steps of both models' runs (tests/reproduction.py
# says why the start). Measured: against the recording machine, a rerun on another machine (1
# thread) gave 50-step loss windows within 1e-5 of the recorded ones up to step 350 for both
# models and the same evaluations at step 250; after that the reader drifts faster than the
# retriever (6e-4 at step 400, 5e-3 at step 500, where dev exact match already differs by 0.018).
# The tolerance leaves 1,000 times the measured gap up to step 300. What it still catches, tried:
# training without gradient clipping departs at step 100, by 0.08 (reader) and 0.08 (closed-book),
# and by 0.17 and 0.23 at step 300.
REPRODUCE_STEPS = 300
LOSS_TOLERANCE = 0.01
EM_TOLERANCE = 0.01  # 5 of the 521 dev questions; 24 of the 2,436 sampled training questions


@pytest.mark.slow
@pytest.mark.parametrize("name, metrics", [("reader", ("dev_em", "dev_f1")),
                                           ("closed_book", ("train_sample_em", "train_sample_f1"))])
def test_checkpoint_script_reproduces_the_start_of_its_recorded_run(name, metrics, tmp_path):
    """Rerun scripts/train_generation.py with the committed configuration for the first 300
    steps of each model (about a minute on one thread) and compare the loss curve and the
    evaluation at step 250 with the committed history: the learning rate does not depend on the
    total number of steps, so these are the first 300 steps of the same run."""
    script = ROOT / "scripts" / "train_generation.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--threads", "1",
                    "--stop-after", str(REPRODUCE_STEPS), "--only", name],
                   check=True, cwd=ROOT, capture_output=True)
    recorded = json.loads((ROOT / "checkpoints" / name / "training.json").read_text())
    fresh = json.loads((tmp_path / name / "training.json").read_text())
    assert fresh["config"] == recorded["config"] and fresh["stop_after"] == REPRODUCE_STEPS
    assert_same_start(fresh["history"], recorded["history"], REPRODUCE_STEPS, LOSS_TOLERANCE,
                      dict.fromkeys(metrics, EM_TOLERANCE))


# --- the chapter's exercise checks ---------------------------------------------------------------

def test_exercise_checks_pass_right_answers_and_name_common_slips():
    from ragtutor import exercises
    from transformers.models.bart.modeling_bart import shift_tokens_right

    def beam_step(scores, log_probs, k):
        best, index = (scores[:, None] + log_probs).flatten().topk(k)
        return index // log_probs.shape[1], index % log_probs.shape[1], best

    def sequence_log_prob(logits, labels):
        picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return (picked * (labels != -100)).sum(1)

    exercises.ch03_shift_right(lambda labels, start, pad: shift_tokens_right(labels, pad, start))
    exercises.ch03_beam_step(beam_step)
    exercises.ch03_sequence_log_prob(sequence_log_prob)

    def unshifted(labels, start, pad):
        return labels.masked_fill(labels == -100, pad)

    def unscored(scores, log_probs, k):
        return beam_step(torch.zeros_like(scores), log_probs, k)

    def mean_log_prob(logits, labels):
        return sequence_log_prob(logits, labels) / (labels != -100).sum(1)

    for check, wrong, hint in [(exercises.ch03_shift_right, unshifted, "shift to the right"),
                               (exercises.ch03_beam_step, unscored, "beam's score plus"),
                               (exercises.ch03_sequence_log_prob, mean_log_prob, "is a sum")]:
        with pytest.raises(exercises.ExerciseFailed, match=hint):
            check(wrong)


@pytest.mark.parametrize("call, error, problem", [
    (lambda m, t: generate_answers(m, t, ["France / x // y"], num_beams=0), ValueError,
     "num_beams must be a positive int"),
    (lambda m, t: generate_answers(m, t, ["France / x // y"], max_new_tokens=-1), ValueError,
     "max_new_tokens must be a positive int"),
    (lambda m, t: generate_answers(m, t, "What is the capital of France?"), TypeError,
     "sources must be a list of strings"),
    (lambda m, t: encode_pairs(t, []), ValueError, "sources is empty"),
])
def test_bad_decoding_settings_get_a_clear_error(model, call, error, problem):
    # num_beams=0 used to end in a ZeroDivisionError inside transformers, a lone string was
    # answered character by character, and an empty batch failed inside tokenizers.
    with pytest.raises(error, match=problem):
        call(*model)
