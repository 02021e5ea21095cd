"""ragtutor.recommend: tastes and users built from the knowledge base, a recommender that reads,
retrieves and reads again, and its measures — with a stand-in reader that answers from the
knowledge base's answers, so that the pipeline is tested apart from any trained model."""
from dataclasses import dataclass, field

import numpy as np
import pytest

from ragtutor import data
from ragtutor import recommend as rec
from ragtutor.sparse import BM25Retriever
from ragtutor.templates import QUESTIONS


@pytest.fixture(scope="module")
def kb():
    return data.load_entities(), data.load_passages()


@dataclass
class _Reply:
    answer: object
    draft: str
    citations: list = field(default_factory=list)

    @property
    def abstained(self):
        return self.answer is None


class _Reader:
    """Answers "What is the <relation> of <name>?" with the entity's first true answer; declines
    (keeping its best guess) for the ids in `declines`; counts the questions it is asked."""

    def __init__(self, entities, declines=()):
        self.by_question = {}
        for e in entities:
            for relation, answers in e["answers"].items():
                if relation in QUESTIONS and answers:
                    for name in (e["name"], f"the {e['name']}"):
                        question = QUESTIONS[relation]["plain"][0].format(name=name)
                        self.by_question[question] = (e["id"], answers[0])
        self.declines, self.asked = set(declines), 0

    def ask_many(self, questions):
        self.asked += len(questions)
        replies = []
        for q in questions:
            entity_id, answer = self.by_question.get(q, (None, "Paris"))
            cite = [{"id": f"{entity_id}/x"}]
            replies.append(_Reply(None if entity_id in self.declines else answer, answer, cite))
        return replies


@pytest.fixture(scope="module")
def bm25(kb):
    return BM25Retriever().fit(kb[1])


def test_tastes_are_shared_values_within_the_bounds(kb):
    entities, _ = kb
    tastes = rec.tastes(entities)
    names = {t.name for t in tastes}
    assert {"currency=euro", "language=Spanish", "group=18"} <= names
    by_id = {e["id"]: e for e in entities}
    for t in tastes:
        assert 6 <= len(t.members) <= 30, t.name
        for member in t.members:  # every member really has the value
            assert rec._values(by_id[member], t.relation).get(rec.normalize_answer(t.value)), (t.name, member)
    assert rec.tastes(entities) == tastes
    with pytest.raises(ValueError, match="min_members"):
        rec.tastes(entities, min_members=1)


def test_users_are_reproducible_and_share_their_taste(kb):
    entities, _ = kb
    users = rec.build_users(entities, n_users=50, history=4, seed=3)
    assert users == rec.build_users(entities, n_users=50, history=4, seed=3)
    assert users != rec.build_users(entities, n_users=50, history=4, seed=4)
    members = {t.name: set(t.members) for t in rec.tastes(entities)}
    for u in users:
        assert len(u["liked"]) == 4 and u["held_out"] not in u["liked"]
        assert set(u["liked"]) | {u["held_out"]} <= members[u["taste"]]
    with pytest.raises(ValueError, match="history"):
        rec.build_users(entities, history=0)
    with pytest.raises(ValueError, match="no taste"):
        rec.build_users(entities, history=40)


def test_the_recommender_finds_what_the_liked_share_and_says_so_truly(kb, bm25):
    entities, passages = kb
    recommender = rec.Recommender(_Reader(entities), bm25, passages, entities)
    liked = ["FRA", "DEU", "ITA", "ESP"]  # euro, Europe
    relation, value, _, sharers = recommender.taste(liked)
    # Euro and Europe are shared by all four; fewer passages mention the euro.
    assert (relation, value) == ("currency", "euro") and sorted(sharers) == sorted(liked)
    assert recommender.mentions("euro") < recommender.mentions("europe")
    out = recommender.recommend(liked, k=5)
    assert len(out) == 5 and not {r.entity_id for r in out} & set(liked)
    by_id = {e["id"]: e for e in entities}
    for r in out:
        assert "euro" in {rec.normalize_answer(c["name"]) for c in by_id[r.entity_id]["facts"]["currencies"]}
        assert r.reason.startswith(f"{r.name} uses the euro, like ") and rec.reason_is_true(r, entities)
        assert set(r.named) <= set(liked) and len(r.named) == 3


