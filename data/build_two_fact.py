"""Build questions that need two passages of the knowledge base, deterministically and offline.

    python data/build_two_fact.py                 write data/kb/two_fact_questions.jsonl and
                                                  data/kb/two_fact_manifest.json
    python data/build_two_fact.py --out DIR       write them into DIR instead
    python data/build_two_fact.py --check         rebuild into a temporary folder; exit 1 if different
    python data/build_two_fact.py --stats         print the counts per split, kind and relation

Groundwork for comparing Fusion-in-Decoder (one reader sees several passages at once) with
RAG-Sequence and RAG-Token (one passage per answer or per token, then a weighted vote). Every
question needs facts from two different passages, and no single passage of the knowledge base
states them all:

* ``bridge`` -- "Which country bordering Romania uses the euro?" -> Bulgaria: the subject X's
  *neighbours* passage lists its land neighbours (first sentence); one neighbour Y's *economy*
  (currency), *people* (official language) or *geography* (region) passage states the value.
  X has at least two neighbours; exactly one of them holds the value, by the entity records and
  by the first sentence (the one about the country itself) of every neighbour's passage; at
  least two countries of the knowledge base hold it, so that Y's passage alone ("Bulgaria uses
  the euro") leaves the question open. The answer is Y.
* ``chain`` -- "What currency is used in the country whose capital is Zagreb?" -> euro: the
  country is named only by its capital; Y's *capital* passage names the country, its *economy*,
  *people* or *geography* passage states the answer (a single currency, a single official
  language, or the region). Countries with several capitals, a capital note or a disputed
  capital are left out, and so is a capital name two countries share.
* ``comparison`` -- "Which is denser, iron or lead?" -> lead: the two entities' *physical*
  (density), *overview* (atomic number) or *geography* (area) passages each state one value;
  the answer is one of the two names (a 50% guessing baseline; the answer comes first in half of
  the questions). The values differ by a factor of at least MIN_RATIO; only densities measured at
  room temperature and not marked "about" or "calculated" are compared.

What "a single passage suffices" means, and is excluded for every question: a bridge question is
dropped when any passage of the knowledge base names X, Y and the value together (a passage
that says "Y uses the euro; X also uses the euro" is excluded even though it says nothing of a
border); a chain question when any passage names the capital and states the answer ("Mali, also
in Western Africa, has its capital at Bamako"); a comparison when any passage names both
entities (the element passages name their neighbours in the table with their densities and
masses, the country passages their neighbours and peers). Names are matched as whole words,
accents and case folded, over every name and alias -- an over-inclusive test, so that it errs
towards dropping questions. Questions whose wording gives the answer away are dropped too: a
value that shares a word (or its first four letters) with the answer country's name or demonym
("Swiss franc", "Greek", "Mozambique metical", "Southern Africa" for South Africa), a capital that
does so ("Mexico City"), and a question that contains the answer ("bordering South Sudan" ->
Sudan).

Splits: a question has the split of the entity it names (a chain question names its country by
the capital). Comparisons pair two entities of the same split. A bridge question has its subject
X's split; a train question's answer Y is a train entity too, so that no dev or test entity is
the answer of a training question; a dev or test question's answer may be an entity of any split
(its subject is a dev or test entity, so a test question never names only train entities).

Retrieval: the second passage of a bridge or chain question shares little with the question
(only the value word, or nothing but "currency"), so one-shot retrieval rarely finds both
passages (BM25 top 10: about 1 bridge or chain question in 10); a comparison names both
entities, and BM25's top 10 holds both passages for about 7 in 10. Compare readers on gold
passages plus distractors, or retrieve in two hops.

The inputs are data/kb/passages.jsonl and entities.jsonl, read through ragtutor.data (checked
against MANIFEST.sha256) and never written. The output is a pure function of those files and
SEED: the manifest records their sha256, so ``ragtutor.multihop`` can tell when the knowledge
base was rebuilt after the questions.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import unicodedata
from pathlib import Path

from ragtutor import data
from ragtutor.multihop import guessing_baseline
from ragtutor.text import normalize_text

SEED = 0
OUT_NAME = "two_fact_questions.jsonl"
MANIFEST_NAME = "two_fact_manifest.json"
SPLITS = ("train", "dev", "test")
KINDS = ("bridge", "chain", "comparison")
RELATIONS = {"bridge": ("currency", "language", "region"),
             "chain": ("currency", "language", "region"),
             "comparison": ("area", "density", "atomic_number")}
# Comparisons kept per (split, relation), drawn by sha256 of SEED and the question id; every
# eligible pair is far more than an evaluation needs. Bridge and chain questions are all kept.
COMPARISON_CAP = {"train": 1000, "dev": 60, "test": 60}
# Smallest ratio of the larger to the smaller stated value: no near-ties that a rounding, a
# different temperature or another source could turn round.
MIN_RATIO = {"area": 1.1, "density": 1.05, "atomic_number": 1.0}
# Aspect of the passage that states each relation's value.
ASPECT = {"currency": "economy", "language": "people", "region": "geography",
          "area": "geography", "density": "physical", "atomic_number": "overview"}

# Templates: bridge ones take {subject} (the name as it reads inside a sentence) and {value};
# comparison ones {a} and {b}, with the direction of the comparison ("more": the answer has the
# larger value).
BRIDGE_TEMPLATES = {
    "currency": ["Which country bordering {subject} uses the {value}?",
                 "Among the neighbours of {subject}, which country has the {value} as its currency?",
                 "Which of the countries that border {subject} pays with the {value}?"],
    "language": ["Which country bordering {subject} has {value} as an official language?",
                 "Among the neighbours of {subject}, which country has {value} as an official language?",
                 "{Value} is an official language in which of the countries that border {subject}?"],
    "region": ["Which country bordering {subject} lies in {value}?",
               "Among the neighbours of {subject}, which country is in {value}?",
               "Which of the countries that border {subject} belongs to the region of {value}?"],
}
CHAIN_TEMPLATES = {
    "currency": ["What currency is used in the country whose capital is {capital}?",
                 "Which currency does the country with its capital at {capital} use?",
                 "{Capital} is the capital of a country. What is that country's currency?"],
    "language": ["What is the official language of the country whose capital is {capital}?",
                 "Which language is official in the country with its capital at {capital}?",
                 "{Capital} is the capital of a country. Which language is official there?"],
    "region": ["In which region is the country whose capital is {capital}?",
               "Which region does the country with its capital at {capital} belong to?",
               "{Capital} is the capital of a country. In which region does that country lie?"],
}
COMPARISON_TEMPLATES = {
    "area": [("Which country is larger, {a} or {b}?", "more"),
             ("Which has the greater area, {a} or {b}?", "more"),
             ("Which country is smaller, {a} or {b}?", "less")],
    "density": [("Which is denser, {a} or {b}?", "more"),
                ("Which has the higher density, {a} or {b}?", "more"),
                ("Which is less dense, {a} or {b}?", "less")],
    "atomic_number": [("Which has the higher atomic number, {a} or {b}?", "more"),
                      ("Which element has more protons in its nucleus, {a} or {b}?", "more"),
                      ("Which comes first in the periodic table, {a} or {b}?", "less")],
}

# Words of a value that may not betray the answer's name ("Swiss franc" -> Switzerland,
# "Greek" -> Greece, "Southern Africa" -> South Africa): compared after folding, equal or
# sharing their first four letters. Generic words are left out of the comparison.
_GENERIC = {"the", "and", "of", "new", "dollar", "franc", "pound", "peso", "rupee", "dinar", "rial",
            "riyal", "dirham", "shilling", "mark", "lira", "krona", "krone", "real", "won", "som"}
_ROOM_TEMPERATURE = re.compile(r" at (\d+(?:\.\d+)?) °C")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bSt\.)\s+(?=[A-Z])")  # not after "St." (St. George's)


class BuildError(ValueError):
    """The knowledge base does not say what a question needs: a bug or a changed knowledge base."""


# ----------------------------------------------------------------------------------------------
# Reading the knowledge base
# ----------------------------------------------------------------------------------------------
def kb_checksums(kb_dir):
    """sha256 of the input files, as MANIFEST.sha256 of ``kb_dir`` lists them."""
    listed = dict(reversed(line.split("  ", 1)) for line in
                  (Path(kb_dir) / data.MANIFEST).read_text(encoding="utf-8").splitlines())
    return {name: listed[name] for name in ("entities.jsonl", "passages.jsonl")}


def kb_folder(kb_dir=None):
    """The knowledge base folder, chosen as ragtutor.data chooses it."""
    return Path(kb_dir or os.environ.get("RAGTUTOR_DATA_DIR") or data.DATA_DIR)


def fold(text):
    return normalize_text(text)


def first_sentence(text):
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def _word_pattern(strings):
    alternatives = sorted({fold(s) for s in strings if s.strip()}, key=lambda s: (-len(s), s))
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\w)")


def names_of(entity):
    """Every name an entity goes by in the knowledge base: its name and aliases."""
    return [entity["name"], *entity["aliases"]]


def mentions(text, strings):
    """Whether ``text`` names any of ``strings`` as whole words (accents and case folded)."""
    return bool(_word_pattern(strings).search(fold(text)))


class Index:
    """Entities and passages, with the passages that name each entity or value (folded words)."""

    def __init__(self, entities, passages):
        self.entities = {e["id"]: e for e in entities}
        self.passages = {p["id"]: p for p in passages}
        self._folded = {p["id"]: fold(p["text"]) for p in passages}
        self._cache = {}

    def naming(self, strings):
        """Ids of the passages that name any of ``strings``."""
        key = tuple(sorted({fold(s) for s in strings if s.strip()}))
        if key not in self._cache:
            pattern = _word_pattern(key)
            self._cache[key] = frozenset(  # a plain substring test first: most passages fail it
                pid for pid, text in self._folded.items()
                if any(s in text for s in key) and pattern.search(text))
        return self._cache[key]

    def naming_entity(self, entity_id):
        return self.naming(names_of(self.entities[entity_id]))

    def text(self, passage_id):
        passage = self.passages.get(passage_id)
        if passage is None:
            raise BuildError(f"passage {passage_id} is not in the knowledge base")
        return passage["text"]


def mid(entity):
    """The entity's name inside a sentence: "the Netherlands", "iron"."""
    if entity["domain"] == "element":
        return entity["name"].lower()
    return ("the " if entity["facts"].get("definite") else "") + entity["name"]


