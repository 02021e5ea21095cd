"""QA metrics: SQuAD normalisation, exact match and F1 over acceptable answers."""
import pytest

from ragtutor.metrics import exact_match, f1_score, normalize_answer, qa_scores


def test_normalize_answer_follows_squad():
    assert normalize_answer("The  Euro.") == "euro"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("Bogotá") == "bogotá"  # SQuAD keeps accents; aliases cover spellings


def test_exact_match_takes_the_best_alias():
    assert exact_match("the euro", ["Euro", "EUR"]) == 1.0
    assert exact_match("EUR", ["Euro", "EUR"]) == 1.0
    assert exact_match("euros", ["Euro", "EUR"]) == 0.0
    assert exact_match("Paris", "Paris") == 1.0


def test_f1_by_hand():
    # prediction "new delhi city" vs answer "new delhi": overlap 2, P = 2/3, R = 1, F1 = 0.8
    assert f1_score("New Delhi city", ["New Delhi"]) == pytest.approx(0.8)
    assert f1_score("Delhi", ["New Delhi", "Delhi"]) == 1.0
    assert f1_score("", ["Paris"]) == 0.0
    assert f1_score("the", ["a"]) == 1.0  # both normalise to empty


def test_qa_scores_averages():
    scores = qa_scores(["Paris", "Lyon"], [["Paris"], ["Marseille"]])
    assert scores == {"em": 0.5, "f1": 0.5, "n": 2}


@pytest.mark.parametrize("bad, error, words", [
    (lambda: exact_match("Paris", []), ValueError, "no acceptable answers"),
    (lambda: exact_match("Paris", [None]), TypeError, "must be strings"),
    (lambda: exact_match(3, ["3"]), TypeError, "must be a string"),
    (lambda: qa_scores(["a"], [["a"], ["b"]]), ValueError, "1 predictions but 2"),
    (lambda: qa_scores([], []), ValueError, "empty"),
])
def test_bad_input_is_explained(bad, error, words):
    with pytest.raises(error, match=words):
        bad()


def test_a_string_where_a_list_is_expected_is_refused():
    # A lone string used to be read as a list of characters: "ab" vs ["a", "b"] scored EM 1.0.
    with pytest.raises(TypeError, match="predictions must be a list"):
        qa_scores("ab", ["a", "b"])
    with pytest.raises(TypeError, match="answers must be a list"):
        qa_scores(["Paris"], "Paris")


def test_missing_answers_get_a_clear_error():
    with pytest.raises(TypeError, match="answers must be a string or a list"):
        exact_match("x", None)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_questions():
    from ragtutor.metrics import bootstrap_interval
    few = [1.0] * 18 + [0.0] * 2
    many = few * 20
    low, high = bootstrap_interval(few)
    assert low < 0.9 < high <= 1.0
    low_many, high_many = bootstrap_interval(many)
    assert low < low_many < 0.9 < high_many < high
    assert bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    for bad in ([], [[1.0]], [float("nan")]):
        with pytest.raises(ValueError, match="hits must be"):
            bootstrap_interval(bad)
