"""Retrieval-augmented recommendation: the items a user liked in, more items and a reason out.

The items are the knowledge base's entities. A *user* (:func:`build_users`) liked a few entities
that share a hidden *taste* — one value of one relation: countries that use the euro, countries
where Spanish is official, the noble gases (group 18) — and one more liked entity is held out, the
one a recommender should find. A taste is any (relation, value) that between ``min_members`` and
``max_members`` entities share, read from the knowledge base's answers, so the tastes and the users
are rebuilt the same from the same files and seed.

:class:`Recommender` never looks at those answers. It reads, builds a query, retrieves, and reads
again:

1. **read the history**: it asks the question-answering system (chapter 07) each liked entity's
   value of every relation of its domain ("What is the currency of France?"), and keeps the
   (relation, value) that most liked entities share; on a tie, the value that the fewest passages
   of the knowledge base mention — "euro" says more about a taste than "Europe";
2. **retrieve**: the query is the relation word and the shared value ("currency euro"); BM25 over
   the passages returns candidate entities, in rank order, from the liked entities' domain;
3. **read the candidates**: it asks the same question about each candidate and keeps those whose
   answer is the shared value, in retrieval order; the reason names the value and the liked
   entities that share it, and cites the passage the answer came from.

A candidate the system declines to answer about ("I don't know") is never recommended on that
relation. :func:`hit_rate` and the baselines (:func:`popularity_ranking`, :func:`random_ranking`)
measure it; :func:`reason_is_true` checks a reason against the knowledge base's answers.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ragtutor.metrics import normalize_answer
from ragtutor.templates import QUESTIONS

__all__ = ["TASTE_RELATIONS", "Taste", "tastes", "build_users", "Recommendation", "Recommender",
           "hit_rate", "popularity_ranking", "random_ranking", "reason_is_true"]

# The relations a taste can be about, per domain, and how a reason says each.
TASTE_RELATIONS = {
    "country": {"currency": "uses the {value}", "language": "has {value} as an official language",
                "region": "lies in {value}", "continent": "lies in {value}"},
    "element": {"group": "is in group {value}", "period": "is in period {value}"},
}


@dataclass(frozen=True)
class Taste:
    """A (relation, value) shared by ``members``, the ids of the entities that have it."""

    domain: str
    relation: str
    value: str
    members: tuple

    @property
    def name(self):
        return f"{self.relation}={self.value}"


def _values(entity, relation):
    """The entity's values of `relation`, normalised; the first spelling of each stands for it."""
    answers = entity.get("answers", {}).get(relation, [])
    return {normalize_answer(a): a for a in reversed(answers)}


def _canonical(entity, relation):
    """The entity's main values of `relation` (its first answer, and each other value that is not
    an alias of it: one per currency or language), as normalised strings."""
    facts = entity.get("facts", {})
    if relation == "currency":
        return [normalize_answer(c["name"]) for c in facts.get("currencies", [])]
    if relation == "language":
        return [normalize_answer(lang["name"]) for lang in facts.get("languages", [])]
    answers = entity.get("answers", {}).get(relation, [])
    return [normalize_answer(answers[0])] if answers else []


def tastes(entities, min_members=6, max_members=30):
    """Every taste: a (relation, value) of :data:`TASTE_RELATIONS` that between `min_members` and
    `max_members` entities share, sorted by domain, relation and value."""
    if not 2 <= min_members <= max_members:
        raise ValueError(f"need 2 <= min_members <= max_members, got {min_members} and {max_members}")
    groups, spelling = defaultdict(list), {}
    for entity in entities:
        for relation in TASTE_RELATIONS.get(entity["domain"], {}):
            for value in _canonical(entity, relation):
                key = (entity["domain"], relation, value)
                groups[key].append(entity["id"])
                spelling.setdefault(key, _values(entity, relation).get(value, value))
    return [Taste(domain, relation, spelling[(domain, relation, value)], tuple(sorted(members)))
            for (domain, relation, value), members in sorted(groups.items())
            if min_members <= len(members) <= max_members]