def answers_of(entity):
    return list(dict.fromkeys(names_of(entity)))


def _words(strings):
    return {w for s in strings for w in re.findall(r"[a-z]+", fold(s))}


def betrays(value_strings, entity):
    """Whether a value's words give away the entity's name or demonym (see _GENERIC)."""
    facts = entity["facts"]
    own = _words([*names_of(entity), facts.get("demonym") or "", *facts.get("demonym_aliases", [])])
    for word in _words(value_strings) - _GENERIC:
        for other in own - _GENERIC:
            if word == other or (len(word) >= 4 and len(other) >= 4 and word[:4] == other[:4]):
                return True
    return False


# ----------------------------------------------------------------------------------------------
# Bridge questions
# ----------------------------------------------------------------------------------------------
def bridge_values(entity, relation):
    """{key: (stated text, strings that name it)} of one country for a bridge relation.

    Languages count whatever their role (official or working), so that uniqueness is strict.
    """
    f = entity["facts"]
    if relation == "currency":
        return {c["code"]: (c["name"], [c["name"], c["code"], *c["aliases"]]) for c in f["currencies"]}
    if relation == "language":
        return {l["name"]: (l["name"], [l["name"], *l["aliases"]]) for l in f["languages"]}
    region = "the Caribbean" if f["region"] == "Caribbean" else f["region"]
    return {f["region"]: (region, [f["region"]])}


