"""Does a generator read its passage? Three probes, for a reader or a RAG model's generator.

A generator that *reads* answers from the passage it is given; one that *remembers* answers from
what it learnt in training, whatever the passage says. Three probes tell them apart (chapter 03
makes the first; chapter 05 applies all three to a generator trained jointly with its retriever):

- **gold**: the question's gold passage as it is — the answer is there to copy;
- **edited**: the gold passage rewritten so that it states an *invented value* ("Velmarosk",
  "Qz") instead of the true answer, a string none of whose words occurs anywhere in the knowledge
  base (:func:`edited_passages`); a reader copies it, a memoriser writes the true answer;
- **irrelevant**: a passage about another entity (:func:`irrelevant_passages`); a reader finds
  no answer and writes something wrong, a memoriser still answers a question it was trained on.
"""
import json
import random
import re

from ragtutor import data
from ragtutor.generation import combined_input, generate_answers
from ragtutor.metrics import exact_match

__all__ = ["EDITED_RELATIONS", "known_words", "invent", "name_pieces", "invent_for_training",
           "counterfactual_edit", "edited_passages", "irrelevant_passages", "reading_check"]

EDITED_RELATIONS = ("capital", "currency", "demonym", "symbol")
_SYLLABLES = ["vel", "mar", "osk", "tru", "bani", "zor", "quel", "dra", "ith", "nox", "pel", "vash",
              "orn", "kel", "umb", "rast", "yev", "gol", "fen", "tiq"]


def known_words():
    """Every word (lower case) of the knowledge base: passages, entity records, questions."""
    words = set()
    texts = [p["title"] + " " + p["text"] for p in data.load_passages()]
    texts += [json.dumps(e, ensure_ascii=False) for e in data.load_entities()]
    texts += [q["question"] for s in data.SPLITS for q in data.load_questions(s)]
    for text in texts:
        words.update(w.lower() for w in re.findall(r"\w+", text))
    return words


def invent(rng, relation, known):
    """An invented value for ``relation``, none of whose words is in ``known``: two letters for a
    chemical symbol, else two or three syllables (plus a demonym's ending for a demonym)."""
    while True:
        if relation == "symbol":
            value = rng.choice("BCDFGHJKLMNPQRSTVWXZ") + rng.choice("qxzjvw")
        else:
            value = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            if relation == "demonym":
                value += rng.choice(["ian", "ese", "ic"])
        if value.lower() not in known:
            return value


# Training's invented values (counterfactual training, ``ragtutor.rag_model.train_rag``) come from
# another inventory: every one has a "c" or a "j" in its stem, a letter no syllable above has, and a
# training symbol's second letter is none of the evaluation's. So no value that :func:`invent` makes
# for an evaluation can ever have been a training target: evaluated values stay unseen.
_TRAIN_SYMBOL_SECOND = "cfgkpy"


def name_pieces(tokenizer, texts=()):
    """The pieces a generator spells invented names with, each with how often to draw it:
    ``((starts, start_weights), (middles, middle_weights))``. ``starts`` are the vocabulary's pieces
    of at most four letters that begin a word with a capital letter ("▁Mar", as "Mar") and
    ``middles`` those that go on one in small letters ("os"). The byte-pair merges leave many such
    pieces behind that ``texts`` (the knowledge base a generator learns from) hardly ever contain,
    so a generator trained on those texts alone has hardly ever written them (chapter 05): a piece
    that occurs n times in ``texts`` is drawn with weight 1 / (1 + n), the rare ones most."""
    counts = {}
    for ids in (tokenizer(list(texts), add_special_tokens=False).input_ids if texts else []):
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    starts, middles = ([], []), ([], [])
    for piece, i in sorted(tokenizer.get_vocab().items()):
        word = piece[1:] if piece.startswith("\u2581") else None
        if word is not None and 1 <= len(word) <= 4 and word.isascii() and word.isalpha() \
                and word[0].isupper() and word[1:] == word[1:].lower():
            group = starts
        elif word is None and len(piece) <= 4 and piece.isascii() and piece.isalpha() \
                and piece.islower():
            group, word = middles, piece
        else:
            continue
        group[0].append(word)
        group[1].append(1.0 / (1 + counts.get(i, 0)))
    if not starts[0] or not middles[0]:
        raise ValueError("the tokenizer has no word-initial capitalised pieces or no lower-case "
                         "pieces to spell invented names with")
    return starts, middles


