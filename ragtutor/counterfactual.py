"""Counterfactual examples: the knowledge base's templates filled with false facts, to train a reader.

:func:`counterfactual_examples` fills the passage and question templates of
:mod:`ragtutor.templates` with names drawn from the whole name pool (held-out test entities
included) and false facts drawn from each relation's value pool, so that a reader sees every name
token in training while the passage stays the only source of the answer: no value a passage states
is a true fact of any entity it names.
"""
import functools
import itertools
import operator
import random
import re

# The templates' private helpers are shared on purpose: a counterfactual passage must be written
# exactly as a real one is, so this module renders with the same functions.
from ragtutor.templates import (ASPECTS, PHRASINGS, RELATIONS, RENDERERS, SURFACE_FORMS, _area_text,
                                _calling_code_answers, _fold, _mid, _question, phrase,
                                relation_answers, shared_content_words)

__all__ = ["counterfactual_examples", "iter_counterfactual_examples"]


def _first_by(items, key):
    """The first item of each distinct ``key``, in order of first appearance."""
    return list({key(x): x for x in reversed(items)}.values())[::-1]


class _Pools:
    """Value pools per relation, the truth about every country, and the land-border graph.

    Country pools hold (value, phrases) pairs: a value may be stated in a passage only when none
    of its phrases is a true fact of an entity the passage names (see :meth:`banned`).
    """

    def __init__(self, entities):
        self.entities = list(entities)
        self.index = {e["id"]: e for e in self.entities}
        self.by_domain = {d: [e for e in self.entities if e["domain"] == d] for d in ASPECTS}
        countries, elements = self.by_domain["country"], self.by_domain["element"]
        self.truth = {c["id"]: self._truth(c) for c in countries}
        self.adjacent = {c["id"]: set(c["facts"]["neighbours"]) for c in countries}
        self.country_names = {_fold(n): c["id"] for c in countries for n in [c["name"], *c["aliases"]]}
        facts = [c["facts"] for c in countries]
        self.capitals = self._pool(
            sorted({(f["capital"], *f.get("capital_aliases", [])) for f in facts if f.get("capital")}), tuple)
        self.regions = self._pool(sorted({(f["continent"], f["region"]) for f in facts}), tuple)
        self.areas = self._pool(sorted({f["area_km2"] for f in facts}), lambda v: [_area_text(v)])
        currencies = _first_by([c for f in facts for c in f["currencies"]], lambda c: c["code"])
        self.currencies = self._pool(sorted(currencies, key=lambda c: c["code"]),
                                     lambda c: [c["name"], c["code"], *c.get("aliases", [])])
        languages = _first_by([lang for f in facts for lang in f["languages"]], lambda lang: lang["name"])
        self.languages = self._pool(sorted(languages, key=lambda lang: lang["name"]),
                                    lambda lang: [lang["name"], *lang.get("aliases", [])])
        self.demonyms = self._pool(
            sorted({(f["demonym"], *f.get("demonym_aliases", [])) for f in facts if f.get("demonym")}), tuple)
        self.calling_codes = self._pool(sorted({f["calling_code"] for f in facts}), _calling_code_answers)
        self.tlds = self._pool(sorted({f["tld"] for f in facts}), lambda v: [v])
        efacts = [e["facts"] for e in elements]
        self.symbols = sorted(f["symbol"] for f in efacts)
        self.numbers = sorted(f["number"] for f in efacts)
        self.masses = sorted({(f["mass"], f["mass_is_mass_number"]) for f in efacts})
        self.densities = sorted({(f["density"], f["density_prefix"], f["density_suffix"])
                                 for f in efacts if f.get("density")})
        self.crystals = sorted({f["crystal"] for f in efacts if f.get("crystal")})
        self.radii = sorted({f["radius_pm"] for f in efacts if f.get("radius_pm")})
        self.categories = sorted({f["category"] for f in efacts if f.get("category")})
        self.blocks = sorted({f["block"] for f in efacts})
        self.periods = sorted({f["period"] for f in efacts})
        self.groups = sorted({f["group"] for f in efacts if f.get("group")})

    def _pool(self, values, strings):
        """Pool entries (value, every phrase of its strings), for fast fact checks.

        A value that names a country and states one of its true facts ("Malawi kwacha",
        "Kuwait City") would reveal that fact wherever it is used, so it is left out.
        """
        pool = []
        for value in values:
            phrases = frozenset().union(*(_phrases(str(x)) for x in strings(value)))
            named = [self.country_names[p] for p in phrases if p in self.country_names]
            if all(phrases.isdisjoint(self.truth[c]) for c in named):
                pool.append((value, phrases))
        return pool

    @staticmethod
    def _truth(country):
        """Folded strings of every true fact of ``country`` that a passage could state."""
        strings = [a for answers in country["answers"].values() for a in answers]
        strings.append(_area_text(country["facts"]["area_km2"]))
        return frozenset(s for s in map(_fold, strings) if s)

    def banned(self, named):
        """Folded true facts of every country in ``named``: no stated value may contain one."""
        return frozenset().union(*(self.truth[e["id"]] for e in named))