def _slug(text):
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "_", plain).strip("_")


def bridge_questions(index):
    countries = [e for e in index.entities.values() if e["domain"] == "country"]
    # How many countries of the whole knowledge base hold each value: a value only one country
    # holds names the answer by itself, and that country's passage would answer alone.
    holders_in_kb = {relation: collections.Counter(k for e in countries for k in bridge_values(e, relation))
                     for relation in RELATIONS["bridge"]}
    out = []
    for x in sorted(countries, key=lambda e: e["id"]):
        neighbours = [index.entities[n] for n in x["facts"]["neighbours"]]
        if len(neighbours) < 2:  # a single neighbour answers from the neighbours passage alone
            continue
        border_sentence = first_sentence(index.text(f"{x['id']}/neighbours"))
        for y in neighbours:  # the passage must list every neighbour in its first sentence
            if not mentions(border_sentence, [y["name"]]):
                raise BuildError(f"{x['id']}/neighbours does not list {y['name']} in its first sentence")
        for relation in RELATIONS["bridge"]:
            holders = collections.defaultdict(list)
            for y in neighbours:
                for key in bridge_values(y, relation):
                    holders[key].append(y)
            for key in sorted(holders):
                if len(holders[key]) != 1 or holders_in_kb[relation][key] < 2:
                    continue
                y = holders[key][0]
                record = _bridge_record(index, x, y, relation, key, neighbours)
                if record:
                    out.append(record)
    return out


