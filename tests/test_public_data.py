"""Loaders of public QA and retrieval data (ragtutor.public_data), offline: the rows are written by
the tests in the Hub's schemas, the Hub itself is replaced by a stand-in or must not be asked."""
import json
import math

import datasets
import httpx
import pytest

from ragtutor.public_data import (OFFLINE_VARIABLES, PublicDataUnavailable, evaluate_beir,
                                  load_beir, load_nq_open, load_squad)
from ragtutor.sparse import BM25Retriever


def squad_row(qid, title, context, question, *answers):
    """One row of rajpurkar/squad, answer_start computed from the context as SQuAD's are."""
    return {"id": qid, "title": title, "context": context, "question": question,
            "answers": {"text": list(answers), "answer_start": [context.index(a) for a in answers]}}


PARIS = "Paris is the capital of France."
SEINE = "The Seine flows through Paris."
OXYGEN = "Oxygen has the atomic number 8."
SQUAD = [squad_row("q1", "Paris", PARIS, "What is the capital of France?", "Paris", "Paris"),
         squad_row("q2", "Paris", PARIS, "Which country has Paris as its capital?", "France"),
         squad_row("q3", "Paris", SEINE, "Which river flows through Paris?", "The Seine", "Seine"),
         squad_row("q4", "Oxygen", OXYGEN, "What is the atomic number of oxygen?", "8")]
NQ = [{"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]},
      {"question": "capital of france", "answer": ["Paris"]},
      {"question": "largest planet", "answer": ["Jupiter", "Jupiter"]}]
CORPUS = [{"_id": "d1", "title": "Apples", "text": "apple orchard"},
          {"_id": "d2", "title": "", "text": "banana plantation"},
          {"_id": "d3", "title": "Cherries", "text": "cherry tree"},
          {"_id": "d4", "title": "", "text": "durian market"}]
QUERIES = [{"_id": "1", "title": "", "text": "apple"},           # BeIR's queries carry a title
           {"_id": "2", "title": "", "text": "banana"},
           {"_id": "3", "title": "", "text": "no judgments"},    # not in the test qrels: dropped
           {"_id": "4", "title": "", "text": "durian"}]
QRELS = [{"query-id": 1, "corpus-id": "d1", "score": 1},       # integer ids, as in the Hub's qrels
         {"query-id": 2, "corpus-id": "d2", "score": 1},
         {"query-id": 2, "corpus-id": "d3", "score": 0},
         {"query-id": 4, "corpus-id": "d4", "score": 2}]


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def beir_files(tmp_path):
    return {"corpus": write(tmp_path / "corpus.jsonl", CORPUS),
            "queries": write(tmp_path / "queries.jsonl", QUERIES),
            "qrels": write(tmp_path / "qrels.jsonl", QRELS)}


# -- conversion to the course's records ---------------------------------------------------------
def test_squad_becomes_passages_and_questions(tmp_path):
    passages, questions = load_squad(files=write(tmp_path / "squad.jsonl", SQUAD))
    assert passages == [{"id": "Paris/0", "title": "Paris", "text": PARIS},
                        {"id": "Paris/1", "title": "Paris", "text": SEINE},
                        {"id": "Oxygen/0", "title": "Oxygen", "text": OXYGEN}]
    assert questions[0] == {"id": "q1", "question": "What is the capital of France?",
                            "answers": ["Paris"], "passage_id": "Paris/0"}
    assert [q["passage_id"] for q in questions] == ["Paris/0", "Paris/0", "Paris/1", "Oxygen/0"]
    assert questions[2]["answers"] == ["The Seine", "Seine"]


def test_squad_limit_keeps_the_passages_of_the_kept_questions(tmp_path):
    path = write(tmp_path / "squad.jsonl", SQUAD)
    passages, questions = load_squad(limit=2, files=path)
    assert [q["id"] for q in questions] == ["q1", "q2"]
    assert [p["id"] for p in passages] == ["Paris/0"]
    passages, questions = load_squad(limit=3, files=path)
    assert [p["id"] for p in passages] == ["Paris/0", "Paris/1"]
    # distractors: contexts no kept question needs, in source order; None keeps them all
    assert [p["id"] for p in load_squad(limit=1, files=path, distractors=1)[0]] == \
        ["Paris/0", "Paris/1"]
    assert [p["id"] for p in load_squad(limit=1, files=path, distractors=None)[0]] == \
        ["Paris/0", "Paris/1", "Oxygen/0"]
    for limit in (1, 2, 3, 4, 10):
        passages, questions = load_squad(limit=limit, files=path)
        assert {q["passage_id"] for q in questions} == {p["id"] for p in passages}


def test_nq_open_becomes_questions_without_passages(tmp_path):
    questions = load_nq_open(files=write(tmp_path / "nq.jsonl", NQ))
    assert questions == [
        {"id": "nq_open/validation/0", "question": "who wrote hamlet",
         "answers": ["William Shakespeare", "Shakespeare"]},
        {"id": "nq_open/validation/1", "question": "capital of france", "answers": ["Paris"]},
        {"id": "nq_open/validation/2", "question": "largest planet", "answers": ["Jupiter"]}]
    assert [q["id"] for q in load_nq_open(limit=2, files=tmp_path / "nq.jsonl")] == \
        ["nq_open/validation/0", "nq_open/validation/1"]


def test_beir_becomes_passages_queries_and_qrels(beir_files):
    passages, queries, qrels = load_beir(files=beir_files)
    assert passages == [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in CORPUS]
    assert queries == [{"id": "1", "question": "apple"}, {"id": "2", "question": "banana"},
                       {"id": "4", "question": "durian"}]
    assert qrels == {"1": {"d1": 1}, "2": {"d2": 1, "d3": 0}, "4": {"d4": 2}}


def test_beir_limit_keeps_every_judged_passage(beir_files):
    passages, queries, qrels = load_beir(files=beir_files, limit=2, distractors=0)
    assert [q["id"] for q in queries] == ["1", "2"]
    assert qrels == {"1": {"d1": 1}, "2": {"d2": 1, "d3": 0}}
    assert [p["id"] for p in passages] == ["d1", "d2", "d3"]
    passages, _, _ = load_beir(files=beir_files, limit=1, distractors=1)
    assert [p["id"] for p in passages] == ["d1", "d2"]
    passages, _, _ = load_beir(files=beir_files, limit=1)  # default: the whole corpus
    assert [p["id"] for p in passages] == ["d1", "d2", "d3", "d4"]


def test_beir_reads_the_unzipped_folder_with_tsv_qrels(tmp_path):
    write(tmp_path / "corpus.jsonl", CORPUS)
    write(tmp_path / "queries.jsonl", QUERIES)
    (tmp_path / "qrels").mkdir()
    lines = [f"{r['query-id']}\t{r['corpus-id']}\t{r['score']}\n" for r in QRELS]
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines),
                                                 encoding="utf-8")
    _, queries, qrels = load_beir(files=tmp_path)
    assert qrels == {"1": {"d1": 1}, "2": {"d2": 1, "d3": 0}, "4": {"d4": 2}}
    assert len(queries) == 3