@functools.lru_cache(maxsize=None)
def _phrases(text):
    """Every run of consecutive words of the folded ``text``: what "contains a fact" compares."""
    words = _fold(text).split()
    return frozenset(" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1))


def _draw(rng, pool, banned, exclude=()):
    """A value of ``pool`` (``(value, phrases)`` pairs) stating none of the ``banned`` facts."""
    return rng.choice([v for v, phrases in pool if phrases.isdisjoint(banned) and v not in exclude])


def _nonadjacent(rng, pools, subject, k):
    """Up to ``k`` other countries, no two of them (nor any with ``subject``) sharing a border.

    A passage that names two true neighbours side by side could be read as stating their
    (true) adjacency, so counterfactual passages never do.
    """
    chosen, named = [], {subject["id"]}
    candidates = [c for c in pools.by_domain["country"] if c["id"] != subject["id"]]
    # Borders are sparse: a few times k random candidates nearly always suffice.
    for c in rng.sample(candidates, min(len(candidates), 4 * k + 8)):
        if len(chosen) == k:
            break
        if not pools.adjacent[c["id"]] & named:
            chosen.append(c)
            named.add(c["id"])
    return chosen


def _fake(e, facts):
    return {"id": e["id"], "name": e["name"], "domain": e["domain"], "aliases": e["aliases"],
            "facts": {**facts, "definite": e["facts"].get("definite", False)}}


def _fake_country(e, aspect, pools, rng):
    """False facts about country ``e`` for one aspect, and distractor mentions that are false too."""
    if aspect == "geography":
        peers = _nonadjacent(rng, pools, e, rng.randint(1, 3))
        banned = pools.banned([e, *peers])
        continent, region = _draw(rng, pools.regions, banned)
        area = _draw(rng, pools.areas, banned)
        return (_fake(e, {"continent": continent, "region": region, "area_km2": area}),
                {"region_peers": [_mid(p) for p in peers]})
    if aspect == "capital":
        peers = _nonadjacent(rng, pools, e, rng.randint(0, 2))
        banned = pools.banned([e, *peers])
        names = [_draw(rng, pools.capitals, banned)]
        for _ in peers:
            names.append(_draw(rng, pools.capitals, banned, exclude=names))
        capital = names[0]
        return (_fake(e, {"capital": capital[0], "capital_aliases": list(capital[1:])}),
                {"capital_peers": [(_mid(p), c[0], "neighbour") for p, c in zip(peers, names[1:])],
                 "region": ""})
    if aspect == "economy":
        peers = _nonadjacent(rng, pools, e, rng.randint(0, 3))
        # Without peers sharing the currency, the passage names other countries' currencies.
        others = [] if peers else _nonadjacent(rng, pools, e, rng.randint(1, 2))
        banned = pools.banned([e, *peers, *others])
        currencies = [_draw(rng, pools.currencies, banned)]
        if rng.random() < 0.15:
            currencies.append(_draw(rng, pools.currencies, banned, exclude=currencies))
        other_currencies = []
        for other in others:
            other_currencies.append(_draw(rng, pools.currencies, banned,
                                          exclude=currencies + other_currencies))
        return (_fake(e, {"currencies": currencies}),
                {"currency_peers": [_mid(p) for p in peers],
                 "other_currencies": list(zip((_mid(o) for o in others), other_currencies))})
    if aspect == "people":
        peers = _nonadjacent(rng, pools, e, rng.randint(0, 3))
        banned = pools.banned([e, *peers])
        languages = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            languages.append(_draw(rng, pools.languages, banned, exclude=languages))
        demonym = _draw(rng, pools.demonyms, banned)
        return (_fake(e, {"languages": languages, "demonym": demonym[0],
                          "demonym_aliases": list(demonym[1:])}),
                {"language_peers": [_mid(p) for p in peers]})
    if aspect == "neighbours":
        named = _nonadjacent(rng, pools, e, rng.randint(2, 6))
        split = rng.randint(1, len(named) - 1) if len(named) > 1 else len(named)
        neighbours, beyond = named[:split], named[split:]
        ring = (_mid(neighbours[0]), [_mid(b) for b in beyond]) if beyond else None
        return (_fake(e, {"neighbours": [n["id"] for n in neighbours]}),
                {"neighbours": [_mid(n) for n in neighbours], "second_ring": ring, "farther": []})
    if aspect == "codes":
        banned = pools.banned([e])
        code = _draw(rng, pools.calling_codes, banned)
        tld = _draw(rng, pools.tlds, banned)
        return _fake(e, {"calling_code": code, "tld": tld}), {}
    raise ValueError(f"no counterfactual template for country aspect {aspect!r}")


def _other_elements(rng, pools, e, k):
    others = [x for x in pools.by_domain["element"] if x["id"] != e["id"]]
    return rng.sample(others, k)


def _differs(rng, pool, true_value, exclude=(), key=lambda v: v):
    """A pool value whose ``key`` is neither ``true_value`` nor that of ``exclude``: a false fact.

    Element facts are small numbers and short codes that recur across fields (period 4, group 4,
    atomic number 4), so each field is kept false on its own rather than banning every true string.
    """
    # Compared in exact match's normal form, where "1.4" and "14" are the same answer.
    taken = {_fold(str(true_value)), *(_fold(str(key(x))) for x in exclude)}
    return rng.choice([v for v in pool if _fold(str(key(v))) not in taken])


def _fake_element(e, aspect, pools, rng):
    """False facts about element ``e`` for one aspect, with false facts about the elements it names."""
    f = e["facts"]
    if aspect == "overview":
        return _fake(e, {"symbol": _differs(rng, pools.symbols, f["symbol"]),
                         "number": _differs(rng, pools.numbers, f["number"]),
                         "category": _differs(rng, pools.categories + [None], f.get("category")),
                         "block": _differs(rng, pools.blocks, f["block"])}), {}
    if aspect == "atomic":
        (peer,) = _other_elements(rng, pools, e, 1)
        first = operator.itemgetter(0)  # pool entries are (value, detail) tuples
        mass, by_number = _differs(rng, pools.masses, f["mass"], key=first)
        peer_mass = _differs(rng, pools.masses, peer["facts"]["mass"], exclude=[(mass,)], key=first)[0]
        # Radioactivity is only ever stated as "all of its isotopes are radioactive": say it
        # of stable elements only.
        radioactive = not f["radioactive"] and rng.random() < 0.3
        return (_fake(e, {"mass": mass, "mass_is_mass_number": by_number, "radioactive": radioactive,
                          "radius_pm": _differs(rng, pools.radii, f.get("radius_pm"))}),
                {"mass_peer": (_mid(peer), peer_mass)})
    if aspect == "physical":
        (peer,) = _other_elements(rng, pools, e, 1)
        first = operator.itemgetter(0)
        density = _differs(rng, pools.densities, f.get("density"), key=first)
        peer_density = _differs(rng, pools.densities, peer["facts"].get("density"), exclude=[density],
                                key=first)
        return (_fake(e, {"density": density[0], "density_prefix": density[1],
                          "density_suffix": density[2],
                          "crystal": _differs(rng, pools.crystals, f.get("crystal"))}),
                {"density_peer": (_mid(peer), peer_density[0])})
    if aspect == "position":
        group = _differs(rng, pools.groups, f.get("group"))
        # Named group mates must not truly belong to the group the passage puts them in.
        candidates = [x for x in pools.by_domain["element"]
                      if x["id"] != e["id"] and x["facts"].get("group") != group]
        before, after, *mates = rng.sample(candidates, 4)
        symbols = [_differs(rng, pools.symbols, before["facts"]["symbol"], exclude=[f["symbol"]])]
        symbols.append(_differs(rng, pools.symbols, after["facts"]["symbol"],
                                exclude=[f["symbol"], symbols[0]]))
        return (_fake(e, {"period": _differs(rng, pools.periods, f["period"]), "group": group,
                          "category": None}),
                {"previous": (_mid(before), symbols[0]), "next": (_mid(after), symbols[1]),
                 "group_mates": [_mid(m) for m in mates]})
    raise ValueError(f"no counterfactual template for element aspect {aspect!r}")


_CONSONANTS, _VOWELS = "bcdfghjklmnpqrstvwxyz", "aeiouy"
_ONSETS = ["", "", "br", "dr", "gr", "kr", "pl", "st", "tr", "sk", "th", "ch", "sh", "qu", "zv"]


def _syllable(rng):
    onset = rng.choice(_ONSETS) or rng.choice(_CONSONANTS)
    coda = rng.choice(_CONSONANTS) if rng.random() < 0.4 else ""
    return onset + rng.choice(_VOWELS) + (rng.choice(_VOWELS) if rng.random() < 0.15 else "") + coda


def invented_value(rng, like):
    """A made-up value shaped like ``like``: digits for digits ("79.904" -> "31.572"), a one- or
    two-letter symbol for a symbol, else one or two capitalised words of one to four random
    syllables ("Skelvornith", "Port Quadzel"), so that a reader learns to copy what it has never
    seen rather than a few familiar shapes. Half the time a one-word value keeps the last three
    letters of ``like`` ("Andorran" -> "Skelvorran"), so made-up demonyms and place names also
    end the way real ones do."""
    if any(c.isdigit() for c in like):
        return "".join(rng.choice("0123456789") if c.isdigit() else c for c in like).lstrip("0") or "7"
    if len(like) <= 2:
        return rng.choice(_CONSONANTS.upper()) + (rng.choice(_CONSONANTS + _VOWELS) if len(like) == 2 else "")
    two = rng.random() < 0.2
    words = ["".join(_syllable(rng) for _ in range(rng.randint(1, 2 if two else 4))).capitalize()
             for _ in range(2 if two else 1)]
    words = [w if len(w) > 2 else w + rng.choice(_VOWELS) + rng.choice(_CONSONANTS) for w in words]
    if not two and len(like) > 4 and like[-3:].isalpha() and like[-3:].islower() and rng.random() < 0.5:
        words = [words[0] + like[-3:]]
    return " ".join(words)


def _with_invented_value(text, answers, rng, true_answers):
    """``text`` with its canonical answer replaced by an invented value: (text, [value]), or None
    when the answer is not written out in the text. The value is drawn again until it differs
    from the answer it replaces and from the entity's true answers, and is not in the text yet."""
    pattern = re.compile(r"(?<!\w)" + re.escape(answers[0]) + r"(?!\w)")
    if not pattern.search(text):
        return None
    taken = {_fold(a) for a in [*answers, *true_answers]}
    while True:
        value = invented_value(rng, answers[0])
        if _fold(value) not in taken and not re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)",
                                                        text):
            return pattern.sub(value, text), [value]


