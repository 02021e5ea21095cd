"""Two-fact questions (data/build_two_fact.py, ragtutor.multihop): questions whose answer needs
facts from two different passages, and no single passage of the knowledge base states them all.

The checks here read the passages and entity records themselves, with their own simple string
matching, rather than the builder's functions: a builder bug is not repeated by its test.
"""
import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from ragtutor import data, multihop

ROOT = Path(__file__).resolve().parent.parent
KB = data.DATA_DIR
QUESTIONS = KB / multihop.QUESTIONS_FILE
MANIFEST = KB / multihop.MANIFEST_FILE
ASPECT = {("bridge", "currency"): "economy", ("bridge", "language"): "people",
          ("bridge", "region"): "geography", ("chain", "currency"): "economy",
          ("chain", "language"): "people", ("chain", "region"): "geography",
          ("comparison", "area"): "geography", ("comparison", "density"): "physical",
          ("comparison", "atomic_number"): "overview"}


def fold(text):
    """Accents stripped, case folded: "Côte d'Ivoire" -> "cote d'ivoire"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def names(text, strings):
    """Whether ``text`` contains any of ``strings`` as whole words (accents and case folded)."""
    folded = fold(text)
    return any(re.search(r"(?<!\w)" + re.escape(fold(s)) + r"(?!\w)", folded) for s in strings if s)


def first_sentence(text):
    return re.split(r"(?<=[.!?])(?<!St\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


@pytest.fixture(scope="module")
def kb():
    passages = {p["id"]: p for p in data.load_passages()}
    entities = {e["id"]: e for e in data.load_entities()}
    return passages, entities


@pytest.fixture(scope="module")
def questions():
    return [q for split in data.SPLITS for q in multihop.load_two_fact_questions(split)]


@pytest.fixture(scope="module")
def naming(kb):
    """naming(strings) -> ids of the passages that name any of ``strings`` (cached)."""
    passages, _ = kb
    folded = {pid: fold(p["text"]) for pid, p in passages.items()}
    cache = {}

    def lookup(strings):
        key = tuple(sorted({fold(s) for s in strings if s}))
        if key not in cache:
            pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, key)) + r")(?!\w)")
            cache[key] = {pid for pid, text in folded.items()
                          if any(k in text for k in key) and pattern.search(text)}
        return cache[key]
    return lookup


def entity_names(entity):
    return [entity["name"], *entity["aliases"]]


def value_strings(entity, relation, value):
    """Every string that names a bridge value (a currency's name, code and aliases...) of ``entity``."""
    f = entity["facts"]
    if relation == "currency":
        return next([c["name"], c["code"], *c["aliases"]] for c in f["currencies"] if c["name"] == value)
    if relation == "language":
        return next([l["name"], *l["aliases"]] for l in f["languages"] if l["name"] == value)
    assert value.removeprefix("the ") == f["region"]
    return [f["region"]]


def holds(entity, relation, value):
    f = entity["facts"]
    if relation == "currency":
        return any(c["name"] == value for c in f["currencies"])
    if relation == "language":
        return any(l["name"] == value for l in f["languages"])
    return f["region"] == value.removeprefix("the ")


# -- the file, its manifest, the builder ---------------------------------------------------------

def test_file_matches_its_manifest_and_the_knowledge_base_it_was_built_from():
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    body = QUESTIONS.read_bytes()
    assert hashlib.sha256(body).hexdigest() == manifest["sha256"]
    records = [json.loads(line) for line in body.decode("utf-8").splitlines()]
    assert len(records) == manifest["count"]
    counted = collections.Counter((r["split"], f"{r['kind']}/{r['relation']}") for r in records)
    assert {(s, k): n for s, table in manifest["counts"].items() for k, n in table.items()} == counted
    kb_listed = dict(reversed(line.split("  ", 1)) for line in
                     (KB / data.MANIFEST).read_text(encoding="utf-8").splitlines())
    assert manifest["built_from"] == {n: kb_listed[n] for n in ("entities.jsonl", "passages.jsonl")}
    assert multihop.verify_two_fact_manifest()["sha256"] == manifest["sha256"]
    # Stable order: by split, then id; one record per line, keys sorted.
    order = [(data.SPLITS.index(r["split"]), r["id"]) for r in records]
    assert order == sorted(order)
    assert body.decode("utf-8").splitlines()[0] == json.dumps(records[0], ensure_ascii=False, sort_keys=True)


def test_the_builder_is_deterministic_and_reproduces_the_committed_files(tmp_path):
    """Two builds in fresh processes with different hash seeds give the committed bytes."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"build{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "RAGTUTOR_DATA_DIR": str(KB)}
        subprocess.run([sys.executable, str(ROOT / "data" / "build_two_fact.py"), "--out", str(out)],
                       check=True, cwd=ROOT, env=env, capture_output=True, timeout=120)
        outputs.append({name: (out / name).read_bytes()
                        for name in (multihop.QUESTIONS_FILE, multihop.MANIFEST_FILE)})
    assert outputs[0] == outputs[1]
    assert outputs[0][multihop.QUESTIONS_FILE] == QUESTIONS.read_bytes()
    assert outputs[0][multihop.MANIFEST_FILE] == MANIFEST.read_bytes()
    # The knowledge base itself was only read.
    assert data.verify_manifest()


# -- every question: needed passages, facts, answers ---------------------------------------------

def test_every_needed_passage_exists_and_states_its_fact(kb, questions):
    passages, _ = kb
    for q in questions:
        ids = q["passage_ids"]
        assert len(ids) >= 2 and len(set(ids)) == len(ids), q["id"]
        assert [e["passage_id"] for e in q["evidence"]] == ids, q["id"]
        for pid, evidence in zip(ids, q["evidence"]):
            assert pid in passages, (q["id"], pid)
            assert evidence["text"] in passages[pid]["text"], (q["id"], pid, evidence["text"])
        entities = q["entity_ids"]
        aspect = ASPECT[(q["kind"], q["relation"])]
        if q["kind"] == "bridge":
            x, y = entities
            assert ids == [f"{x}/neighbours", f"{y}/{aspect}"]
            # X's border list (the first sentence) names the answer; Y's own sentence the value.
            assert names(first_sentence(passages[ids[0]]["text"]), [q["answers"][0]]), q["id"]
            assert q["value"] in first_sentence(passages[ids[1]]["text"]), q["id"]
        elif q["kind"] == "chain":
            (y,) = entities
            assert ids == [f"{y}/capital", f"{y}/{aspect}"]
            assert q["value"] in first_sentence(passages[ids[0]]["text"]), q["id"]
            assert names(first_sentence(passages[ids[1]]["text"]), q["answers"]), q["id"]
        else:
            assert ids == [f"{e}/{aspect}" for e in entities]
            for pid, entity_id in zip(ids, entities):
                stated = q["evidence"][ids.index(pid)]["text"]
                number = float(re.match(r"(?:atomic number )?([\d,.]+)", stated).group(1).replace(",", ""))
                assert number == q["values"][entity_id], (q["id"], stated)


def test_answers_follow_from_the_stated_facts_and_are_unique(kb, questions):
    _, entities = kb
    countries = [e for e in entities.values() if e["domain"] == "country"]
    for q in questions:
        if q["kind"] == "bridge":
            x, y = (entities[i] for i in q["entity_ids"])
            neighbours = [entities[n] for n in x["facts"]["neighbours"]]
            assert len(neighbours) >= 2, q["id"]
            assert [n["id"] for n in neighbours if holds(n, q["relation"], q["value"])] == [y["id"]], q["id"]
            assert q["options"] == [n["name"] for n in neighbours]
            assert q["answers"][0] == y["name"] and q["answer_entity_id"] == y["id"]
            if q["relation"] == "language":
                assert y["facts"]["language_role"] == "official", q["id"]
        elif q["kind"] == "chain":
            (y,) = (entities[i] for i in q["entity_ids"])
            assert q["value"] == y["facts"]["capital"]
            owners = [c["id"] for c in countries if fold(q["value"]) in
                      {fold(n) for n in (c["facts"]["capital"], *c["facts"]["capital_aliases"])}]
            assert owners == [y["id"]], q["id"]
            assert q["answers"] == y["answers"][q["relation"]]
            assert not y["facts"]["capital_note"] and "capital" not in y["skip_relations"]
            if q["relation"] == "currency":
                assert len(y["facts"]["currencies"]) == 1
            if q["relation"] == "language":
                assert len(y["facts"]["languages"]) == 1
        else:
            a, b = q["entity_ids"]
            va, vb = q["values"][a], q["values"][b]
            larger, smaller = (a, b) if va > vb else (b, a)
            assert max(va, vb) >= {"area": 1.1, "density": 1.05, "atomic_number": 1}[q["relation"]] * min(va, vb)
            assert va != vb
            assert q["answer_entity_id"] == (larger if q["direction"] == "more" else smaller), q["id"]
            assert q["options"] == [entities[a]["name"], entities[b]["name"]]
            answer = entities[q["answer_entity_id"]]
            assert q["answers"][0] == answer["name"]
            for entity_id in (a, b):  # the stated value is the entity's record, rounded
                f = entities[entity_id]["facts"]
                true = {"area": f.get("area_km2"), "density": float(f.get("density") or 0),
                        "atomic_number": f.get("number")}[q["relation"]]
                assert abs(q["values"][entity_id] - true) <= 0.01 * true, (q["id"], entity_id)
                if q["relation"] == "density":  # room temperature, no "about", no liquid gas
                    assert not f["density_prefix"] and "liquid" not in f["density_suffix"]
                    assert "calculated" not in f["density_suffix"]


def test_no_single_passage_suffices(kb, questions, naming):
    """What one passage would need to state, for each kind, and that no passage does:

    bridge      the subject X, the answer Y and the value together (any of their names); and the
                value is held by two or more countries, so that Y's own passage alone (Y uses the
                euro) leaves the question open
    chain       the capital and the answer together
    comparison  both entities together
    """
    _, entities = kb
    countries = [e for e in entities.values() if e["domain"] == "country"]
    for q in questions:
        if q["kind"] == "bridge":
            x, y = (entities[i] for i in q["entity_ids"])
            strings = value_strings(y, q["relation"], q["value"])
            alone = naming(entity_names(x)) & naming(entity_names(y)) & naming(strings)
            assert sum(holds(c, q["relation"], q["value"]) for c in countries) >= 2, q["id"]
        elif q["kind"] == "chain":
            (y,) = (entities[i] for i in q["entity_ids"])
            alone = naming([y["facts"]["capital"], *y["facts"]["capital_aliases"]]) & naming(q["answers"])
        else:
            a, b = (entities[i] for i in q["entity_ids"])
            alone = naming(entity_names(a)) & naming(entity_names(b))
        assert not alone, (q["id"], sorted(alone))


def _stems(strings):
    return {w for s in strings for w in re.findall(r"[a-z]+", fold(s)) if len(w) >= 4}


def test_the_question_does_not_give_its_answer_away(kb, questions):
    """Neither the answer nor a word sharing its first four letters with the answer entity's name
    or demonym is in a bridge or chain question ("Swiss franc", "Greek", "Mozambique metical")."""
    _, entities = kb
    generic = {"dollar", "franc", "pound", "peso", "rupee", "dinar", "rial", "riyal", "dirham",
               "shilling", "mark", "lira", "krona", "krone", "real"}
    for q in questions:
        if q["kind"] == "comparison":
            continue
        entity = entities[q["entity_ids"][-1]]
        own = _stems([*entity_names(entity), entity["facts"].get("demonym") or "",
                      *entity["facts"].get("demonym_aliases", [])]) - generic
        asked = _stems([q["value"]] + (q["answers"] if q["kind"] == "chain" else [])) - generic
        assert not {w[:4] for w in asked} & {w[:4] for w in own}, q["id"]
        if q["kind"] == "bridge":
            assert not names(q["question"], q["answers"]), q["id"]


# -- phrasing, balance, splits ------------------------------------------------------------------

def test_questions_are_phrased_with_two_or_three_templates_and_name_their_entities(kb, questions):
    _, entities = kb
    used = collections.defaultdict(set)
    texts = collections.defaultdict(set)
    for q in questions:
        used[(q["kind"], q["relation"])].add(q["template"])
        masked = q["question"]
        if q["kind"] == "comparison":
            for e in q["entity_ids"]:
                assert names(q["question"], [entities[e]["name"]]), q["id"]
                masked = re.sub(re.escape(entities[e]["name"]), "{}", masked, flags=re.I)
        else:
            assert names(q["question"], [q["value"]]), q["id"]
            masked = masked.replace(q["value"], "{}").replace(q["value"][:1].upper() + q["value"][1:], "{}")
            if q["kind"] == "bridge":
                assert names(q["question"], [entities[q["entity_ids"][0]]["name"]]), q["id"]
                masked = masked.replace(entities[q["entity_ids"][0]]["name"], "{}")
        texts[(q["kind"], q["relation"], q["template"])].add(re.sub(r"\bthe \{\}", "{}", masked))
    assert set(used) == set(ASPECT)
    for key, templates in used.items():
        assert templates == set(range(len(templates))) and 2 <= len(templates) <= 3, key
    for key, masked in texts.items():  # each template is one wording once the names are masked
        assert len(masked) == 1, (key, sorted(masked)[:3])


def test_comparison_answers_are_balanced_between_first_and_second(questions):
    for split in data.SPLITS:
        qs = [q for q in questions if q["kind"] == "comparison" and q["split"] == split]
        first = sum(q["answer_entity_id"] == q["entity_ids"][0] for q in qs) / len(qs)
        assert 0.4 <= first <= 0.6, (split, first)
        assert multihop.guessing_baseline(qs) == pytest.approx(0.5)


def test_splits_are_consistent(kb, questions):
    _, entities = kb
    for split in data.SPLITS:
        loaded = multihop.load_two_fact_questions(split)
        assert loaded and {q["split"] for q in loaded} == {split}
        for kind in multihop.KINDS:
            assert [q for q in loaded if q["kind"] == kind] == multihop.load_two_fact_questions(split, kind)
    ids = [q["id"] for q in questions]
    assert len(ids) == len(set(ids))
    for q in questions:
        split_of = {i: entities[i]["split"] for i in q["entity_ids"]}
        # The question names only entities of its own split (a test question never names only
        # train entities) ...
        assert {split_of[i] for i in q["mentioned_entity_ids"]} == {q["split"]}, q["id"]
        # ... and a training question involves no dev or test entity, not even as its answer.
        if q["split"] == "train":
            assert set(split_of.values()) == {"train"}, q["id"]
        if q["kind"] == "comparison":
            assert q["mentioned_entity_ids"] == q["entity_ids"]
        else:
            assert q["mentioned_entity_ids"] == q["entity_ids"][:1]
    counts = collections.Counter(q["split"] for q in questions)
    assert counts["dev"] >= 150 and counts["test"] >= 150 and counts["train"] >= 1000, counts
    for split in ("dev", "test"):  # every kind is measured on dev and on test
        assert {q["kind"] for q in questions if q["split"] == split} == set(multihop.KINDS)


# -- the loader's errors -----------------------------------------------------------------------

@pytest.fixture
def kb_copy(tmp_path):
    """The two-fact files and the knowledge base's manifest, in a folder a test may damage."""
    for name in (multihop.QUESTIONS_FILE, multihop.MANIFEST_FILE, data.MANIFEST):
        shutil.copy(KB / name, tmp_path / name)
    return tmp_path


