"""The decoder-only reader: prompt format, answer-only loss, greedy decoding, training, saving."""
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from ragtutor.checksums import ChecksumError
from ragtutor.data import load_passages, load_questions
from ragtutor.decoder_only import (DecoderOnlyReader, build_prompt, passages_that_fit,
                                   prompt_examples, retrieved_examples, train_decoder_reader)

READER = Path(__file__).resolve().parents[1] / "checkpoints" / "reader"
FRANCE = {"id": "p1", "title": "France", "text": "The capital of France is Paris."}
SPAIN = {"id": "p2", "title": "Spain", "text": "The capital of Spain is Madrid."}


@pytest.fixture(scope="module")
def tokenizer():
    return PreTrainedTokenizerFast.from_pretrained(READER, local_files_only=True)


def tiny(tokenizer, context_length=64, init_std=0.02, seed=0):
    torch.manual_seed(seed)
    return DecoderOnlyReader(tokenizer, n_embd=32, n_layer=2, n_head=2, n_inner=64,
                             context_length=context_length, init_std=init_std)


def test_prompt_format_is_exact():
    assert build_prompt("What is the capital of France?", [FRANCE, SPAIN]) == (
        "[1] France: The capital of France is Paris.\n"
        "[2] Spain: The capital of Spain is Madrid.\n"
        "Question: What is the capital of France?\nAnswer:")


def test_newline_is_one_added_token_and_the_given_tokenizer_is_unchanged(tokenizer):
    reader = tiny(tokenizer)
    assert len(tokenizer) == 4000 and len(reader.tokenizer) == 4001
    ids = reader.tokenizer("\n", add_special_tokens=False).input_ids
    assert len(ids) == 1 and ids[0] != reader.tokenizer.unk_token_id


def test_loss_is_the_answer_tokens_only(tokenizer):
    reader = tiny(tokenizer, init_std=0.5)
    prompts = [build_prompt("What is the capital of France?", [FRANCE, SPAIN]),
               build_prompt("Capital of Spain?", [SPAIN])]
    answers = ["Paris", "Madrid de Castilla"]
    enc = lambda s: reader.tokenizer(s, add_special_tokens=False).input_ids
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        p, a = enc(prompt), enc(answer) + [reader.tokenizer.eos_token_id]
        ids = torch.tensor([[reader.tokenizer.bos_token_id] + p + a])
        log_probs = torch.log_softmax(reader.model(input_ids=ids).logits[0], -1)
        for t in range(1 + len(p), ids.shape[1]):  # the answer's positions, </s> included
            total -= log_probs[t - 1, ids[0, t]].item()
            count += 1
    assert reader.loss(prompts, answers).item() == pytest.approx(total / count, rel=1e-5)


def _greedy_by_hand(reader, prompt, max_new_tokens):
    tok = reader.tokenizer
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False).input_ids
    new = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = reader.model(input_ids=torch.tensor([ids + new])).logits[0, -1]
        new.append(int(logits.argmax()))
        if new[-1] == tok.eos_token_id:
            break
    return tok.decode(new, skip_special_tokens=True).strip()


def test_generate_is_greedy_decoding(tokenizer):
    reader = tiny(tokenizer, init_std=0.5)
    prompts = [build_prompt("What is the capital of France?", [FRANCE, SPAIN]),
               build_prompt("Capital?", [SPAIN]), "Paris"]
    expected = [_greedy_by_hand(reader, p, 8) for p in prompts]
    assert reader.generate(prompts, max_new_tokens=8) == expected
    assert any(expected)


def test_training_overfits_a_few_pairs(tokenizer):
    reader = tiny(tokenizer)
    examples = [(build_prompt("What is the capital of France?", [FRANCE, SPAIN]), "Paris"),
                (build_prompt("What is the capital of Spain?", [FRANCE, SPAIN]), "Madrid"),
                (build_prompt("What is the capital of Spain?", [SPAIN, FRANCE]), "Madrid"),
                (build_prompt("Which country has Paris?", [SPAIN, FRANCE]), "France")]
    prompts = [p for p, _ in examples]
    before = reader.loss(prompts, [a for _, a in examples]).item()
    history = train_decoder_reader(reader, examples, steps=60, batch_size=4, lr=1e-2, warmup=5,
                                   progress=False)
    assert history["loss"][-1] < before / 4
    assert reader.generate(prompts, max_new_tokens=4) == [a for _, a in examples]


def test_save_and_load_round_trip_and_manifest(tokenizer, tmp_path):
    reader = tiny(tokenizer, init_std=0.5)
    prompts = [build_prompt("What is the capital of France?", [FRANCE, SPAIN])]
    reader.save_pretrained(tmp_path / "dec")
    loaded = DecoderOnlyReader.from_pretrained(tmp_path / "dec")
    assert loaded.context_length == 64 and len(loaded.tokenizer) == len(reader.tokenizer)
    for name, tensor in reader.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert loaded.generate(prompts) == reader.generate(prompts)
    assert loaded.loss(prompts, ["Paris"]).item() == reader.loss(prompts, ["Paris"]).item()
    weights = tmp_path / "dec" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors"):
        DecoderOnlyReader.from_pretrained(tmp_path / "dec")