def test_a_declined_candidate_is_not_recommended_and_reads_are_cached(kb, bm25):
    entities, passages = kb
    euro = {t.name: t.members for t in rec.tastes(entities)}["currency=euro"]
    liked = list(euro[:4])
    declines = set(euro[4:])
    reader = _Reader(entities, declines=declines)
    recommender = rec.Recommender(reader, bm25, passages, entities)
    out = recommender.recommend(liked, k=5)
    assert not {r.entity_id for r in out} & declines
    asked = reader.asked
    recommender.recommend(liked, k=5)
    assert reader.asked == asked  # every reading came from the cache


def test_a_false_reason_is_caught(kb):
    entities, _ = kb
    wrong = rec.Recommendation("DEU", "Germany", "currency", "us dollar",
                               "Germany uses the US dollar, like France", ("FRA",), "DEU/economy")
    assert not rec.reason_is_true(wrong, entities)
    right_of_germany_only = rec.Recommendation("DEU", "Germany", "currency", "euro",
                                               "Germany uses the euro, like Japan", ("JPN",), "DEU/economy")
    assert not rec.reason_is_true(right_of_germany_only, entities)


def test_nothing_shared_gives_no_recommendation(kb, bm25):
    entities, passages = kb

    class Scatter(_Reader):  # a different guess for every question
        def ask_many(self, questions):
            return [_Reply(f"thing {i}", f"thing {i}") for i, _ in enumerate(questions)]

    recommender = rec.Recommender(Scatter(entities), bm25, passages, entities)
    assert recommender.taste(["FRA", "JPN"]) is None
    assert recommender.recommend(["FRA", "JPN"]) == []


@pytest.mark.parametrize("liked, error, match", [
    ("FRA", TypeError, "list of entity ids"),
    (["FRA"], ValueError, "at least two"),
    (["FRA", "Atlantis"], KeyError, "Atlantis"),
    (["FRA", "Fe"], ValueError, "mix domains"),
])
def test_bad_liked_lists_are_refused(kb, bm25, liked, error, match):
    entities, passages = kb
    recommender = rec.Recommender(_Reader(entities), bm25, passages, entities)
    with pytest.raises(error, match=match):
        recommender.recommend(liked)


def test_measures_and_baselines(kb):
    entities, _ = kb
    users = rec.build_users(entities, n_users=20, seed=1)
    perfect = [[u["held_out"]] for u in users]
    assert rec.hit_rate(perfect, users, 1) == 1.0
    assert rec.hit_rate([[] for _ in users], users, 5) == 0.0
    with pytest.raises(ValueError, match="rankings"):
        rec.hit_rate(perfect[:-1], users, 1)
    train = rec.build_users(entities, n_users=200, seed=0)
    popular = rec.popularity_ranking(train, entities, users[0]["liked"], 5)
    assert len(popular) == 5 and not set(popular) & set(users[0]["liked"])
    drawn = rec.random_ranking(entities, users[0]["liked"], 5, np.random.default_rng(0))
    assert drawn == rec.random_ranking(entities, users[0]["liked"], 5, np.random.default_rng(0))
    assert not set(drawn) & set(users[0]["liked"])


def test_bad_settings_are_refused(kb, bm25):
    entities, passages = kb
    with pytest.raises(ValueError, match="depth"):
        rec.Recommender(_Reader(entities), bm25, passages, entities, depth=0)
    recommender = rec.Recommender(_Reader(entities), bm25, passages, entities)
    with pytest.raises(ValueError, match="k must be"):
        recommender.recommend(["FRA", "DEU"], k=0)


def test_each_taste_relation_is_a_question_of_its_domain():
    from ragtutor.templates import RELATIONS

    for domain, relations in rec.TASTE_RELATIONS.items():
        for relation in relations:
            assert RELATIONS[relation][0] == domain and relation in rec.QUESTIONS, relation
