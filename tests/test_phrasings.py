"""Questions as people type them: the tokenizers' text path, typed training questions and
counterfactual passages with invented values."""
import re

import pytest

from ragtutor import counterfactual, data, templates
from ragtutor.tokenization import ALPHABET, UNK, train_tokenizer


@pytest.fixture(scope="module")
def kb_texts():
    return [f"{p['title']} {p['text']}" for p in data.load_passages()]


@pytest.fixture(scope="module")
def cased(kb_texts):
    return train_tokenizer(kb_texts, kind="bpe", vocab_size=2000)


@pytest.fixture(scope="module")
def uncased(kb_texts):
    return train_tokenizer(kb_texts, kind="bpe", vocab_size=2000, lowercase=True)


def _tokens(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)


@pytest.mark.parametrize("question", [
    "capital of germany", "Which city serves as Croatia's capital?", "curaçao currency",
    "Tell me the capital city of Mexico.", "what's the symbol for zorblium", "ŁÓDŹ?",
])
def test_typed_questions_never_become_unknown_tokens_and_decode_back(cased, question):
    assert UNK not in _tokens(cased, question)
    assert cased.decode(cased(question).input_ids, skip_special_tokens=True) == question


def test_an_uncased_tokenizer_reads_a_lower_case_name_as_the_name(uncased):
    assert _tokens(uncased, "capital of germany") == _tokens(uncased, "Capital of Germany")
    assert _tokens(uncased, "Curaçao") == _tokens(uncased, "CURAÇAO")


def test_unicode_variants_read_alike(cased):
    # NFKC: a composed "ç" and "c" + combining cedilla, a ligature and its letters
    assert cased("Curac\u0327ao").input_ids == cased("Curaçao").input_ids
    assert cased("\ufb01sh").input_ids == cased("fish").input_ids


def test_the_alphabet_holds_ascii_and_accented_latin_letters():
    assert {"a", "Z", "7", "?", "'", "é", "ß", "Ł", "ź"} <= set(ALPHABET)


def test_training_phrasings_use_only_the_train_pool_and_keep_the_facts():
    train = data.load_questions("train")[:60]
    typed = templates.training_phrasings(train, data.load_entities(), per_question=2, seed=0)
    assert len(typed) == 2 * len(train)
    by_id = {q["id"]: q for q in train}
    for q in typed:
        original = by_id[q["id"].rsplit("/typed/", 1)[0]]
        assert q["template"] in templates.PHRASINGS[q["relation"]]["train"]
        assert (q["answers"], q["passage_id"]) == (original["answers"], original["passage_id"])
    assert typed == templates.training_phrasings(train, data.load_entities(), per_question=2, seed=0)


def test_word_dropout_keeps_the_name_and_a_content_word():
    import random
    rng = random.Random(0)
    cases = [("Give the currency of Chile.", "Chile"), ("Which city serves as Croatia's capital?",
             "Croatia"), ("the netherlands currency", "Netherlands"), ("Bosnia and Herzegovina",
             "Bosnia and Herzegovina"), ("capital of germany", "Germany")]
    for question, name in cases:
        outs = [templates.drop_words(question, name, 0.9, rng) for _ in range(50)]
        for out in outs:
            words = out.split()
            assert set(words) <= set(question.split())
            assert all(w in words for w in question.split() if templates._fold(w).startswith(
                tuple(templates._fold(name).split())))
            if question.split() != name.split():
                assert any(data_word not in name.lower().split()
                           for data_word in (w.lower() for w in words))
        assert templates.drop_words(question, name, 0.0, rng) == question
    assert templates.drop_words("capital of germany", "Germany", 0.9, rng) in (
        "capital germany", "capital of germany")  # "of" is no content word: "capital" stays
    with pytest.raises(ValueError, match="probability"):
        templates.drop_words("capital of germany", "Germany", 1.0, rng)


@pytest.fixture(scope="module")
def entities():
    return data.load_entities()


def test_typed_counterfactuals_change_questions_only(entities):
    plain = counterfactual.counterfactual_examples(entities, 300, seed=5)
    typed = counterfactual.counterfactual_examples(entities, 300, seed=5, typed=0.5)
    assert [e["text"] for e in plain] == [e["text"] for e in typed]
    changed = sum(a["question"] != b["question"] for a, b in zip(plain, typed))
    assert 100 < changed < 200  # about half


def test_invented_values_are_stated_in_the_passage_and_are_the_answer(entities):
    plain = counterfactual.counterfactual_examples(entities, 400, seed=5)
    made_up = counterfactual.counterfactual_examples(entities, 400, seed=5, invented=0.5)
    changed = [(a, b) for a, b in zip(plain, made_up) if a["answers"] != b["answers"]]
    assert 120 < len(changed) < 220
    for before, after in changed:
        value = after["answers"][0]
        assert after["answers"] == [value] and value in after["text"]
        assert not re.search(r"(?<!\w)" + re.escape(before["answers"][0]) + r"(?!\w)", after["text"])
        assert after["question"] == before["question"]


@pytest.mark.parametrize("like, shape", [("79.904", r"[1-9]?\d\.\d{3}"), ("Fe", r"[A-Z][a-z]"),
                                         ("K", r"[A-Z]"), ("Canberra", r"[A-Z][a-z]{2,}( [A-Z][a-z]{2,})?")])
def test_invented_values_take_the_shape_of_the_true_one(like, shape):
    import random
    rng = random.Random(0)
    for _ in range(20):
        assert re.fullmatch(shape, counterfactual.invented_value(rng, like))


@pytest.mark.parametrize("name, value", [("typed", 1.5), ("invented", -0.1)])
def test_shares_outside_zero_to_one_are_refused(entities, name, value):
    with pytest.raises(ValueError, match=f"{name} must be a share"):
        counterfactual.counterfactual_examples(entities, 1, **{name: value})