def _bridge_record(index, x, y, relation, key, neighbours):
    stated, strings = bridge_values(y, relation)[key]
    aspect = ASPECT[relation]
    if relation == "language" and y["facts"]["language_role"] != "official":
        return None  # its passage calls the language a working language, not an official one
    if betrays([stated, *strings] if relation != "currency" else [stated, *strings[2:]], y):
        return None
    # Passage-level uniqueness: the value is stated in the first sentence (the one about the
    # country itself) of Y's passage and of no other neighbour's.
    for z in neighbours:
        own = first_sentence(index.text(f"{z['id']}/{aspect}"))
        if mentions(own, strings) != (z["id"] == y["id"]):
            if z["id"] == y["id"]:
                raise BuildError(f"{y['id']}/{aspect} does not state {stated!r} in its first sentence")
            return None
    if stated not in index.text(f"{y['id']}/{aspect}"):
        raise BuildError(f"{y['id']}/{aspect} does not contain {stated!r} verbatim")
    # No single passage names the subject, the answer and the value together.
    if index.naming_entity(x["id"]) & index.naming_entity(y["id"]) & index.naming(strings):
        return None
    split = x["split"]
    if split == "train" and y["split"] != "train":
        return None  # no dev or test entity is the answer of a training question
    qid = f"bridge/{relation}/{x['id']}/{_slug(key)}"
    rng = random.Random(f"{SEED}:{qid}")
    number = rng.randrange(len(BRIDGE_TEMPLATES[relation]))
    template = BRIDGE_TEMPLATES[relation][number]
    question = template.format(subject=mid(x), value=stated, Value=stated[:1].upper() + stated[1:])
    if mentions(question, names_of(y)):
        return None  # "Which country bordering South Sudan ...?" -> Sudan: the answer is in the question
    return {
        "id": qid, "kind": "bridge", "relation": relation, "question": question,
        "answers": answers_of(y), "answer_entity_id": y["id"],
        "entity_ids": [x["id"], y["id"]], "mentioned_entity_ids": [x["id"]],
        "passage_ids": [f"{x['id']}/neighbours", f"{y['id']}/{aspect}"],
        "evidence": [{"passage_id": f"{x['id']}/neighbours", "text": y["name"]},
                     {"passage_id": f"{y['id']}/{aspect}", "text": stated}],
        "options": [n["name"] for n in neighbours], "value": stated, "values": None,
        "template": number, "split": split,
    }


# ----------------------------------------------------------------------------------------------
# Chain questions: the country is named only by its capital
# ----------------------------------------------------------------------------------------------
def capitals_of(entity):
    return [entity["facts"]["capital"], *entity["facts"]["capital_aliases"]]


def chain_questions(index):
    countries = sorted((e for e in index.entities.values() if e["domain"] == "country"),
                       key=lambda e: e["id"])
    owners = collections.defaultdict(set)
    for e in countries:
        for name in capitals_of(e):
            owners[fold(name)].add(e["id"])
    out = []
    for y in countries:
        f = y["facts"]
        capitals = capitals_of(y)
        if ("capital" in y["skip_relations"] or f["capital_note"]  # disputed, or several capitals
                or any(len(owners[fold(c)]) != 1 for c in capitals)  # a name two countries share
                or betrays(capitals, y)):  # "Mexico City", "Luxembourg", "Algiers"
            continue
        capital_passage = f"{y['id']}/capital"
        own = first_sentence(index.text(capital_passage))
        if f["capital"] not in own or not mentions(own, [y["name"]]):
            raise BuildError(f"{capital_passage} does not say that {f['capital']} is the capital of {y['name']}")
        for relation in RELATIONS["chain"]:
            record = _chain_record(index, y, relation, capitals)
            if record:
                out.append(record)
    return out