def test_long_prompt_is_refused_saying_how_many_passages_fit(tokenizer):
    reader = tiny(tokenizer, context_length=64)
    passages = [FRANCE, SPAIN, FRANCE, SPAIN]
    question = "What is the capital of France?"
    fit = passages_that_fit(question, passages, reader.tokenizer, 64, reserve=16)
    assert 0 < fit < len(passages)
    assert reader.fits(build_prompt(question, passages[:fit]), reserve=16)
    assert not reader.fits(build_prompt(question, passages[:fit + 1]), reserve=16)
    with pytest.raises(ValueError, match=f"Only the first {fit} of its 4 passages would fit"):
        reader.generate([build_prompt(question, passages)], max_new_tokens=15)
    with pytest.raises(ValueError, match="context_length=64"):
        reader.loss([build_prompt(question, passages)], ["Paris"])
    assert passages_that_fit(question, passages, reader.tokenizer, 10_000) == 4


@pytest.mark.parametrize("call, error", [
    (lambda r: build_prompt("Q?", []), ValueError),
    (lambda r: build_prompt("", [FRANCE]), ValueError),
    (lambda r: build_prompt(3, [FRANCE]), TypeError),
    (lambda r: build_prompt("Q?", FRANCE), TypeError),
    (lambda r: build_prompt("Q?", [{"title": "T", "text": 5}]), TypeError),
    (lambda r: r.generate([]), ValueError),
    (lambda r: r.generate("a prompt"), TypeError),
    (lambda r: r.generate(["ok", 7]), TypeError),
    (lambda r: r.generate(["ok"], max_new_tokens=0), ValueError),
    (lambda r: r.loss(["a", "b"], ["x"]), ValueError),
    (lambda r: r.loss([], []), ValueError),
    (lambda r: train_decoder_reader(r, [], steps=1), ValueError),
    (lambda r: train_decoder_reader(r, [("p", 3)], steps=1), TypeError),
    (lambda r: prompt_examples([{"question": "Q?", "answers": ["A"], "passage_id": "p1"}],
                               [FRANCE, SPAIN], k=0), ValueError),
    (lambda r: prompt_examples([], [FRANCE], k=1), ValueError),
    (lambda r: prompt_examples([{"question": "Q?", "answers": ["A"], "passage_id": "p1"}],
                               [FRANCE, SPAIN], distractors="gold", k=1), ValueError),
])
def test_bad_inputs_raise_clear_errors(tokenizer, call, error):
    with pytest.raises(error):
        call(tiny(tokenizer))


def test_prompt_examples_hold_the_gold_passage_in_varying_places():
    passages = load_passages()
    questions = load_questions("train")[:40]
    examples = prompt_examples(questions, passages, k=4, seed=1)
    by_id = {p["id"]: p for p in passages}
    positions = set()
    for q, (prompt, answer) in zip(questions, examples):
        gold = by_id[q["passage_id"]]
        lines = prompt.split("\n")
        assert len(lines) == 4 + 2 and answer == q["answers"][0]
        rank = [i for i, line in enumerate(lines[:4])
                if line == f"[{i + 1}] {gold['title']}: {gold['text']}"]
        assert len(rank) == 1
        positions.add(rank[0])
        assert len({line.split("] ", 1)[1] for line in lines[:4]}) == 4  # no passage twice
    assert positions == {0, 1, 2, 3}
    assert prompt_examples(questions, passages, k=4, seed=1) == examples


def test_prompt_examples_with_a_retriever():
    from ragtutor.sparse import BM25Retriever
    passages = load_passages()
    questions = load_questions("dev")[:10]
    retriever = BM25Retriever().fit(passages)
    examples = prompt_examples(questions, passages, distractors=retriever, k=3)
    _, ids = retriever.search([q["question"] for q in questions], 3)
    by_id = {p["id"]: p for p in passages}
    for q, row, (prompt, _) in zip(questions, ids, examples):
        shown = {line for line in prompt.split("\n")[:3]}
        others = [i for i in row if i != q["passage_id"]][:2]
        for pid in [q["passage_id"], *others]:
            assert any(line.endswith(f"{by_id[pid]['title']}: {by_id[pid]['text']}")
                       for line in shown)


def test_retrieved_examples_hold_the_gold_passage_and_the_retrievers_best_others():
    from ragtutor.sparse import BM25Retriever

    passages = load_passages()
    questions = load_questions("dev")[:40]
    bm25 = BM25Retriever().fit(passages)
    rows = retrieved_examples(questions, passages, bm25, k=3, seed=1)
    _, best = bm25.search([q["question"] for q in questions], 3)
    positions = set()
    for (q, shown), ranked in zip(rows, best):
        ids = [p["id"] for p in shown]
        assert len(ids) == 3 and q["passage_id"] in ids
        assert set(ids) - {q["passage_id"]} == set([i for i in ranked if i != q["passage_id"]][:2])
        positions.add(ids.index(q["passage_id"]))
    assert positions == {0, 1, 2}  # the gold passage is not always in one place
    again = retrieved_examples(questions, passages, bm25, k=3, seed=1)
    assert [[p["id"] for p in s] for _, s in again] == [[p["id"] for p in s] for _, s in rows]
    with pytest.raises(ValueError, match="k must be an int between 1"):
        retrieved_examples(questions, passages, bm25, k=0)
    with pytest.raises(KeyError, match="questions name passages that are not given"):
        retrieved_examples(questions, passages[:5], bm25)