def build_users(entities, n_users=100, history=4, seed=0, min_members=6, max_members=30):
    """`n_users` users, each a dict with ``id``, ``taste`` (its name), ``liked`` (`history` entity
    ids sharing the taste) and ``held_out`` (one more of them): the same for the same entities and
    seed. Each user draws a taste uniformly, then its liked and held-out entities from its members."""
    if n_users < 1 or history < 1:
        raise ValueError(f"need n_users >= 1 and history >= 1, got {n_users} and {history}")
    pool = [t for t in tastes(entities, min_members, max_members) if len(t.members) > history]
    if not pool:
        raise ValueError(f"no taste has more than history={history} members: lower history or "
                         "min_members")
    rng = np.random.default_rng(seed)
    users = []
    for i in range(n_users):
        taste = pool[rng.integers(len(pool))]
        picked = rng.choice(len(taste.members), size=history + 1, replace=False)
        ids = [taste.members[j] for j in picked]
        users.append({"id": f"user{i:04d}", "taste": taste.name, "liked": ids[:history],
                      "held_out": ids[history]})
    return users


@dataclass
class Recommendation:
    """One recommended entity, the shared (relation, value) it was chosen for, the reason, the
    liked entities the reason names and the passage the candidate's value was read from."""

    entity_id: str
    name: str
    relation: str
    value: str
    reason: str
    named: tuple = field(repr=False)
    citation: str = field(repr=False)


