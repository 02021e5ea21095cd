"""Chapter 07's question-answering system: answers with citations and a confidence, abstention,
editing the knowledge base without retraining, the command line and the ask-a-question box."""
import math
import sys
import warnings

import numpy as np
import pytest

from ragtutor import data
from ragtutor.__main__ import main as cli
from ragtutor.generation import CHECKPOINT_DIR
from ragtutor.qa import SIGNALS, QASystem, ask_widget, separation, threshold_for

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def qa():
    return QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token", threshold=None)


def test_a_reply_cites_the_retrieved_passages_by_posterior(qa):
    reply = qa.ask(FRANCE)
    assert reply.answer == "Paris" and not reply.abstained and reply.draft == "Paris"
    posteriors = [c["posterior"] for c in reply.citations]
    assert len(reply.citations) == qa.model.n_docs
    assert posteriors == sorted(posteriors, reverse=True)
    assert math.isclose(sum(posteriors), 1.0, abs_tol=1e-6)
    assert math.isclose(sum(c["prior"] for c in reply.citations), 1.0, abs_tol=1e-6)
    assert reply.citations[0]["id"] == "FRA/capital"
    ids = {p["id"] for p in qa.model.passages}
    assert all(c["id"] in ids for c in reply.citations)
    assert set(reply.signals) == set(SIGNALS) and reply.confidence == reply.signals[qa.signal]
    # each token's posterior over the K passages sums to 1
    per_token = np.array([c["token_posteriors"] for c in reply.citations])
    assert per_token.shape == (qa.model.n_docs, len(reply.tokens))
    np.testing.assert_allclose(per_token.sum(0), 1.0, atol=1e-6)
    assert str(reply).startswith("Paris  [FRA/capital")


def test_answers_agree_with_the_model_and_batches_agree_with_single_questions(qa):
    questions = [q["question"] for q in data.load_questions("test")[:20]]
    replies = qa.ask_many(questions, batch_size=7)
    assert [r.draft for r in replies] == qa.model.generate(questions)
    single = qa.ask(questions[3])
    assert single.draft == replies[3].draft
    assert single.signals == pytest.approx(replies[3].signals, rel=1e-6)


def test_the_system_abstains_below_its_threshold():
    strict = QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token", threshold=1.5)
    reply = strict.ask(FRANCE)
    assert reply.abstained and reply.answer is None and reply.draft == "Paris"
    assert str(reply).startswith("I don't know") and "'Paris'" in str(reply)
    lenient = QASystem(strict.model, signal="top_prior", threshold=0.0)
    assert not lenient.ask(FRANCE).abstained


def test_the_shipped_calibration_is_read():
    qa = QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token")
    assert qa.signal in SIGNALS and qa.threshold is not None and math.isfinite(qa.threshold)


@pytest.mark.parametrize("make, error, match", [
    (lambda qa: qa.ask(123), TypeError, "question must be a string"),
    (lambda qa: qa.ask("  "), ValueError, "non-empty string"),
    (lambda qa: qa.ask_many(FRANCE), TypeError, "list of strings"),
    (lambda qa: QASystem(qa.model, signal="vibes"), ValueError, "signal must be one of"),
    (lambda qa: QASystem(qa.model, threshold=float("nan")), ValueError, "finite number"),
    (lambda qa: QASystem("checkpoints/rag_token"), TypeError, "RAGModel"),
    (lambda qa: QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token", calibration="/nowhere.json"),
     FileNotFoundError, "calibrate_qa.py"),
])
def test_bad_input_gets_a_clear_error(qa, make, error, match):
    with pytest.raises(error, match=match):
        make(qa)


def test_editing_the_knowledge_base_changes_the_answer_and_restoring_it_brings_it_back():
    qa = QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token", threshold=None)
    n = len(qa.model.passages)
    old = qa.delete_passages(["FRA/capital"])
    assert len(qa.model.passages) == n - 1 and old[0]["id"] == "FRA/capital"
    assert all(c["id"] != "FRA/capital" for c in qa.ask(FRANCE).citations)
    edited = {**old[0], "text": old[0]["text"].replace("Paris", "Velmarosk")}
    assert qa.add_passages([edited]) == n
    reply = qa.ask(FRANCE)
    assert reply.answer == "Velmarosk" and reply.citations[0]["id"] == "FRA/capital"
    qa.delete_passages(["FRA/capital"])
    qa.add_passages(old)
    assert qa.ask(FRANCE).answer == "Paris"
    # the index is exactly the saved one again, passage for passage (the order changed)
    fresh = QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token", threshold=None)
    questions = [q["question"] for q in data.load_questions("dev")[:30]] + [FRANCE]
    assert qa.model.generate(questions) == fresh.model.generate(questions)
    assert (qa.model.retrieve(questions)[1] == fresh.model.retrieve(questions)[1]).all()