def test_a_bad_split_or_kind_is_a_value_error():
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*train, dev, test"):
        multihop.load_two_fact_questions("validation")
    with pytest.raises(ValueError, match=r"unknown kind 'multi'.*bridge, chain, comparison"):
        multihop.load_two_fact_questions("dev", kind="multi")


def test_a_missing_file_names_the_command_that_builds_it(kb_copy, monkeypatch):
    (kb_copy / multihop.QUESTIONS_FILE).unlink()
    with pytest.raises(data.KnowledgeBaseError,
                       match=r"two_fact_questions\.jsonl.*missing.*python data/build_two_fact\.py"):
        multihop.load_two_fact_questions("test", data_dir=kb_copy)
    monkeypatch.setenv("RAGTUTOR_DATA_DIR", str(kb_copy))  # the environment variable is honoured
    with pytest.raises(data.KnowledgeBaseError, match=r"missing"):
        multihop.load_two_fact_questions("test")


def test_a_missing_manifest_is_reported(kb_copy):
    (kb_copy / multihop.MANIFEST_FILE).unlink()
    with pytest.raises(data.KnowledgeBaseError, match=r"two_fact_manifest\.json.*missing.*build_two_fact"):
        multihop.load_two_fact_questions("dev", data_dir=kb_copy)


