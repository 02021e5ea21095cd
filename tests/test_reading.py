"""ragtutor.reading: the probes that tell a generator that reads from one that remembers."""
import re

import pytest

from ragtutor import data
from ragtutor.generation import load_checkpoint
from ragtutor.reading import (EDITED_RELATIONS, edited_passages, irrelevant_passages, known_words,
                              reading_check)


@pytest.fixture(scope="module")
def kb():
    return data.load_passages(), data.load_questions("test")


def test_edited_passages_state_an_invented_value_instead_of_the_answer(kb):
    passages, questions = kb
    by_id = {p["id"]: p for p in passages}
    known = known_words()
    cases = edited_passages(questions, passages, known=known)
    assert len(cases) >= 50
    for case in cases:
        q, value = case["question"], case["answer"]
        assert q["relation"] in EDITED_RELATIONS and not q["id"].endswith("/1")
        assert not {w.lower() for w in re.findall(r"\w+", value)} & known, value
        gold = by_id[q["passage_id"]]["text"]
        assert case["text"] == re.sub(r"\b" + re.escape(q["answers"][0]) + r"\b", value, gold)
        assert not re.search(r"\b" + re.escape(q["answers"][0]) + r"\b", case["text"])
    # deterministic for a seed, and another seed invents other values
    again = edited_passages(questions, passages, known=known)
    assert [c["answer"] for c in again] == [c["answer"] for c in cases]
    other = edited_passages(questions, passages, seed=1, known=known)
    assert [c["answer"] for c in other] != [c["answer"] for c in cases]


def test_an_irrelevant_passage_is_about_another_entity(kb):
    passages, questions = kb
    by_id = {p["id"]: p for p in passages}
    chosen = irrelevant_passages(questions, passages, seed=3)
    assert len(chosen) == len(questions)
    assert all(p["title"] != by_id[q["passage_id"]]["title"] for q, p in zip(questions, chosen))
    assert chosen == irrelevant_passages(questions, passages, seed=3)


def test_the_course_reader_reads(kb):
    """The reader (chapter 03) answers from the gold passage, copies invented values and answers
    almost nothing from a passage about another entity. Bounds: the 95% bootstrap interval's far end,
    rounded outward, of what was measured on all
    test questions (gold 0.976, edited 0.865, irrelevant 0.004)."""
    passages, questions = kb
    reader, tokenizer, _ = load_checkpoint("reader")
    result = reading_check(reader, tokenizer, questions, passages)
    assert {name: r["n"] for name, r in result.items()} == {
        "gold": len(questions), "edited": len(edited_passages(questions, passages)),
        "irrelevant": len(questions)}
    for r in result.values():
        assert len(r["hits"]) == len(r["predictions"]) == r["n"]
        assert r["em"] == sum(r["hits"]) / r["n"]
    assert result["gold"]["em"] >= 0.96
    assert result["edited"]["em"] >= 0.79
    assert result["irrelevant"]["em"] <= 0.01


def test_reading_check_reads_the_question_as_told(kb):
    passages, questions = kb
    reader, tokenizer, _ = load_checkpoint("reader")
    seen = []

    def read(texts):
        seen.extend(texts)
        return [t.lower() for t in texts]

    reading_check(reader, tokenizer, questions[:4], passages, read=read)
    assert seen == [q["question"] for q in questions[:4]]
    with pytest.raises(ValueError, match="no questions"):
        reading_check(reader, tokenizer, [], passages)


def test_training_never_invents_a_value_an_evaluation_can_invent():
    """Counterfactual training (train_rag's ``counterfactual``) writes invented values of its own:
    none may be one that the evaluations' ``invent`` makes, or an evaluated value would no longer
    be unseen. Training stems hold a "c" or a "j", which no evaluation syllable has, and training
    symbols end in letters evaluation symbols never do; 4,000 draws of each side are checked."""
    import random

    from ragtutor.generation import load_checkpoint
    from ragtutor.reading import _SYLLABLES, invent, invent_for_training, name_pieces

    assert not {"c", "j"} & set("".join(_SYLLABLES))
    known = known_words()
    _, tokenizer, _ = load_checkpoint("reader")
    pieces = name_pieces(tokenizer)
    assert all(tokenizer.tokenize(" " + s)[0] == "\u2581" + s for s in pieces[0][0][:50])
    for relation in EDITED_RELATIONS:
        rng_train, rng_eval = random.Random(1), random.Random(2)
        trained = {invent_for_training(rng_train, relation, known, pieces) for _ in range(1000)}
        evaluated = {invent(rng_eval, relation, known) for _ in range(1000)}
        assert not trained & evaluated, relation
        assert not {v.lower() for v in trained} & known
        if relation == "symbol":
            assert {v[1] for v in trained} <= set("cfgkpy") and not {v[1] for v in evaluated} & set("cfgkpy")
        else:
            stems = [v[:-3] if relation == "demonym" and v.endswith(("ian", "ese")) else
                     v[:-2] if relation == "demonym" else v for v in trained]
            assert all({"c", "j"} & set(s.lower()) for s in stems), relation
    with pytest.raises(ValueError, match="no word-initial"):
        name_pieces(type("T", (), {"get_vocab": lambda self: {"a": 0}})())


def test_a_counterfactual_edit_is_only_for_the_edited_relations(kb):
    import random

    from ragtutor.reading import counterfactual_edit

    _, questions = kb
    rng, known, pieces = random.Random(0), known_words(), ((["Mar"], [1.0]), (["cos"], [1.0]))
    for q in questions[:60]:
        edit = counterfactual_edit(q, rng, known, pieces)
        if q["relation"] in EDITED_RELATIONS:
            assert edit[0] == q["answers"][0] and edit[1] != edit[0]
        else:
            assert edit is None