def _chain_record(index, y, relation, capitals):
    f = y["facts"]
    answers = y["answers"].get(relation)
    if not answers or relation in y["skip_relations"]:
        return None
    if relation == "currency" and len(f["currencies"]) != 1:
        return None  # two currencies: no single answer
    if relation == "language" and (len(f["languages"]) != 1 or f["language_role"] != "official"):
        return None
    if betrays(answers, y):
        return None  # "Mozambique metical", "Turkmen": the capital passage names the country,
        # and the country's name gives the answer away
    stated = bridge_values(y, relation)
    (stated_text, _), = stated.values()
    aspect = ASPECT[relation]
    pid = f"{y['id']}/{aspect}"
    own = first_sentence(index.text(pid))
    if stated_text not in own or not mentions(own, [y["name"]]):
        raise BuildError(f"{pid} does not state {stated_text!r} of {y['name']} in its first sentence")
    # No single passage names the capital and states the answer (a capital passage that says
    # "Elsewhere in Western Africa, ..." names the region: dropped).
    if index.naming(capitals) & index.naming(answers):
        return None
    qid = f"chain/{relation}/{y['id']}"
    rng = random.Random(f"{SEED}:{qid}")
    number = rng.randrange(len(CHAIN_TEMPLATES[relation]))
    capital = f["capital"]
    question = CHAIN_TEMPLATES[relation][number].format(capital=capital,
                                                        Capital=capital[:1].upper() + capital[1:])
    if mentions(question, answers):
        return None  # the answer is in the question
    return {
        "id": qid, "kind": "chain", "relation": relation, "question": question,
        "answers": list(answers), "answer_entity_id": None,
        "entity_ids": [y["id"]], "mentioned_entity_ids": [y["id"]],
        "passage_ids": [f"{y['id']}/capital", pid],
        "evidence": [{"passage_id": f"{y['id']}/capital", "text": capital},
                     {"passage_id": pid, "text": stated_text}],
        "options": None, "value": capital, "values": None,
        "template": number, "split": y["split"],
    }


# ----------------------------------------------------------------------------------------------
# Comparison questions
# ----------------------------------------------------------------------------------------------
def stated_value(index, entity, relation):
    """(number, the text stating it verbatim) from the entity's passage, or None when the
    passage does not give a plain comparable value (a density with a caveat)."""
    f = entity["facts"]
    pid = f"{entity['id']}/{ASPECT[relation]}"
    if relation == "atomic_number":
        text = index.text(pid)
        found = re.findall(r"atomic number (\d+)", text)
        if found != [str(f["number"])]:
            raise BuildError(f"{pid} does not state atomic number {f['number']} once: {found}")
        return f["number"], f"atomic number {f['number']}"
    if relation == "density":
        if not f.get("density") or f["density_prefix"]:
            return None  # none known, or "about"
        suffix = f["density_suffix"]
        room = _ROOM_TEMPERATURE.fullmatch(suffix)
        if suffix and not (room and 15 <= float(room.group(1)) <= 30):
            return None  # calculated, or a gas measured as a liquid at its boiling point
        evidence = f"{f['density']} g/cm3{suffix}"
        own = first_sentence(index.text(pid))
        if evidence not in own or not mentions(own, names_of(entity)):
            raise BuildError(f"{pid} does not state {evidence!r} of {entity['name']} in its first sentence")
        return float(f["density"]), evidence
    text = index.text(pid)  # area
    found = re.findall(r"(\d[\d,]*(?:\.\d+)?) square kilometres", text)
    if len(found) != 1:
        raise BuildError(f"{pid} should state one area, found {found}")
    value = float(found[0].replace(",", ""))
    if abs(value - f["area_km2"]) > 0.01 * f["area_km2"]:
        raise BuildError(f"{pid} states {found[0]} km², the record {f['area_km2']}")
    return value, f"{found[0]} square kilometres"


def comparison_questions(index):
    out = []
    for relation in RELATIONS["comparison"]:
        domain = "country" if relation == "area" else "element"
        values = {}
        for e in sorted(index.entities.values(), key=lambda e: e["id"]):
            if e["domain"] == domain:
                stated = stated_value(index, e, relation)
                if stated:
                    values[e["id"]] = stated
        for split in SPLITS:
            ids = sorted(i for i in values if index.entities[i]["split"] == split)
            pairs = []
            for k, a in enumerate(ids):
                for b in ids[k + 1:]:
                    low, high = sorted((values[a][0], values[b][0]))
                    if low == high or high < MIN_RATIO[relation] * low:
                        continue
                    if index.naming_entity(a) & index.naming_entity(b):
                        continue
                    pairs.append((a, b))
            ranked = sorted(pairs, key=lambda p: _rank(f"comparison/{relation}/{p[0]}/{p[1]}"))
            for a, b in ranked[:COMPARISON_CAP[split]]:
                out.append(_comparison_record(index, relation, a, b, values, split))
    return out


