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

__all__ = ["EDITED_RELATIONS", "known_words", "invent", "edited_passages", "irrelevant_passages",
           "reading_check"]

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
