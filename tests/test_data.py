"""The knowledge base: reproducible build, manifest, contents, loaders and counterfactual examples."""
import collections
import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import datasets
import pytest

from ragtutor import counterfactual, data, templates
from ragtutor.metrics import normalize_answer
from ragtutor.text import content_words, normalize_text

ROOT = Path(__file__).resolve().parent.parent
FILES = ("passages.jsonl", "questions_train.jsonl", "questions_dev.jsonl", "questions_test.jsonl",
         "questions_dev_new.jsonl", "questions_test_new.jsonl", "questions_dev_typed.jsonl",
         "entities.jsonl")


def _builder():
    spec = importlib.util.spec_from_file_location("build_kb", ROOT / "data" / "build_kb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """A fresh build into a temporary folder."""
    out = tmp_path_factory.mktemp("kb")
    builder = _builder()
    builder.write(builder.build(), out)
    return out


@pytest.fixture(scope="module")
def kb_files():
    passages = data.load_passages()
    questions = [q for split in data.SPLITS for q in data.load_questions(split)]
    entities = data.load_entities()
    return passages, questions, entities


@pytest.fixture
def kb_copy(tmp_path):
    """A copy of the committed files that a test may damage."""
    for name in (*FILES, "MANIFEST.sha256"):
        shutil.copy(data.DATA_DIR / name, tmp_path / name)
    return tmp_path


def _fold(text):
    return normalize_answer(normalize_text(text))


# -- reproducibility and the manifest -----------------------------------------------------------

def test_rebuild_gives_the_committed_bytes(rebuilt):
    for name in (*FILES, "MANIFEST.sha256"):
        assert (rebuilt / name).read_bytes() == (data.DATA_DIR / name).read_bytes(), name


def test_manifest_verifies_every_file():
    assert data.verify_manifest() == sorted(FILES)


def test_one_changed_byte_fails_the_manifest_check(kb_copy):
    path = kb_copy / "questions_test.jsonl"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(data.KnowledgeBaseError, match=r"questions_test\.jsonl.*sha256.*build_kb\.py"):
        data.verify_manifest(kb_copy)
    with pytest.raises(data.KnowledgeBaseError, match=r"questions_test\.jsonl"):
        data.load_questions("test", data_dir=kb_copy)


def test_environment_variable_selects_the_folder(kb_copy, monkeypatch):
    (kb_copy / "passages.jsonl").write_bytes(b"")
    monkeypatch.setenv("RAGTUTOR_DATA_DIR", str(kb_copy))
    with pytest.raises(data.KnowledgeBaseError, match=r"passages\.jsonl"):
        data.load_passages()


def test_missing_file_names_the_file_and_the_rebuild_command(kb_copy):
    (kb_copy / "entities.jsonl").unlink()
    with pytest.raises(data.KnowledgeBaseError, match=r"entities\.jsonl.*missing.*python data/build_kb\.py"):
        data.load_entities(data_dir=kb_copy)


def test_bad_json_and_missing_fields_are_reported_with_the_line(kb_copy):
    bad = {"passages.jsonl": b"{not json\n", "questions_dev.jsonl": b'{"id": "x"}\n'}
    for name, content in bad.items():
        (kb_copy / name).write_bytes(content)
    files = {name: (kb_copy / name).read_bytes() for name in FILES}
    (kb_copy / "MANIFEST.sha256").write_text(
        "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files)))
    with pytest.raises(data.KnowledgeBaseError, match=r"passages\.jsonl: line 1 is not valid JSON"):
        data.load_passages(data_dir=kb_copy)
    with pytest.raises(data.KnowledgeBaseError, match=r"questions_dev\.jsonl: line 1 lacks .*question"):
        data.load_questions("dev", data_dir=kb_copy)


def _corrupt(kb_copy, name, content):
    """Write ``content`` into ``name`` and re-sign the manifest, as a careless rebuild would."""
    (kb_copy / name).write_bytes(content)
    files = {n: (kb_copy / n).read_bytes() for n in FILES}
    (kb_copy / "MANIFEST.sha256").write_text(
        "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files)))


def _question_line(**changes):
    record = {**data.load_questions("dev")[0], **changes}
    return (json.dumps(record) + "\n").encode()


@pytest.mark.parametrize("content, problem", [
    (b'{"id": "a"}\n\xff\xfe\n', r"line 2 is not UTF-8 text"),
    (_question_line(answers="Paris"), r"line 1: answers must be a non-empty list of strings"),
    (_question_line(answers=[]), r"line 1: answers must be a non-empty list"),
    (_question_line(question=""), r"line 1: question must be a non-empty string"),
    (_question_line(passage_id=7), r"line 1: passage_id must be a non-empty string"),
    (_question_line() + _question_line(), r"line 2 repeats the id"),
])
def test_malformed_records_are_reported_with_the_line_even_with_a_re_signed_manifest(
        kb_copy, content, problem):
    _corrupt(kb_copy, "questions_dev.jsonl", content)
    with pytest.raises(data.KnowledgeBaseError, match=r"questions_dev\.jsonl: " + problem):
        data.load_questions("dev", data_dir=kb_copy)


def test_a_duplicate_passage_id_is_reported(kb_copy):
    first = (kb_copy / "passages.jsonl").read_bytes().splitlines(keepends=True)[0]
    _corrupt(kb_copy, "passages.jsonl", first + first)
    with pytest.raises(data.KnowledgeBaseError, match=r"passages\.jsonl: line 2 repeats the id"):
        data.load_passages(data_dir=kb_copy)


# -- contents ----------------------------------------------------------------------------------

def test_minimum_sizes(kb_files):
    passages, questions, entities = kb_files
    by_domain = collections.Counter(e["domain"] for e in entities)
    assert by_domain == {"country": 195, "element": 118}
    assert len(passages) >= 1500
    assert len({q["relation"] for q in questions}) >= 8
    assert sum(q["split"] == "test" for q in questions) >= 300
    sovereign = [row["alpha3"] for row in _builder().read_states()]
    assert len(sovereign) == 195
    assert sorted(sovereign) == sorted(e["id"] for e in entities if e["domain"] == "country")


def test_splits_are_by_entity_and_disjoint(kb_files):
    _, questions, entities = kb_files
    split_of = {e["id"]: e["split"] for e in entities}
    entities_in = collections.defaultdict(set)
    for split in data.SPLITS:
        for q in data.load_questions(split):
            assert q["split"] == split == split_of[q["entity_id"]]
            entities_in[split].add(q["entity_id"])
    assert not entities_in["train"] & entities_in["test"]
    assert not entities_in["train"] & entities_in["dev"]
    assert not entities_in["dev"] & entities_in["test"]
    for domain in ("country", "element"):  # about 70/15/15 within each domain
        counts = collections.Counter(e["split"] for e in entities if e["domain"] == domain)
        assert 0.12 < counts["test"] / sum(counts.values()) < 0.18


def test_every_answer_occurs_in_its_gold_passage(kb_files):
    passages, questions, _ = kb_files
    text = {p["id"]: p["text"] for p in passages}
    for q in questions:
        passage = " " + normalize_answer(text[q["passage_id"]]) + " "
        assert " " + normalize_answer(q["answers"][0]) + " " in passage, q["id"]


def test_mismatch_questions_share_no_content_word_with_their_gold_passage(kb_files):
    passages, questions, _ = kb_files
    text = {p["id"]: p["text"] for p in passages}
    for q in questions:
        own_name = content_words(q["entity"])
        shared = (content_words(q["question"]) - own_name) & content_words(text[q["passage_id"]])
        assert bool(shared) != q["mismatch"], (q["id"], shared)


def test_at_least_15_percent_mismatch_overall_and_per_split(kb_files):
    _, questions, _ = kb_files
    assert sum(q["mismatch"] for q in questions) / len(questions) >= 0.15
    for split in data.SPLITS:
        qs = [q for q in questions if q["split"] == split]
        assert sum(q["mismatch"] for q in qs) / len(qs) >= 0.15, split


def test_passages_fit_the_reader_and_ids_are_unique(kb_files):
    passages, questions, _ = kb_files
    assert len({p["id"] for p in passages}) == len(passages)
    assert len({q["id"] for q in questions}) == len(questions)
    for p in passages:
        assert p["id"] == f"{p['entity_id']}/{p['aspect']}"
        assert 10 <= len(p["text"].split()) <= 75, p["id"]


def test_spot_checked_facts(kb_files):
    _, _, entities = kb_files
    by_id = {e["id"]: e["answers"] for e in entities}
    assert by_id["FRA"]["capital"][0] == "Paris"
    assert by_id["FRA"]["currency"][:2] == ["euro", "EUR"]
    assert by_id["FRA"]["language"][0] == "French"
    assert by_id["KAZ"]["capital"][0] == "Astana"
    assert by_id["HRV"]["currency"][0] == "euro"
    assert by_id["Fe"]["symbol"] == ["Fe"] and by_id["Fe"]["atomic_number"] == ["26"]
    assert "Bogota" in by_id["COL"]["capital"]  # unaccented alias


# -- loaders -----------------------------------------------------------------------------------

@pytest.mark.parametrize("load, fields", [
    (data.load_passages, data.FIELDS["passages"]),
    (lambda **kw: data.load_questions("dev", **kw), data.FIELDS["questions"]),
    (lambda **kw: data.load_questions("test", phrasing="new", **kw), data.FIELDS["questions"]),
    (lambda **kw: data.load_questions("dev", phrasing="typed", **kw), data.FIELDS["questions"]),
    (lambda **kw: data.load_questions("dev", phrasing="all", **kw), data.FIELDS["questions"]),
    (data.load_entities, data.FIELDS["entities"]),
])
def test_loaders_return_lists_and_datasets(load, fields):
    records = load()
    assert isinstance(records, list) and records and set(fields) <= set(records[0])
    records[0]["id"] = "changed"
    assert load()[0]["id"] != "changed"  # the cache hands out copies
    table = load(as_dataset=True)
    assert isinstance(table, datasets.Dataset)
    assert set(fields) <= set(table.column_names) and table.num_rows == len(records)


def test_entity_facts_round_trip_through_the_dataset():
    table = data.load_entities(as_dataset=True)
    assert json.loads(table[0]["answers"]) == data.load_entities()[0]["answers"]


def test_bad_split_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="train, dev, test"):
        data.load_questions("validation")


@pytest.mark.parametrize("split, phrasing, message", [
    ("train", "new", "held out for dev and test"), ("test", "typed", "dev split only"),
    ("dev", "unseen", "seen, new, typed, all")])
def test_a_phrasing_a_split_does_not_have_is_refused_with_the_choices(split, phrasing, message):
    with pytest.raises(ValueError, match=message):
        data.load_questions(split, phrasing=phrasing)


# -- held-out phrasings --------------------------------------------------------------------------

def _keys(questions):
    return {templates.phrasing_key(q["question"], q["entity"]) for q in questions}


def _pool_keys(pool):
    probe = {"name": "Probeland", "domain": "country", "facts": {}}
    return {templates.phrasing_key(templates.phrase(t, probe, form), "Probeland")
            for t in pool for form in templates.SURFACE_FORMS}


def test_no_dev_or_test_phrasing_is_used_in_training():
    """Entity masked, case, punctuation and accents folded: a held-out question's wording occurs
    in no training question, no training template and no template the counterfactual examples
    use; and dev and test hold out different wordings."""
    trained = _keys(data.load_questions("train"))
    for relation in templates.RELATIONS:
        trained |= _pool_keys(templates.seen_phrasings(relation))
        trained |= _pool_keys(templates.PHRASINGS[relation]["train"])
    held = {split: _keys(data.load_questions(split, phrasing="new")) for split in ("dev", "test")}
    for split, keys in held.items():
        assert keys and not keys & trained, (split, sorted(keys & trained)[:5])
    assert not held["dev"] & held["test"]
    dev_pool = set().union(*(_pool_keys(p["dev"]) for p in templates.PHRASINGS.values()))
    test_pool = set().union(*(_pool_keys(p["test"]) for p in templates.PHRASINGS.values()))
    assert not dev_pool & test_pool


def test_new_phrasings_cover_every_seen_fact_of_dev_and_test_once():
    for split in ("dev", "test"):
        seen = {(q["entity_id"], q["relation"]) for q in data.load_questions(split)}
        new = [(q["entity_id"], q["relation"]) for q in data.load_questions(split, phrasing="new")]
        assert len(new) == len(set(new)) and set(new) == seen
        forms = collections.Counter(q["form"] for q in data.load_questions(split, phrasing="new"))
        assert set(forms) == set(templates.SURFACE_FORMS)


def test_new_phrasings_keep_answers_and_gold_passages_of_the_seen_questions():
    for split in ("dev", "test"):
        seen = {(q["entity_id"], q["relation"]): q for q in data.load_questions(split)}
        for q in data.load_questions(split, phrasing="new"):
            twin = seen[(q["entity_id"], q["relation"])]
            assert (q["answers"], q["passage_id"]) == (twin["answers"], twin["passage_id"])


def test_typed_questions_are_about_dev_entities_with_answers_from_the_knowledge_base():
    typed = data.load_questions("dev", phrasing="typed")
    dev = {e["id"]: e for e in data.load_entities() if e["split"] == "dev"}
    assert len(typed) >= 100
    for q in typed:
        assert q["answers"] == dev[q["entity_id"]]["answers"][q["relation"]]
    # Typed by hand, they are not held out from training wordings: "denmark capital" is also
    # how a training phrasing reads. What they add is the spread of how people type.


@pytest.mark.parametrize("template, form, expected", [
    ("{Poss} capital?", "as written", "The Netherlands' capital?"),
    ("capital of {name}", "lower case, no final mark", "capital of the netherlands"),
    ("Which city serves as {poss} capital?", "no final mark", "Which city serves as the Netherlands' capital"),
])
def test_phrase_fills_possessives_and_surface_forms(template, form, expected):
    netherlands = {"name": "Netherlands", "domain": "country", "facts": {"definite": True}}
    assert templates.phrase(template, netherlands, form) == expected


def test_phrasing_key_masks_the_entity_and_folds_case_and_marks():
    assert (templates.phrasing_key("Which city serves as Croatia's capital?", "Croatia")
            == templates.phrasing_key("which city serves as croatia's capital", "Croatia")
            == "which city serves as <e> s capital")


# -- counterfactual examples -------------------------------------------------------------------

@pytest.fixture(scope="module")
def counterfactuals(kb_files):
    _, _, entities = kb_files
    return entities, counterfactual.counterfactual_examples(entities, 1200, seed=7)


def test_counterfactuals_are_deterministic_and_prefix_stable(counterfactuals):
    entities, examples = counterfactuals
    assert counterfactual.counterfactual_examples(entities, 50, seed=7) == examples[:50]
    assert counterfactual.counterfactual_examples(entities, 50, seed=8) != examples[:50]
    fields = set(data.FIELDS["questions"]) | {"title", "text", "aspect"}
    assert all(set(x) == fields for x in examples)


def test_counterfactuals_use_every_name_including_test_entities(counterfactuals):
    entities, examples = counterfactuals
    titles = {x["title"] for x in examples[:len(entities)]}
    assert titles == {e["name"] for e in entities}
    assert any(x["entity_id"] in {e["id"] for e in entities if e["split"] == "test"} for x in examples)


def test_counterfactuals_never_state_a_test_entitys_true_fact(counterfactuals):
    entities, examples = counterfactuals
    by_id = {e["id"]: e for e in entities}
    test = {e["id"] for e in entities if e["split"] == "test"}
    names = sorted({(_fold(n), e["id"]) for e in entities if e["domain"] == "country"
                    for n in [e["name"], *e["aliases"]]}, key=lambda pair: -len(pair[0]))
    for x in examples:
        true = by_id[x["entity_id"]]["answers"].get(x["relation"], [])
        assert not {_fold(a) for a in x["answers"]} & {_fold(a) for a in true}  # the asked fact is false
        assert _fold(x["answers"][0]) in _fold(x["text"])  # and the passage states it
        if x["domain"] != "country":
            continue
        # No test country named in the passage is given any of its true values: blank out every
        # country name (longest first), then look for the named test countries' facts as words.
        text, named = f" {_fold(x['text'])} ", set()
        for name, entity_id in names:
            if f" {name} " in text:
                named.add(entity_id)
                text = re.sub(rf"(?<= ){re.escape(name)}(?= )", "#", text)
        for entity_id in named & test:
            answers = by_id[entity_id]["answers"]
            for relation in ("capital", "continent", "region", "currency", "language", "demonym",
                             "calling_code"):
                for value in answers.get(relation, []):
                    assert f" {_fold(value)} " not in text, (x["id"], entity_id, relation, value)
            for value in answers["internet_domain"]:  # ".in" folds to the word "in": match verbatim
                assert not re.search(re.escape(value) + r"\b", x["text"]), (x["id"], entity_id, value)


def test_check_compares_the_folder_the_loaders_read(kb_copy, monkeypatch, capsys):
    builder = _builder()
    monkeypatch.setenv("RAGTUTOR_DATA_DIR", str(kb_copy))
    assert builder.main(["--check"]) == 0
    assert str(kb_copy) in capsys.readouterr().out
    (kb_copy / "passages.jsonl").write_bytes(b"changed\n")
    assert builder.main(["--check"]) == 1
    assert "passages.jsonl" in capsys.readouterr().err