def invent_for_training(rng, relation, known, pieces):
    """An invented value for counterfactual *training*, none of whose words is in ``known`` and
    none of which :func:`invent` can ever make (see above). Names are spelt from the tokenizer's
    ``pieces`` (:func:`name_pieces`, drawn by their weights): one word-initial piece and one to
    three more, with a "c" or a "j" in the stem (a demonym's ending added); a symbol is a capital
    letter and one of ``"cfgkpy"``."""
    (starts, start_weights), (middles, middle_weights) = pieces
    while True:
        if relation == "symbol":
            value = rng.choice("BCDFGHJKLMNPQRSTVWXZ") + rng.choice(_TRAIN_SYMBOL_SECOND)
        else:
            value = (rng.choices(starts, start_weights)[0]
                     + "".join(rng.choices(middles, middle_weights, k=rng.randint(1, 3))))
            if not {"c", "j"} & set(value.lower()):
                continue
            if relation == "demonym":
                value += rng.choice(["ian", "ese", "ic"])
        if value.lower() not in known:
            return value


def counterfactual_edit(question, rng, known, pieces):
    """``(old, new)`` for a counterfactual training example, or None: ``old`` is the question's
    first answer and ``new`` an invented value (:func:`invent_for_training`) for questions about
    capitals, currencies, demonyms and symbols. ``RAGModel.forward(..., edits=)`` reads every
    retrieved passage that states ``old`` with ``new`` in its place and trains on ``new``."""
    if question.get("relation") not in EDITED_RELATIONS:
        return None
    return question["answers"][0], invent_for_training(rng, question["relation"], known, pieces)


def edited_passages(questions, passages, seed=0, known=None):
    """The questions about capitals, currencies, demonyms and symbols whose answer is written in
    their gold passage (one per fact: the second question of a fact, id ending ``/1``, is left
    out), each with that passage rewritten to state an invented value: a list of dicts with
    ``question`` (the question record), ``title``, ``text`` (rewritten) and ``answer`` (the
    invented value). Deterministic for a given ``seed``."""
    by_id = {p["id"]: p for p in passages}
    known = known_words() if known is None else known
    rng, cases = random.Random(seed), []
    for q in questions:
        if q["relation"] not in EDITED_RELATIONS or q["id"].endswith("/1"):
            continue
        gold = by_id[q["passage_id"]]
        pattern = re.compile(r"\b" + re.escape(q["answers"][0]) + r"\b")
        if not pattern.search(gold["text"]):
            continue
        value = invent(rng, q["relation"], known)
        cases.append({"question": q, "title": gold["title"], "text": pattern.sub(value, gold["text"]),
                      "answer": value})
    return cases


def irrelevant_passages(questions, passages, seed=0):
    """For each question, a passage drawn at random among those about other entities (their
    title differs from the gold passage's): ``[passage, ...]`` in the order of ``questions``."""
    by_id = {p["id"]: p for p in passages}
    rng, chosen = random.Random(seed), []
    for q in questions:
        title = by_id[q["passage_id"]]["title"]
        while True:
            p = passages[rng.randrange(len(passages))]
            if p["title"] != title:
                chosen.append(p)
                break
    return chosen


def reading_check(model, tokenizer, questions, passages, read=None, seed=0):
    """The three probes of this module on ``questions``: ``{"gold", "edited", "irrelevant"}``, each
    ``{"em", "n", "hits", "predictions"}`` (``hits`` one 0/1 per question, for a bootstrap
    interval). Exact match is against the question's answers for ``gold`` and ``irrelevant`` and
    against the invented value for ``edited`` (over the questions :func:`edited_passages` keeps).

    ``read`` maps question strings to the text the generator reads — a RAG model's generator
    reads the question as its retriever's tokenizer decodes it (``RAGModel.questions_as_read``);
    by default the question as written.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("no questions to check")
    read = read or (lambda texts: list(texts))
    by_id = {p["id"]: p for p in passages}
    as_read = dict(zip((q["question"] for q in questions), read([q["question"] for q in questions])))
    edited = edited_passages(questions, passages, seed=seed)
    probes = {
        "gold": ([combined_input(by_id[q["passage_id"]]["title"], by_id[q["passage_id"]]["text"],
                                 as_read[q["question"]]) for q in questions],
                 [q["answers"] for q in questions]),
        "edited": ([combined_input(c["title"], c["text"], as_read[c["question"]["question"]])
                    for c in edited], [[c["answer"]] for c in edited]),
        "irrelevant": ([combined_input(p["title"], p["text"], as_read[q["question"]]) for q, p in
                        zip(questions, irrelevant_passages(questions, passages, seed=seed))],
                       [q["answers"] for q in questions]),
    }
    result = {}
    for name, (sources, answers) in probes.items():
        predictions = generate_answers(model, tokenizer, sources) if sources else []
        hits = [float(exact_match(p, a)) for p, a in zip(predictions, answers)]
        result[name] = {"em": sum(hits) / len(hits) if hits else float("nan"), "n": len(hits),
                        "hits": hits, "predictions": predictions}
    return result
