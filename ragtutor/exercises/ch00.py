"""The checks of chapter 00's exercises (welcome)."""
from ragtutor.exercises.checks import check_close, check_function, exercise

__all__ = ["ch00_majority_answer", "ch00_seen_entity_share"]


def _q(entity_id, answer, relation="capital"):
    return {"entity_id": entity_id, "relation": relation, "answers": [answer]}


@exercise("0.1")
def ch00_majority_answer(majority_answer):
    """Exercise 0.1: the most frequent first answer among questions (ties: alphabetically first)."""
    check_function(majority_answer, [
        ([_q("A", "Africa"), _q("B", "Asia"), _q("C", "Africa")], "Africa"),
        ([_q("A", "Europe")], "Europe"),
        ([_q("A", "Asia"), _q("B", "Africa")], "Africa"),
        ([_q("A", "Oceania"), _q("B", "Asia"), _q("C", "Asia"), _q("D", "Oceania")], "Asia"),
    ], hint="count questions[i]['answers'][0] with collections.Counter; on a tie, return the "
            "alphabetically first answer (sorted() or min() help).")
    return "majority_answer finds the most frequent answer and breaks ties alphabetically."


@exercise("0.2")
def ch00_seen_entity_share(seen_entity_share):
    """Exercise 0.2: the share of test questions whose entity also has a training question."""
    check_function(seen_entity_share, [
        (([_q("A", "x"), _q("B", "y")], [_q("A", "x"), _q("C", "z")]), 0.5),
        (([_q("A", "x")], [_q("B", "y"), _q("B", "y"), _q("C", "z")]), 0.0),
        (([_q("A", "x"), _q("A", "x")], [_q("A", "y")]), 1.0),
    ], compare=check_close,
        hint="collect the training entity ids in a set, then count the test questions whose "
             "'entity_id' is in it and divide by the number of test questions.")
    return ("seen_entity_share is right: a model that memorised the training questions has "
            "never seen the entity of a single test question.")
