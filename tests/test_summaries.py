"""Profiles ("Tell me about X"): their facts and scores, the counterfactual training examples, the
two ways of reading K passages (Fusion-in-Decoder and RAG-Token), the profiler and its checkpoints."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ragtutor import data
from ragtutor.counterfactual import _fold
from ragtutor.generation import (build_seq2seq, combined_input, load_checkpoint,
                                 sequence_log_probs)
from ragtutor.summaries import (PROFILE_RELATIONS, Profiler, fid_generate, fid_loss, format_profile,
                                iter_profile_examples, parse_profile, profile_examples,
                                profile_facts, profile_scores, rag_sequence_generate,
                                rag_sequence_loss, rag_token_generate, rag_token_loss,
                                score_profile)
from reproduction import assert_same_start

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def entities():
    return data.load_entities()


@pytest.fixture(scope="module")
def index(entities):
    return {e["id"]: e for e in entities}


@pytest.fixture(scope="module")
def reader():
    model, tokenizer, _ = load_checkpoint("reader")
    return model, tokenizer


# --- profiles and their facts ----------------------------------------------------------------

def test_every_true_profile_parses_back_to_its_facts_and_scores_perfectly(entities, index):
    for e in entities:
        facts = profile_facts(e, index)
        assert facts, e["name"]
        text = format_profile(facts)
        assert parse_profile(text) == [(r, str(v)) for r, v, _ in facts]
        score = score_profile(text, e, index)
        assert (score["wrong"], score["missing"], score["right"]) == (0, 0, score["facts"])
    result = profile_scores([format_profile(profile_facts(e, index)) for e in entities], entities,
                            index)
    assert result["precision"] == result["recall"] == 1.0 and result["n"] == len(entities)


def test_score_profile_counts_right_wrong_and_missing_facts(index):
    afghanistan = index["AFG"]  # 9 facts: two languages
    score = score_profile("capital: kabul | continent: Asia | continent: asia | capital: Herat | "
                          "language: Pushto | weather: sunny", afghanistan, index)
    # "kabul" and "Pushto" (an alias of Pashto) are right spellings; "asia" twice counts once.
    assert score["stated"] == 5 and score["right"] == 3 and score["wrong"] == 2
    assert ("capital", "Herat") in score["wrong_facts"]
    assert (None, "weather: sunny") in score["wrong_facts"]
    assert score["found"] == 3 and score["missing"] == 6
    assert ("language", "Dari") in score["missing_facts"]
    empty = score_profile("", afghanistan, index)
    assert empty["stated"] == 0 and empty["missing"] == 9


def test_profile_scores_pools_facts_over_entities_with_an_interval(entities, index):
    some = entities[:20]
    halves = []
    for e in some:
        facts = profile_facts(e, index)
        halves.append(format_profile(facts[: len(facts) // 2]))
    result = profile_scores(halves, some, index)
    assert result["precision"] == 1.0
    expected = sum(len(profile_facts(e, index)) // 2 for e in some) / result["facts"]
    assert result["recall"] == pytest.approx(expected)
    low, high = result["recall_ci"]
    assert low <= result["recall"] <= high and high - low > 0
    with pytest.raises(ValueError, match="one each"):
        profile_scores(halves[:3], some, index)


def test_parse_profile_refuses_what_is_not_text():
    with pytest.raises(TypeError, match="string"):
        parse_profile(None)
    assert parse_profile("capital: Paris; Lyon |  | symbol: Fe") == [
        ("capital", "Paris"), ("capital", "Lyon"), ("symbol", "Fe")]


def test_profile_facts_names_the_domains_it_knows(index):
    with pytest.raises(ValueError, match="no profile for domain"):
        profile_facts({"domain": "river", "facts": {}}, index)


# --- counterfactual training examples ---------------------------------------------------------

def test_profile_examples_are_deterministic_and_walk_every_entity(entities):
    first = profile_examples(entities, 40, seed=3)
    assert profile_examples(entities, 60, seed=3)[:40] == first
    assert profile_examples(entities, 40, seed=4) != first
    one_pass = profile_examples(entities, len(entities))
    assert sorted(x["entity_id"] for x in one_pass) == sorted(e["id"] for e in entities)
    with pytest.raises(ValueError, match="keep"):
        next(iter_profile_examples(entities, keep=0))
    with pytest.raises(ValueError, match="entity records"):
        next(iter_profile_examples([]))


def test_a_profile_example_states_what_its_passages_say_and_no_true_fact(entities, index):
    for x in profile_examples(entities, 300):
        e = index[x["entity_id"]]
        own = " ".join(_fold(p["text"]) for p in x["passages"] if p["title"] == e["name"])
        stated = parse_profile(x["target"])
        assert stated, x
        relations = [r for r, _ in stated]
        order = PROFILE_RELATIONS[e["domain"]]
        assert relations == sorted(relations, key=order.index)  # the profile's order
        truth = {(r, _fold(a)) for r, _, answers in profile_facts(e, index) for a in answers}
        for relation, value in stated:
            assert _fold(value) in own, (value, x)  # copied from one of its own passages
            assert (relation, _fold(value)) not in truth, (relation, value, e["name"])
        for p in x["passages"]:
            source = combined_input(p["title"], p["text"], x["query"])
            assert len(source) < 600


# --- the two readers of K passages ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(reader):
    torch.manual_seed(0)
    return build_seq2seq(reader[1]).eval()


def _example(entities):
    x = profile_examples(entities, 1, seed=1)[0]
    return x["query"], x["passages"], x["target"]


def test_with_one_passage_both_losses_are_the_plain_seq2seq_loss(entities, reader, tiny):
    tokenizer = reader[1]
    query, passages, target = _example(entities)
    one = passages[:1]
    source = combined_input(one[0]["title"], one[0]["text"], query)
    batch = tokenizer([source], return_tensors="pt")
    labels = tokenizer([target], return_tensors="pt").input_ids[:, 1:]
    plain = tiny(**batch, labels=labels).loss
    assert fid_loss(tiny, tokenizer, [query], [one], [target]).item() == pytest.approx(
        plain.item(), abs=1e-5)
    assert rag_token_loss(tiny, tokenizer, [query], [one], [target]).item() == pytest.approx(
        plain.item(), abs=1e-5)
    # RAG-Token with the same passage three times: the mixture of three equal distributions.
    assert rag_token_loss(tiny, tokenizer, [query], [one * 3], [target]).item() == pytest.approx(
        plain.item(), abs=1e-5)


def test_rag_token_loss_is_the_mean_per_token_mixture_over_passages(entities, reader, tiny):
    tokenizer = reader[1]
    query, passages, target = _example(entities)
    assert len(passages) >= 2
    labels = tokenizer([target], return_tensors="pt").input_ids[:, 1:]
    per_doc = []
    for p in passages:
        batch = tokenizer([combined_input(p["title"], p["text"], query)], return_tensors="pt")
        logits = tiny(**batch, labels=labels).logits
        per_doc.append(torch.log_softmax(logits, -1).gather(-1, labels[..., None])[0, :, 0])
    mixture = torch.logsumexp(torch.stack(per_doc), 0) - torch.log(torch.tensor(len(passages)))
    expected = -mixture.mean()
    got = rag_token_loss(tiny, tokenizer, [query, query], [passages, passages[:1]],
                         [target, target + " | symbol: Fe"])
    # the batch mean weighs tokens: check the first example alone too
    alone = rag_token_loss(tiny, tokenizer, [query], [passages], [target])
    assert alone.item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.isfinite(got)


def test_rag_sequence_loss_is_the_mean_per_example_mixture_of_whole_answers(reader, tiny):
    tokenizer = reader[1]
    passages = data.load_passages()[:3]
    queries = ["What is the capital of Afghanistan?", "Which currency does Albania use?"]
    targets = ["Kabul", "lek"]
    lists = [passages, passages[1:]]
    expected = []
    for query, target, ps in zip(queries, targets, lists):
        sources = [combined_input(p["title"], p["text"], query) for p in ps]
        logp = sequence_log_probs(tiny, tokenizer, sources, [target] * len(ps))
        expected.append(-(torch.logsumexp(logp, 0) - torch.log(torch.tensor(float(len(ps))))))
    got = rag_sequence_loss(tiny, tokenizer, queries, lists, targets)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)
    # one passage: the plain sequence loss of the whole answer
    one = rag_sequence_loss(tiny, tokenizer, queries[:1], [passages[:1]], targets[:1])
    plain = -sequence_log_probs(tiny, tokenizer, [combined_input(
        passages[0]["title"], passages[0]["text"], queries[0])], targets[:1])[0]
    assert one.item() == pytest.approx(plain.item(), abs=1e-5)


def test_rag_sequence_generation_picks_the_proposal_of_largest_mixture(reader):
    model, tokenizer = reader
    passages = {p["id"]: p for p in data.load_passages()}
    query = "What is the capital of Afghanistan?"
    shown = [passages["AFG/capital"], passages["ALB/capital"]]
    proposals = [fid_generate(model, tokenizer, [query], [[p]], max_new_tokens=16)[0]
                 for p in shown]
    got = rag_sequence_generate(model, tokenizer, [query, query], [shown, shown[:1]])
    assert got[1] == proposals[0]  # one passage: its greedy answer
    sources = [combined_input(p["title"], p["text"], query) for p in shown]
    mixtures = [torch.logsumexp(sequence_log_probs(model, tokenizer, sources, [c, c]), 0).item()
                for c in proposals]
    assert got[0] == proposals[max(range(2), key=lambda i: (mixtures[i], -i))]
    with pytest.raises(ValueError, match="2 queries but 1 passage lists"):
        rag_sequence_generate(model, tokenizer, [query, query], [shown])


def test_fid_reads_all_passages_at_once(entities, reader, tiny):
    tokenizer = reader[1]
    query, passages, target = _example(entities)
    both = fid_loss(tiny, tokenizer, [query], [passages], [target])
    first = fid_loss(tiny, tokenizer, [query], [passages[:1]], [target])
    assert both.item() != pytest.approx(first.item(), abs=1e-4)
    both.backward()
    assert all(p.grad is not None for p in tiny.model.encoder.parameters() if p.requires_grad)
    tiny.zero_grad()
    # padding in the batch changes nothing: an example alone and beside a longer one
    other = profile_examples(entities, 2, seed=5)[1]
    pair = fid_loss(tiny, tokenizer, [query, other["query"]], [passages, other["passages"]],
                    [target, target])
    assert torch.isfinite(pair)


def test_generation_with_one_passage_is_the_readers_greedy_answer(entities, reader):
    model, tokenizer = reader
    query, passages, _ = _example(entities)
    one = passages[:1]
    source = combined_input(one[0]["title"], one[0]["text"], query)
    batch = tokenizer([source], return_tensors="pt")
    plain = tokenizer.batch_decode(model.generate(**batch, max_new_tokens=20, num_beams=1,
                                                  do_sample=False), skip_special_tokens=True)
    assert fid_generate(model, tokenizer, [query], [one], max_new_tokens=20) == plain
    assert rag_token_generate(model, tokenizer, [query], [one], max_new_tokens=20) == plain


def test_bad_inputs_to_the_readers_say_what_is_wrong(entities, reader, tiny):
    tokenizer = reader[1]
    query, passages, target = _example(entities)
    with pytest.raises(ValueError, match="no passages"):
        fid_loss(tiny, tokenizer, [query], [[]], [target])
    with pytest.raises(ValueError, match="passage lists"):
        rag_token_loss(tiny, tokenizer, [query], [passages, passages], [target])
    with pytest.raises(TypeError, match="list of strings"):
        fid_generate(tiny, tokenizer, query, [passages])
    long = [{"title": "X", "text": "word " * 400}]
    with pytest.raises(ValueError, match="positions"):
        fid_loss(tiny, tokenizer, [query], [long], [target])


# --- the profiler and its checkpoints ------------------------------------------------------------

@pytest.fixture(scope="module")
def profiler():
    return Profiler.from_pretrained("fid")


def test_profiler_retrieves_the_entitys_passages(profiler, entities):
    test = [e for e in entities if e["split"] == "test"][:6]
    for e, passages in zip(test, profiler.retrieve([e["name"] for e in test])):
        own = [p for p in passages if p["entity_id"] == e["id"]]
        assert len(own) >= len(passages) - 2 and own
        assert {p["domain"] for p in own} == {e["domain"]}


def test_profiler_refuses_bad_settings(profiler):
    with pytest.raises(ValueError, match="method"):
        Profiler(profiler.model, profiler.tokenizer, profiler.rag, method="sequence")
    with pytest.raises(ValueError, match="per_relation"):
        Profiler(profiler.model, profiler.tokenizer, profiler.rag, per_relation=0)
    with pytest.raises(TypeError, match="wrap a single one"):
        profiler.profile_many("France")
    with pytest.raises(ValueError, match="empty"):
        profiler.profile("  ")


def test_load_checkpoint_names_the_profile_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/train_profiles.py"):
        load_checkpoint("profile_fid", folder=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", Profiler.METHODS)
def test_committed_profiler_reaches_its_recorded_test_scores(method, profiler, entities, index):
    live = profiler if method == "fid" else Profiler.from_pretrained(method, rag_model=profiler.rag)
    test = [e for e in entities if e["split"] == "test"]
    result = profile_scores([p.text for p in live.profile_many([e["name"] for e in test])], test,
                            index)
    recorded = live.record["metrics"]
    assert result["precision"] == pytest.approx(recorded["test_precision"], abs=0.01)
    assert result["recall"] == pytest.approx(recorded["test_recall"], abs=0.01)


# The slow test reruns the first REPRODUCE_STEPS steps of a recorded run and compares the loss
# windows and the step-0 evaluation (tests/reproduction.py says why the start).
REPRODUCE_STEPS = 100
LOSS_TOLERANCE = 0.01


@pytest.mark.slow
@pytest.mark.parametrize("method", Profiler.METHODS)
def test_profile_script_reproduces_the_start_of_its_recorded_run(method, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_profiles.py"), "--out",
                    str(tmp_path), "--threads", "1", "--stop-after", str(REPRODUCE_STEPS),
                    "--only", method], check=True, cwd=ROOT, capture_output=True)
    name = f"profile_{method}"
    recorded = json.loads((ROOT / "checkpoints" / name / "training.json").read_text())
    fresh = json.loads((tmp_path / name / "training.json").read_text())
    assert fresh["config"] == recorded["config"] and fresh["stop_after"] == REPRODUCE_STEPS
    assert_same_start(fresh["history"], recorded["history"], REPRODUCE_STEPS, LOSS_TOLERANCE,
                      {"dev_precision": 0.01, "dev_recall": 0.01})


def test_value_token_votes_cover_the_values_and_mix_uniformly(entities, index, reader):
    from ragtutor.summaries import _value_spans, value_token_votes

    model, tokenizer = reader
    e = index["PER"]
    profile = format_profile(profile_facts(e, index))
    assert [profile[a:b] for a, b in _value_spans(profile)] == [
        str(v) for _, v, _ in profile_facts(e, index)]
    query, passages, _ = _example(entities)
    votes = value_token_votes(model, tokenizer, query, passages[:1] * 2, profile)
    values = "".join(str(v) for _, v, _ in profile_facts(e, index)).replace(" ", "")
    assert tokenizer.decode(votes["tokens"]).replace(" ", "") == values
    assert votes["per_passage"].shape == (2, len(votes["tokens"]))
    torch.testing.assert_close(votes["mixture"], votes["per_passage"][0])
    mixed = value_token_votes(model, tokenizer, query, passages[:3], profile)
    torch.testing.assert_close(mixed["mixture"], mixed["per_passage"].mean(0), atol=1e-6, rtol=1e-5)