class Recommender:
    """Recommend entities like the liked ones, with a reason read from the passages.

    ``qa`` is a :class:`ragtutor.qa.QASystem` (it reads the values); ``retriever`` a retriever
    fitted on ``passages`` (the records, whose ids it returns), which finds the candidates;
    ``entities`` give the names and domains of the ids. ``depth`` passages are retrieved per query.
    """

    def __init__(self, qa, retriever, passages, entities, depth=60):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.qa, self.retriever, self.depth = qa, retriever, depth
        self.entities = {e["id"]: e for e in entities}
        self.passage_entity = {p["id"]: p["entity_id"] for p in passages}
        self._texts = [f" {normalize_answer(p['title'] + ' ' + p['text'])} " for p in passages]
        self._read_cache = {}

    # -- reading ----------------------------------------------------------------------------------
    def read(self, pairs):
        """The QA system's reading of (entity id, relation) pairs: {pair: (its answer, normalised,
        or None when it declined; its best guess, normalised, even when it declined; the best
        guess as written; the passage it cites first)}; cached."""
        todo = sorted({p for p in pairs if p not in self._read_cache})
        if todo:
            questions = [QUESTIONS[relation]["plain"][0].format(name=self._mid(entity_id))
                         for entity_id, relation in todo]
            for pair, reply in zip(todo, self.qa.ask_many(questions)):
                guess = normalize_answer(reply.draft) or None
                cited = reply.citations[0]["id"] if reply.citations else None
                self._read_cache[pair] = (None if reply.abstained else guess, guess, reply.draft, cited)
        return {p: self._read_cache[p] for p in pairs}

    def _mid(self, entity_id):
        entity = self.entities[entity_id]
        definite = entity.get("facts", {}).get("definite", False)
        return f"the {entity['name']}" if definite else entity["name"]

    # -- the taste --------------------------------------------------------------------------------
    def taste(self, liked):
        """The (relation, value, written value, sharers) that the most liked entities share, read
        by the QA system; None when no two of them share any value. The liked entities are read
        by the system's best guesses, declined answers included: a user's history is evidence to
        weigh, and a candidate is recommended only on a confident answer (:meth:`recommend`)."""
        liked = self._check_liked(liked)
        domain = self.entities[liked[0]]["domain"]
        reads = self.read([(e, r) for e in liked for r in TASTE_RELATIONS[domain]])
        sharers, written = defaultdict(list), {}
        for (entity_id, relation), (_, guess, as_written, _) in reads.items():
            if guess is not None:
                sharers[(relation, guess)].append(entity_id)
                written.setdefault((relation, guess), as_written)
        best = max(sharers.items(), key=lambda kv: (len(kv[1]), -self.mentions(kv[0][1]), kv[0]),
                   default=None)
        if best is None or len(best[1]) < 2:
            return None
        (relation, value), who = best
        return relation, value, written[(relation, value)], who

    def mentions(self, value):
        """How many passages mention `value` (normalised, as whole words)."""
        phrase = f" {normalize_answer(value)} "
        return sum(phrase in text for text in self._texts)

    def _check_liked(self, liked):
        if isinstance(liked, str) or not hasattr(liked, "__len__"):
            raise TypeError(f"liked must be a list of entity ids, got {type(liked).__name__}")
        liked = list(liked)
        if len(liked) < 2:
            raise ValueError(f"need at least two liked entities to find what they share, got {len(liked)}")
        unknown = [e for e in liked if e not in self.entities]
        if unknown:
            raise KeyError(f"{len(unknown)} liked ids are not entities of the knowledge base, e.g. "
                           f"{unknown[0]!r}")
        domains = {self.entities[e]["domain"] for e in liked}
        if len(domains) > 1:
            raise ValueError(f"the liked entities mix domains {sorted(domains)}: a taste is read "
                             "within one domain")
        return liked

    # -- recommending -----------------------------------------------------------------------------
    def recommend(self, liked, k=5):
        """Up to `k` :class:`Recommendation` s for a user who liked the entity ids `liked`, best
        first; an empty list when the liked entities share nothing the system can read."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        taste = self.taste(liked)
        if taste is None:
            return []
        relation, value, written, sharers = taste
        domain = self.entities[liked[0]]["domain"]
        _, ids = self.retriever.search([f"{relation.replace('_', ' ')} {written}"], self.depth)
        candidates = []
        for passage_id in ids[0].tolist():
            entity_id = self.passage_entity[passage_id]
            if (entity_id not in candidates and entity_id not in liked
                    and self.entities[entity_id]["domain"] == domain):
                candidates.append(entity_id)
        reads = self.read([(c, relation) for c in candidates])
        named = tuple(sharers[:3])
        like = ", ".join(self.entities[e]["name"] for e in named)
        out = []
        for entity_id in candidates:
            answer, _, _, cited = reads[(entity_id, relation)]
            if answer == value:
                said = TASTE_RELATIONS[domain][relation].format(value=written)
                name = self.entities[entity_id]["name"]
                out.append(Recommendation(entity_id, name, relation, value,
                                          f"{name} {said}, like {like}", named, cited))
                if len(out) == k:
                    break
        return out


def hit_rate(rankings, users, k):
    """The share of users whose held-out entity is among the first `k` of their ranking (a list of
    entity ids per user, in the users' order)."""
    if len(rankings) != len(users):
        raise ValueError(f"{len(rankings)} rankings for {len(users)} users")
    return float(np.mean([u["held_out"] in list(r)[:k] for r, u in zip(rankings, users)]))


def popularity_ranking(train_users, entities, liked, k):
    """The `k` entities of `liked`'s domain liked most often by `train_users` (held-out items
    included), the user's own liked entities left out; ties by id."""
    domain = {e["id"]: e["domain"] for e in entities}
    counts = Counter(i for u in train_users for i in u["liked"] + [u["held_out"]])
    want = domain[liked[0]]
    ranked = sorted((e for e in domain if domain[e] == want and e not in liked),
                    key=lambda e: (-counts[e], e))
    return ranked[:k]


def random_ranking(entities, liked, k, rng):
    """`k` entities of `liked`'s domain drawn uniformly with `rng`, the liked ones left out."""
    want = {e["id"]: e["domain"] for e in entities}[liked[0]]
    pool = sorted(e["id"] for e in entities if e["domain"] == want and e["id"] not in liked)
    return [pool[i] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)]


def reason_is_true(recommendation, entities):
    """Whether the recommendation's stated (relation, value) is true, by the knowledge base's
    answers, of the recommended entity and of every liked entity the reason names."""
    by_id = {e["id"]: e for e in entities}
    return all(recommendation.value in _values(by_id[e], recommendation.relation)
               for e in (recommendation.entity_id, *recommendation.named))