def test_one_changed_byte_fails_the_checksum(kb_copy):
    path = kb_copy / multihop.QUESTIONS_FILE
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(data.KnowledgeBaseError, match=r"two_fact_questions\.jsonl.*sha256.*build_two_fact"):
        multihop.load_two_fact_questions("dev", data_dir=kb_copy)


def test_questions_built_from_another_knowledge_base_are_refused(kb_copy):
    manifest = kb_copy / data.MANIFEST
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines = [("0" * 64 + "  passages.jsonl") if line.endswith("  passages.jsonl") else line for line in lines]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(data.KnowledgeBaseError, match=r"passages\.jsonl.*rebuilt since.*build_two_fact"):
        multihop.load_two_fact_questions("dev", data_dir=kb_copy)


def test_the_loader_returns_fresh_copies():
    first = multihop.load_two_fact_questions("dev")
    first[0]["answers"].append("changed")
    assert "changed" not in multihop.load_two_fact_questions("dev")[0]["answers"]


def test_reader_inputs_hold_the_gold_passages_and_the_retrievers_best_others(kb):
    from ragtutor.sparse import BM25Retriever
    passages = list(kb[0].values())
    bm25 = BM25Retriever().fit(passages)
    questions = multihop.load_two_fact_questions("dev")[:30]
    rows = multihop.reader_inputs(questions, passages, bm25, n_distractors=2, seed=3)
    _, ranked = bm25.search([q["question"] for q in questions], 4)
    orders = set()
    for q, row, best in zip(questions, rows, ranked):
        ids = [p["id"] for p in row["passages"]]
        assert len(ids) == 4 and len(set(ids)) == 4
        assert set(q["passage_ids"]) <= set(ids)
        assert set(ids) - set(q["passage_ids"]) == set(
            [i for i in best if i not in q["passage_ids"]][:2])
        assert row["question"] == q["question"] and row["answers"] == q["answers"]
        orders.add(tuple(ids.index(i) for i in q["passage_ids"]))
    assert len(orders) > 3  # the gold passages' positions vary
    again = multihop.reader_inputs(questions, passages, bm25, n_distractors=2, seed=3)
    assert [[p["id"] for p in r["passages"]] for r in again] == \
        [[p["id"] for p in r["passages"]] for r in rows]
    with pytest.raises(ValueError, match="n_distractors must be a non-negative int"):
        multihop.reader_inputs(questions, passages, bm25, n_distractors=-1)
    with pytest.raises(ValueError, match="questions is empty"):
        multihop.reader_inputs([], passages, bm25)
    with pytest.raises(KeyError, match="needs passages that are not given"):
        multihop.reader_inputs(questions, passages[:10], bm25)