def test_bad_edits_are_refused_and_change_nothing(qa):
    n = len(qa.model.passages)
    with pytest.raises(ValueError, match="not passages of the model"):
        qa.delete_passages(["FRA/capital", "ATL/capital"])
    with pytest.raises(ValueError, match="names a passage twice"):
        qa.delete_passages(["FRA/capital", "FRA/capital"])
    with pytest.raises(ValueError, match="already in the model"):
        qa.add_passages([qa.model.passages[0]])
    with pytest.raises(TypeError, match="list of strings"):
        qa.delete_passages("FRA/capital")
    with pytest.raises(ValueError, match="'id', 'title' and 'text'"):
        qa.add_passages([{"id": "ATL/capital", "text": "Atlantis has no capital."}])
    assert len(qa.model.passages) == n


def test_separation_and_threshold():
    assert separation([3, 4, 5], [0, 1, 2]) == 1.0
    assert separation([0, 1], [2, 3]) == 0.0
    assert separation([1, 1], [1, 1]) == 0.5
    unanswerable = np.arange(100.0)                 # 0 .. 99
    t = threshold_for(unanswerable, 0.05)
    assert (unanswerable >= t).sum() == 5 and 94 < t <= 95
    assert (unanswerable >= threshold_for(unanswerable, 0.0)).sum() == 0
    with pytest.raises(ValueError, match="max_answered"):
        threshold_for(unanswerable, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        separation([], [1.0])


def test_the_unanswerable_sets_are_disjoint_and_of_every_kind():
    dev, test = data.load_unanswerable("dev"), data.load_unanswerable("test")
    assert len(dev) >= 50 and len(test) >= 50
    for rows in (dev, test):
        assert {r["kind"] for r in rows} == set(data.UNANSWERABLE_KINDS)
        assert len({r["question"].lower() for r in rows}) == len(rows)
    assert not {r["question"].lower() for r in dev} & {r["question"].lower() for r in test}
    with pytest.raises(ValueError, match="dev and test"):
        data.load_unanswerable("train")


def test_a_malformed_unanswerable_file_is_reported(tmp_path):
    (tmp_path / "unanswerable_dev.tsv").write_text("# header\nfictional\tcapital of atlantis\n"
                                                   "guess\twho am I\n", encoding="utf-8")
    with pytest.raises(data.KnowledgeBaseError, match="line 3 must be"):
        data.load_unanswerable("dev", sources_dir=tmp_path)


def test_the_command_line_answers_cites_and_abstains(capsys):
    assert cli(["ask", FRANCE]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Paris" and "cited: FRA/capital (France)" in out
    assert cli(["ask", FRANCE, "--threshold", "1.5", "--citations", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("I don't know.") and "'Paris'" in out and "closest passages:" in out


def test_the_command_line_refuses_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli(["ask", "   "])
    assert exit_.value.code == 2 and "the question is empty" in capsys.readouterr().err
    assert cli(["ask", FRANCE, "--model", str(tmp_path)]) == 2
    assert "rag.json is missing" in capsys.readouterr().err


def test_the_question_box_degrades_to_a_static_answer(qa, capsys, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ui = ask_widget(qa, FRANCE)
    assert ui is not None and "Paris" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "ipywidgets", None)     # as if it were not installed
    assert ask_widget(qa, FRANCE) is None
    out = capsys.readouterr().out
    assert "ipywidgets is not installed" in out and "Paris" in out


@pytest.mark.slow
def test_the_calibration_script_reproduces_the_shipped_rule(tmp_path):
    """scripts/calibrate_qa.py reads no test question and is deterministic: rerun, it writes the
    shipped checkpoints/qa_calibration.json's rules again (about a minute on one thread)."""
    import json
    import subprocess

    out = tmp_path / "calibration.json"
    subprocess.run([sys.executable, str(CHECKPOINT_DIR.parent / "scripts" / "calibrate_qa.py"),
                    "--out", str(out)], check=True, cwd=CHECKPOINT_DIR.parent, capture_output=True)
    fresh = json.loads(out.read_text())
    shipped = json.loads((CHECKPOINT_DIR / "qa_calibration.json").read_text())
    assert fresh["dev_questions"] == shipped["dev_questions"]
    for name, rule in shipped["models"].items():
        assert fresh["models"][name]["signal"] == rule["signal"]
        assert fresh["models"][name]["threshold"] == pytest.approx(rule["threshold"], rel=1e-4)
        for signal, row in rule["signals"].items():
            assert fresh["models"][name]["signals"][signal]["separation"] == pytest.approx(
                row["separation"], abs=0.002)