# -- bad rows -----------------------------------------------------------------------------------
def _without(row, field):
    return {key: value for key, value in row.items() if key != field}


@pytest.mark.parametrize("rows, message", [
    ([SQUAD[0], _without(SQUAD[1], "context")], r"line 2 lacks the field\(s\) context"),
    ([{**SQUAD[0], "question": "  "}], r"line 1: question must be a non-empty string"),
    ([SQUAD[0], {**SQUAD[2], "context": ""}], r"line 2: question 'q3' has no passage"),
    ([{**SQUAD[0], "answers": {"text": [], "answer_start": []}}],
     r"line 1: answers\['text'\] must be a non-empty list"),
    ([SQUAD[0], SQUAD[0]], r"line 2 repeats the id 'q1' of .*line 1"),
])
def test_squad_bad_rows_are_named(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_squad(files=write(tmp_path / "squad.jsonl", rows))


def test_bad_json_and_missing_files_are_named(tmp_path):
    path = tmp_path / "nq.jsonl"
    path.write_text(json.dumps(NQ[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_nq_open(files=path)
    with pytest.raises(FileNotFoundError, match="absent.jsonl does not exist"):
        load_nq_open(files=tmp_path / "absent.jsonl")


@pytest.mark.parametrize("row, message", [
    ({"question": "", "answer": ["x"]}, "line 1: question must be a non-empty string"),
    ({"question": "who?", "answer": []}, "line 1: answer must be a non-empty list"),
    ({"question": "who?"}, r"line 1 lacks the field\(s\) answer"),
])
def test_nq_open_bad_rows_are_named(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        load_nq_open(files=write(tmp_path / "nq.jsonl", [row]))


@pytest.mark.parametrize("part, rows, message", [
    ("qrels", QRELS + [{"query-id": 1, "corpus-id": "d9", "score": 1}],
     r"line 5: id 'd9' is not in the corpus"),
    ("qrels", [{"query-id": 7, "corpus-id": "d1", "score": 1}],
     r"line 1: id '7' is not in the queries"),
    ("qrels", [{"query-id": 1, "corpus-id": "d1", "score": -1}],
     r"line 1: score must be a non-negative"),
    ("qrels", QRELS[:1] * 2, r"line 2 judges passage 'd1' for query '1' a second time"),
    ("queries", QUERIES + [{"_id": "5", "text": " "}], r"line 5: text must be a non-empty string"),
    ("corpus", CORPUS + [_without(CORPUS[0], "text")], r"line 5 lacks the field\(s\) text"),
    ("corpus", CORPUS + CORPUS[:1], r"line 5 repeats the _id 'd1'"),
])
def test_beir_bad_rows_are_named(beir_files, part, rows, message):
    write(beir_files[part], rows)
    with pytest.raises(ValueError, match=message):
        load_beir(files=beir_files)


def test_beir_without_relevant_queries_says_so(beir_files):
    with pytest.raises(ValueError, match="no query has a relevant passage"):
        load_beir(files={**beir_files, "qrels": write(beir_files["qrels"], QRELS[2:3])})


def test_limits_must_be_whole_numbers(tmp_path):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit must be None or a whole number"):
            load_nq_open(limit=bad, files=write(tmp_path / "nq.jsonl", NQ))


# -- the Hub: a stand-in, or no Hub at all --------------------------------------------------------
LOADERS = {"squad": lambda: load_squad(limit=2), "nq_open": lambda: load_nq_open(limit=2),
           "beir": lambda: load_beir("scifact", limit=2)}


def _never(*args, **kwargs):
    pytest.fail(f"datasets.load_dataset{args} was called in offline mode")


@pytest.mark.parametrize("variable", OFFLINE_VARIABLES)
@pytest.mark.parametrize("loader", LOADERS)
def test_offline_mode_raises_without_asking_the_hub(monkeypatch, variable, loader):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(datasets, "load_dataset", _never)
    with pytest.raises(PublicDataUnavailable, match=f"{variable} is set") as caught:
        LOADERS[loader]()
    message = str(caught.value)
    assert "needs the network" in message and "files=" in message and ".to_json(" in message
    assert "optional" in message


class StandInHub:
    """``datasets.load_dataset`` for the tests: records each call, answers with ``answer``."""

    def __init__(self):
        self.calls, self.answer = [], None

    def load_dataset(self, path, name=None, split=None):
        self.calls.append((path, name, split))
        return self.answer(path, name, split)


@pytest.fixture
def hub(monkeypatch):
    """Offline mode off, and the Hub replaced by a stand-in (the network is never used)."""
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    stand_in = StandInHub()
    monkeypatch.setattr(datasets, "load_dataset", stand_in.load_dataset)
    return stand_in


@pytest.mark.parametrize("error", [
    ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub (ConnectError)"),
    httpx.ConnectError("[Errno -3] Temporary failure in name resolution")])
def test_a_download_without_network_raises_the_clear_exception(hub, error):
    def fail(*args):
        raise error
    hub.answer = fail
    with pytest.raises(PublicDataUnavailable, match="the download failed .*needs the network") \
            as caught:
        load_squad(limit=1)
    assert caught.value.__cause__ is error


def test_other_hub_errors_are_not_disguised(hub):
    def fail(*args):
        raise ValueError("Unknown split 'dev'. Should be one of ['train', 'validation'].")
    hub.answer = fail
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load_squad(split="dev")


def test_hub_rows_are_converted_the_same_way(hub):
    tables = {("rajpurkar/squad", None, "validation"): SQUAD,
              ("google-research-datasets/nq_open", None, "validation"): NQ,
              ("BeIR/scifact", "corpus", "corpus"): CORPUS,
              ("BeIR/scifact", "queries", "queries"): QUERIES,
              ("BeIR/scifact-qrels", None, "test"): QRELS}
    hub.answer = lambda *key: datasets.Dataset.from_list(tables[key])
    passages, questions = load_squad(limit=3)
    assert [p["id"] for p in passages] == ["Paris/0", "Paris/1"]
    assert questions[2] == {"id": "q3", "question": "Which river flows through Paris?",
                            "answers": ["The Seine", "Seine"], "passage_id": "Paris/1"}
    assert load_nq_open()[2]["answers"] == ["Jupiter"]
    _, queries, qrels = load_beir("scifact")
    assert qrels == {"1": {"d1": 1}, "2": {"d2": 1, "d3": 0}, "4": {"d4": 2}}
    assert sorted(set(hub.calls)) == sorted(tables)


# -- evaluate_beir --------------------------------------------------------------------------------
# Each query word is in one passage only, so BM25 scores that passage above 0 and every other one
# 0; ties are broken by the passage's position in the corpus (ragtutor.sparse). The rankings are
#   "apple"  -> p1, p2, p3, p4     relevant {p1: 1}
#   "banana" -> p2, p1, p3, p4     relevant {p2: 1, p3: 2}
#   "durian" -> p4, p1, p2, p3     relevant {p1: 1}
PASSAGES = [{"id": f"p{i}", "title": "", "text": text} for i, text in
            enumerate(["apple orchard", "banana plantation", "cherry tree", "durian market"], 1)]
EVAL_QUERIES = [{"id": "a", "question": "apple"}, {"id": "b", "question": "banana"},
                {"id": "d", "question": "durian"}]
EVAL_QRELS = {"a": {"p1": 1}, "b": {"p2": 1, "p3": 2}, "d": {"p1": 1}}


def test_evaluate_beir_matches_the_hand_computed_scores():
    scores = evaluate_beir(BM25Retriever(), PASSAGES, EVAL_QUERIES, EVAL_QRELS, k=2)
    # recall@2: "apple" finds p1 (1); "banana" finds p2 but not p3 (1/2); "durian" finds p1 at 2 (1)
    assert scores["recall@2"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    # nDCG@10, gain = grade, discount log2(rank + 1):
    #   apple: 1/1 over the ideal 1/1;  banana: p2 at 1 (1/1) + p3 at 3 (2/log2 4 = 1) = 2 over
    #   the ideal p3, p2 = 2/1 + 1/log2 3;  durian: p1 at 2, 1/log2 3, over the ideal 1
    banana = 2 / (2 + 1 / math.log2(3))
    assert scores["ndcg@10"] == pytest.approx((1 + banana + 1 / math.log2(3)) / 3)
    assert scores["n"] == 3
    assert set(scores) == {"recall@2", "ndcg@10", "n"}


def test_evaluate_beir_uses_a_retriever_fitted_on_the_passages_as_it_is():
    fitted = BM25Retriever().fit(PASSAGES)
    scores = evaluate_beir(fitted, PASSAGES, EVAL_QUERIES, EVAL_QRELS, k=1)
    assert scores["recall@1"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    with pytest.raises(ValueError, match="fitted on other documents"):
        evaluate_beir(BM25Retriever().fit(PASSAGES[:3]), PASSAGES, EVAL_QUERIES, EVAL_QRELS, k=2)


@pytest.mark.parametrize("qrels, k, message", [
    ({**EVAL_QRELS, "b": {"p9": 1}}, 2, "qrels of query 'b' name passage 'p9'"),
    ({"a": {"p1": 1}, "b": {"p2": 1}}, 2, "query 'd' has no qrels"),
    (EVAL_QRELS, 5, "k=5 is larger than the passages, which has 4 passages"),
])
def test_evaluate_beir_rejects_inconsistent_input(qrels, k, message):
    with pytest.raises(ValueError, match=message):
        evaluate_beir(BM25Retriever(), PASSAGES, EVAL_QUERIES, qrels, k=k)


def test_loaded_beir_files_evaluate_end_to_end(beir_files):
    passages, queries, qrels = load_beir(files=beir_files)
    scores = evaluate_beir(BM25Retriever(), passages, queries, qrels, k=1)
    # "apple" -> d1, "banana" -> d2, "durian" -> d4: each query's top passage is relevant, and
    # banana's judged d3 has grade 0, so every ranking is ideal
    assert scores == {"recall@1": pytest.approx(1.0), "ndcg@10": pytest.approx(1.0), "n": 3}