def iter_counterfactual_examples(entities, seed=0, mismatch_rate=0.5, typed=0.0, invented=0.0):
    """An endless, deterministic stream of counterfactual QA examples (see :func:`counterfactual_examples`).

    Example i depends only on (``seed``, i): the stream walks through all entities in a fresh
    seeded order every len(entities) examples, so every name appears once per pass. With
    ``typed`` > 0, that share of the questions is asked as people type instead: a wording of the
    training pool ``PHRASINGS[relation]["train"]`` in a random surface form (lower case, no final
    mark); the passages, and the other questions, are the same as with ``typed=0``. With
    ``invented`` > 0, that share of the passages states a made-up value instead
    (:func:`invented_value`), which the reader can only answer by spelling out what it reads.
    """
    for name, share in (("typed", typed), ("invented", invented)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
    pools = _Pools(entities)
    if not pools.entities:
        raise ValueError("counterfactual examples need the entity records: pass load_entities()")
    for i in itertools.count():
        epoch, position = divmod(i, len(pools.entities))
        if position == 0:
            order = random.Random(f"{seed}/counterfactual-order/{epoch}").sample(
                pools.entities, len(pools.entities))
        e = order[position]
        rng = random.Random(f"{seed}/counterfactual/{i}")
        relation = rng.choice([r for r, (d, _) in RELATIONS.items() if d == e["domain"]])
        aspect = RELATIONS[relation][1]
        maker = _fake_country if e["domain"] == "country" else _fake_element
        fake, context = maker(e, aspect, pools, rng)
        text = RENDERERS[e["domain"]][aspect](fake, context, rng)
        answers = relation_answers(fake, relation, pools.index)
        if {_fold(a) for a in answers} & {_fold(a) for a in e["answers"].get(relation, [])}:
            raise RuntimeError(f"counterfactual example {i} states a true fact about {e['name']}")
        question, mismatch = None, rng.random() < mismatch_rate
        if mismatch:
            question = _question(relation, fake, text, rng, mismatch=True)
            mismatch = question is not None
        if question is None:
            question = _question(relation, fake, text, rng, mismatch=False)
        if typed:
            # Its own generator: the passage and the template question stay those of typed=0.
            typing = random.Random(f"{seed}/counterfactual-typed/{i}")
            if typing.random() < typed:
                question = phrase(typing.choice(PHRASINGS[relation]["train"]), fake,
                                  typing.choice(SURFACE_FORMS))
                mismatch = not shared_content_words(question, text, e["name"])
        if invented:
            making = random.Random(f"{seed}/counterfactual-invented/{i}")
            if making.random() < invented:
                text, answers = _with_invented_value(
                    text, answers, making, e["answers"].get(relation, [])) or (text, answers)
        pid = f"counterfactual/{seed}/{i}"
        yield {"id": f"{pid}/{relation}", "question": question, "answers": answers,
               "entity_id": e["id"], "entity": e["name"], "domain": e["domain"], "relation": relation,
               "passage_id": pid, "mismatch": mismatch, "split": "counterfactual",
               "title": e["name"], "text": text, "aspect": aspect}


def counterfactual_examples(entities, n, seed=0, mismatch_rate=0.5, typed=0.0, invented=0.0):
    """``n`` QA examples whose passages state false facts about real names, for training a reader.

    The passage and question templates of the real knowledge base are filled with entity names
    from the *whole* pool (``entities``, e.g. ``ragtutor.data.load_entities()``, test entities
    included) and values drawn from each relation's pool of real values, such that no value is a
    true fact of any entity the passage names. A reader trained on them sees every name token but
    can only answer by reading. Records have the fields of a real question record plus ``title``,
    ``text`` and ``aspect`` of the passage; ``split`` is "counterfactual". Deterministic in
    (``seed``, position): the first n examples are the same whatever n.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return list(itertools.islice(iter_counterfactual_examples(entities, seed, mismatch_rate, typed,
                                                               invented), n))