def _rank(qid):
    return hashlib.sha256(f"{SEED}:{qid}".encode()).hexdigest()


def _comparison_record(index, relation, a, b, values, split):
    qid = f"comparison/{relation}/{a}/{b}"
    rng = random.Random(f"{SEED}:{qid}")
    number = rng.randrange(len(COMPARISON_TEMPLATES[relation]))
    template, direction = COMPARISON_TEMPLATES[relation][number]
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    ea, eb = index.entities[first], index.entities[second]
    larger = first if values[first][0] > values[second][0] else second
    answer = larger if direction == "more" else (second if larger == first else first)
    aspect = ASPECT[relation]
    return {
        "id": qid, "kind": "comparison", "relation": relation,
        "question": template.format(a=mid(ea), b=mid(eb)),
        "answers": answers_of(index.entities[answer]), "answer_entity_id": answer,
        "entity_ids": [first, second], "mentioned_entity_ids": [first, second],
        "passage_ids": [f"{first}/{aspect}", f"{second}/{aspect}"],
        "evidence": [{"passage_id": f"{i}/{aspect}", "text": values[i][1]} for i in (first, second)],
        "options": [ea["name"], eb["name"]], "value": None,
        "values": {first: values[first][0], second: values[second][0]}, "direction": direction,
        "template": number, "split": split,
    }


# ----------------------------------------------------------------------------------------------
# Building and writing
# ----------------------------------------------------------------------------------------------
def build(kb_dir=None):
    """Every question record, in file order (split, then id)."""
    index = Index(data.load_entities(data_dir=kb_dir), data.load_passages(data_dir=kb_dir))
    records = bridge_questions(index) + chain_questions(index) + comparison_questions(index)
    for r in records:
        r.setdefault("direction", None)
    order = {s: k for k, s in enumerate(SPLITS)}
    records.sort(key=lambda r: (order[r["split"]], r["id"]))
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise BuildError("question ids repeat")
    return records


def counts(records):
    """{split: {"kind/relation": n}} of ``records``."""
    table = {s: {} for s in SPLITS}
    for r in records:
        key = f"{r['kind']}/{r['relation']}"
        table[r["split"]][key] = table[r["split"]].get(key, 0) + 1
    return {s: dict(sorted(t.items())) for s, t in table.items()}


def write(records, out, kb_dir=None):
    """Write the questions and their manifest into ``out``; returns {file name: bytes}."""
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    manifest = {"file": OUT_NAME, "sha256": hashlib.sha256(body).hexdigest(), "count": len(records),
                "counts": counts(records), "seed": SEED,
                "built_from": kb_checksums(kb_folder(kb_dir)),
                "command": "python data/build_two_fact.py"}
    files = {OUT_NAME: body,
             MANIFEST_NAME: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
    return files


def stats(records):
    lines = ["| split | kind | relation | questions | guessing baseline |",
             "| --- | --- | --- | ---: | ---: |"]
    for split in SPLITS:
        groups = collections.defaultdict(list)
        for r in records:
            if r["split"] == split:
                groups[(r["kind"], r["relation"])].append(r)
        for (kind, relation), rs in sorted(groups.items()):
            lines.append(f"| {split} | {kind} | {relation} | {len(rs)} | {guessing_baseline(rs):.3f} |")
        every = [r for rs in groups.values() for r in rs]
        lines.append(f"| {split} | **all** | | {len(every)} | {guessing_baseline(every):.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=None,
                        help="the knowledge base to read (default: RAGTUTOR_DATA_DIR or data/kb)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the --kb folder)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="rebuild in a temporary folder and compare")
    mode.add_argument("--stats", action="store_true", help="print the counts (markdown)")
    args = parser.parse_args(argv)
    kb = kb_folder(args.kb)
    out = args.out or kb
    records = build(kb)
    if args.stats:
        print(stats(records))
        return 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = write(records, tmp, kb)
        differ = [n for n, b in fresh.items() if not (out / n).is_file() or (out / n).read_bytes() != b]
        if differ:
            print(f"{out} differs from a fresh build in: {', '.join(differ)}; "
                  "run `python data/build_two_fact.py` to rebuild", file=sys.stderr)
            return 1
        print(f"{out}: {OUT_NAME} and {MANIFEST_NAME} are identical to a fresh build")
        return 0
    write(records, out, kb)
    print(f"wrote {len(records)} two-fact questions to {out / OUT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
