"""The knowledge base's text: facts -> encyclopedia passages and the questions they answer.

An entity (a country or a chemical element) is a record with true ``facts``; this module turns it
into one short passage per *aspect*, like the sections of an encyclopedia article::

    country:  overview, geography, capital, economy, people, neighbours, codes
    element:  overview, atomic, physical, position

and asks one or two questions per *relation* (capital, currency, symbol, ...), each answered by
exactly one of those passages, its gold passage (:data:`RELATIONS` says which). Each sentence is
picked among several phrasings with a random generator seeded by the passage id, so the text varies
from passage to passage but is the same on every run. Passages mention other entities (neighbours,
countries that share a currency or language, adjacent elements) so that a retriever meets real
distractors.

A question is either *plain* (it shares a relation word with its gold passage: "What is the
currency of France?") or *vocabulary-mismatched*: it shares no content word with its gold passage
except the entity's name ("What money do people in France pay with?"), which is where BM25 fails
and a dense retriever can win. :func:`shared_content_words` is the test, applied to every question.

The build script ``data/build_kb.py`` gathers the facts and calls :func:`render_passages` and
:func:`render_questions`; the files it writes are loaded with :mod:`ragtutor.data`.
:mod:`ragtutor.counterfactual` fills the same templates with false facts, to train a reader.
"""
import functools
import random

from ragtutor.metrics import normalize_answer
from ragtutor.text import content_words, normalize_text

__all__ = ["ASPECTS", "RELATIONS", "QUESTIONS", "RENDERERS", "PHRASINGS", "SURFACE_FORMS",
           "render_passages", "render_questions", "render_new_phrasings", "relation_answers",
           "shared_content_words", "phrase", "phrasing_key", "drop_words", "seen_phrasings", "training_phrasings"]

ASPECTS = {
    "country": ("overview", "geography", "capital", "economy", "people", "neighbours", "codes"),
    "element": ("overview", "atomic", "physical", "position"),
}

# relation -> (domain, aspect of the passage that answers it)
RELATIONS = {
    "capital": ("country", "capital"),
    "continent": ("country", "geography"),
    "region": ("country", "geography"),
    "currency": ("country", "economy"),
    "language": ("country", "people"),
    "demonym": ("country", "people"),
    "neighbour": ("country", "neighbours"),
    "calling_code": ("country", "codes"),
    "internet_domain": ("country", "codes"),
    "symbol": ("element", "overview"),
    "atomic_number": ("element", "overview"),
    "atomic_mass": ("element", "atomic"),
    "density": ("element", "physical"),
    "period": ("element", "position"),
    "group": ("element", "position"),
}

# ----------------------------------------------------------------------------------------------
# Question templates. {name} is the entity as it reads mid-sentence ("the Netherlands", "iron").
# Plain phrasings reuse the passage's relation word; mismatched phrasings use words that no
# passage of that aspect contains (the builder checks every question against its gold passage).
# ----------------------------------------------------------------------------------------------
QUESTIONS = {
    "capital": {
        "plain": ["What is the capital of {name}?", "Which city is the capital of {name}?"],
        "mismatch": ["Where does the government of {name} sit?",
                     "Where is the seat of government of {name}?",
                     "In which town does the parliament of {name} meet?"],
    },
    "continent": {
        "plain": ["On which continent is {name}?", "Which continent is {name} on?"],
        "mismatch": ["Which landmass is {name} on?", "On what landmass does {name} lie?"],
    },
    "region": {
        "plain": ["In which region is {name}?", "Which region of the world is {name} part of?"],
        "mismatch": ["Whereabouts on the globe is {name}?", "What corner of the globe is {name} in?"],
    },
    "currency": {
        "plain": ["What is the currency of {name}?", "Which currency is used in {name}?"],
        "mismatch": ["What money do people in {name} pay with?", "What money is spent in {name}?",
                     "What do shoppers in {name} pay with?"],
    },
    "language": {
        "plain": ["What is the official language of {name}?", "Which language is official in {name}?"],
        "plain_many": ["Name an official language of {name}.",
                       "What is one official language of {name}?"],
        "mismatch": ["What tongue do people in {name} speak?", "What is the main tongue of {name}?"],
        "mismatch_many": ["Name a tongue spoken in {name}.", "What tongue do people in {name} speak?"],
    },
    "demonym": {
        "plain": ["What is the demonym for {name}?", "What are the inhabitants of {name} known as?"],
        "mismatch": ["What do you call someone from {name}?",
                     "What word describes a person from {name}?"],
    },
    "neighbour": {
        "plain": ["Which country borders {name}?",
                  "Name a country that shares a land border with {name}."],
        "mismatch": ["Which nation is next door to {name}?", "Name a state adjacent to {name}."],
    },
    "calling_code": {
        "plain": ["What is the international calling code of {name}?",
                  "What calling code does {name} have?"],
        "mismatch": ["What do you dial to phone {name} from abroad?",
                     "Which prefix do you dial to ring {name}?"],
    },
    "internet_domain": {
        "plain": ["What is the internet domain of {name}?", "Which top-level domain does {name} have?"],
        "mismatch": ["What do web addresses in {name} end with?",
                     "Which website suffix belongs to {name}?"],
    },
    "symbol": {
        "plain": ["What is the chemical symbol for {name}?", "What is the symbol of {name}?"],
        "mismatch": ["How is {name} abbreviated?", "Which abbreviation stands for {name}?"],
    },
    "atomic_number": {
        "plain": ["What is the atomic number of {name}?"],
        "mismatch": ["How many protons does an atom of {name} have?",
                     "How many protons are in the nucleus of {name}?"],
    },
    "atomic_mass": {
        "plain": ["What is the atomic mass of {name}?", "What is the standard atomic weight of {name}?"],
        "mismatch": ["How heavy is one atom of {name} in daltons?", "What does one atom of {name} weigh?"],
    },
    "density": {
        "plain": ["What is the density of {name}?"],
        "mismatch": ["How many grams does a cubic centimetre of {name} weigh?",
                     "What does one cubic centimetre of {name} weigh?",
                     "How many grams does a millilitre of {name} weigh?"],
    },
    "period": {
        "plain": ["In which period of the periodic table is {name}?", "Which period is {name} in?"],
        "mismatch": ["In which row is {name} placed?", "Which horizontal row holds {name}?"],
    },
    "group": {
        "plain": ["Which group of the periodic table is {name} in?", "What group does {name} belong to?"],
        "mismatch": ["In which column is {name} placed?", "Which vertical column holds {name}?"],
    },
}

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def _mid(entity):
    """The entity's name as it reads inside a sentence: "the Netherlands", "iron"."""
    if entity["domain"] == "element":
        return entity["name"].lower()
    return ("the " if entity["facts"].get("definite") else "") + entity["name"]


def _start(entity):
    """The entity's name at the start of a sentence: "The Netherlands", "Iron"."""
    return _upper_first(_mid(entity))


def _upper_first(text):
    return text[:1].upper() + text[1:]


def _join(items):
    """["a"] -> "a";  ["a", "b", "c"] -> "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_word(n):
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def _pick(rng, variants, **fields):
    text = rng.choice(variants).format(**fields)
    # A value that ends a sentence may end in a full stop itself ("Washington, D.C.").
    return text[:-1] if text.endswith("..") else text


def _region_text(region):
    return "the Caribbean" if region == "Caribbean" else region


def _area_text(area):
    """Area in km² rounded to three significant figures: 640679 -> "641,000", 2.02 -> "2.02"."""
    if area >= 1000:
        digits = len(str(int(area)))
        return f"{int(round(area, 3 - digits)):,}"
    if area >= 1:
        return f"{area:.0f}" if area >= 100 else f"{area:.3g}"
    return f"{area:.2f}"


@functools.lru_cache(maxsize=None)
def _fold(text):
    """Accent-free SQuAD normal form, used to compare answers with passages and with facts."""
    return normalize_answer(normalize_text(text))


def shared_content_words(question, passage_text, entity_name):
    """Content words the question shares with the passage, the entity's own name words excluded.

    ``(content_words(question) - content_words(entity_name)) & content_words(passage_text)``; an
    empty set makes the question vocabulary-mismatched with respect to that passage.
    """
    return (content_words(question) - content_words(entity_name)) & content_words(passage_text)


# ----------------------------------------------------------------------------------------------
# Passage templates, one renderer per aspect: renderer(entity, context, rng) -> text.
# ``entity`` holds the facts stated about the subject; ``context`` the distractor mentions
# (other entities and their facts). Real passages and counterfactual ones share these renderers.
# ----------------------------------------------------------------------------------------------
def _country_overview(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), official=f.get("official_name") or "",
                  iso2=f["iso2"], iso3=f["iso3"])
    if f["un_status"] == "observer":
        intro = ["{Name} is a sovereign state with observer status at the United Nations.",
                 "{Name} is an independent state and a permanent observer at the United Nations."]
    elif fields["official"]:
        intro = ["{Name}, officially the {official}, is a sovereign state and a member of the "
                 "United Nations.",
                 "The {official}, usually called {name}, is a sovereign country and one of the "
                 "member states of the United Nations.",
                 "{Name} (officially the {official}) is an independent country that belongs to "
                 "the United Nations."]
    else:
        intro = ["{Name} is a sovereign state and a member of the United Nations.",
                 "{Name} is an independent country and one of the member states of the "
                 "United Nations."]
    parts = [_pick(rng, intro, **fields)]
    others = f.get("other_names") or []
    if others:
        parts.append(_pick(rng, ["It is also known as {others}.", "Other names for it include {others}."],
                           others=_join(others)))
    parts.append(_pick(rng, ["Its ISO 3166 country codes are {iso2} and {iso3}.",
                             "International standards identify it by the two-letter code {iso2} "
                             "and the three-letter code {iso3}.",
                             "In the ISO 3166 standard it is listed as {iso3}, or {iso2} in short."],
                       **fields))
    return " ".join(parts)


def _country_geography(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), continent=f["continent"],
                  region=_region_text(f["region"]), area=_area_text(f["area_km2"]))
    if f["region"] == f["continent"]:  # UN M49 calls one region "South America" as well
        intro = ["{Name} is a country in the region and continent of {continent}.",
                 "{Name} lies on the continent of {continent}, in the region of the same name."]
    else:
        intro = ["{Name} is a country in {region}, a region of the continent of {continent}.",
                 "{Name} lies in the region of {region}, on the continent of {continent}.",
                 "On the continent of {continent}, {name} belongs to the region of {region}."]
    parts = [_pick(rng, intro, **fields),
             _pick(rng, ["It covers about {area} square kilometres.",
                         "Its total area is roughly {area} square kilometres.",
                         "The country has an area of about {area} square kilometres."], **fields)]
    peers = ctx["region_peers"]
    if len(peers) == 1:
        parts.append(_pick(rng, ["{peer} is also in {region}.",
                                 "Another country of {region} is {peer}."], peer=peers[0], **fields))
    elif peers:
        parts.append(_pick(rng, ["Other countries of {region} include {peers}.",
                                 "{Peers} are also in {region}."],
                           peers=_join(peers), Peers=_upper_first(_join(peers)),
                           **fields))
    return " ".join(parts)


def _country_capital(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), capital=f["capital"])
    parts = [_pick(rng, ["The capital of {name} is {capital}.", "{capital} is the capital of {name}.",
                         "The capital city of {name} is {capital}."], **fields)]
    if f.get("capital_note"):
        parts.append(f["capital_note"])
    for peer, capital, kind in ctx["capital_peers"]:
        if kind == "neighbour":
            parts.append(_pick(rng, ["Across the border, the capital of {peer} is {peer_capital}.",
                                     "{Peer}, a neighbour, has its capital at {peer_capital}."],
                               peer=peer, Peer=_upper_first(peer), peer_capital=capital))
        else:
            parts.append(_pick(rng, ["Elsewhere in {region}, the capital of {peer} is {peer_capital}.",
                                     "{Peer}, also in {region}, has its capital at {peer_capital}."],
                               peer=peer, Peer=_upper_first(peer), peer_capital=capital,
                               region=_region_text(ctx["region"])))
    return " ".join(parts)


def _currency_text(currency):
    return f"the {currency['name']} ({currency['code']})"


def _country_economy(e, ctx, rng):
    f = e["facts"]
    currencies = f["currencies"]
    first = currencies[0]
    fields = dict(Name=_start(e), name=_mid(e), cur=_currency_text(first), cur_name=first["name"],
                  code=first["code"])
    if len(currencies) == 1:
        parts = [_pick(rng, ["The currency of {name} is {cur}.",
                             "{Name} uses {cur} as its currency.",
                             "The official currency of {name} is {cur}."], **fields)]
    else:
        fields["others"] = _join(_currency_text(c) for c in currencies[1:])
        parts = [_pick(rng, ["The currency of {name} is {cur}, and {others} also circulates there.",
                             "{Name} uses {cur} as its currency, with {others} also in circulation."],
                       **fields)]
    peers = ctx["currency_peers"]
    if peers:
        parts.append(_pick(rng, ["The {cur_name} is also the currency of {peers}.",
                                 "{peers_start} also use the {cur_name}."],
                           peers=_join(peers), peers_start=_upper_first(_join(peers)),
                           **fields))
    else:
        variants = rng.sample(["Nearby, {peer} uses {other}.",
                               "By contrast, {peer} has {other} as its currency."], 2)
        for variant, (peer, currency) in zip(variants, ctx["other_currencies"]):
            parts.append(variant.format(peer=peer, other=_currency_text(currency)))
    parts.append(_pick(rng, ["In banking and foreign exchange the {cur_name} is identified by the "
                             "ISO 4217 code {code}.",
                             "Exchange rates for {name} are quoted against the {cur_name}, code {code}.",
                             "Its ISO 4217 currency code is {code}."], **fields))
    return " ".join(parts)


def _country_people(e, ctx, rng):
    f = e["facts"]
    languages = [language["name"] for language in f["languages"]]
    fields = dict(Name=_start(e), name=_mid(e), demonym=f.get("demonym") or "")
    parts = []
    working = f.get("language_role") == "working"
    if working and languages:
        # Sources that made national languages official (Sahel, 2023-2025) keep French as a
        # working language; the passage says only that.
        fields["languages"] = _join(languages)
        parts.append(_pick(rng, ["{languages} serves as a working language of the state in {name}.",
                                 "In {name}, {languages} is used as a working language of the state."],
                           **fields))
    elif len(languages) == 1:
        fields["language"] = languages[0]
        parts.append(_pick(rng, ["The official language of {name} is {language}.",
                                 "{language} is the official language of {name}.",
                                 "In {name}, the official language is {language}."], **fields))
    elif languages:
        # "include" rather than "are": some sources list only the main official languages.
        fields["languages"] = _join(languages)
        parts.append(_pick(rng, ["Official languages of {name} include {languages}.",
                                 "{languages} are official languages of {name}.",
                                 "In {name}, the official languages include {languages}."], **fields))
    if fields["demonym"]:
        parts.append(_pick(rng, ["The inhabitants of {name} are known as {demonym}.",
                                 "The demonym for {name} is {demonym}.",
                                 "Its inhabitants are known by the demonym {demonym}."], **fields))
    peers = ctx["language_peers"]
    if fields["demonym"] and not peers:
        parts.append(_pick(rng, ["The adjective {demonym} refers to {name} and its inhabitants.",
                                 "Things and inhabitants of {name} are described as {demonym}."],
                           **fields))
    if len(languages) == 1 and not peers and not working:
        parts.append(_pick(rng, ["{language} is used in its government, courts and schools.",
                                 "Its government, courts and schools work in {language}."],
                           language=languages[0]))
    if peers and languages:
        also = "" if working else " also"
        have = "has" if len(peers) == 1 else "have"
        parts.append(_pick(rng, ["{language} is" + also + " an official language in {peers}.",
                                 "{peers_start}" + also + f" {have} {{language}} as an official language."],
                           language=languages[0], peers=_join(peers),
                           peers_start=_upper_first(_join(peers))))
    return " ".join(parts)


def _country_neighbours(e, ctx, rng):
    fields = dict(Name=_start(e), name=_mid(e))
    neighbours = ctx["neighbours"]
    if not neighbours:
        parts = [_pick(rng, ["{Name} has no land borders with other countries.",
                             "{Name} shares no land border with any other country."], **fields),
                 _pick(rng, ["All of its international boundaries lie at sea.",
                             "Its boundaries with other countries are all maritime."], **fields)]
        if ctx["farther"]:
            parts.append(_pick(rng, ["Other countries of the region, such as {others}, can be reached "
                                     "only across the sea.",
                                     "From there, the sea separates it from {others}."],
                               others=_join(ctx["farther"])))
        return " ".join(parts)
    fields.update(neighbours=_join(neighbours), count=_count_word(len(neighbours)))
    if len(neighbours) == 1:
        parts = [_pick(rng, ["{Name} has a single land border, with {neighbours}.",
                             "The only country bordering {name} is {neighbours}."], **fields)]
    else:
        parts = [_pick(rng, ["{Name} borders {neighbours}.",
                             "{Name} shares land borders with {neighbours}.",
                             "The countries bordering {name} are {neighbours}."], **fields),
                 _pick(rng, ["In total it has {count} neighbouring countries.",
                             "That makes {count} countries on its borders."], **fields)]
    if len(neighbours) == 1 and ctx["farther"]:
        parts.append(_pick(rng, ["Farther away, {others} lie in the same region.",
                                 "{Others} are in the same region, but farther away."],
                           others=_join(ctx["farther"]),
                           Others=_upper_first(_join(ctx["farther"]))))
    if ctx["second_ring"]:
        peer, beyond = ctx["second_ring"]
        parts.append(_pick(rng, ["{Peer} in turn borders {beyond}.",
                                 "Beyond its own borders, {peer} also touches {beyond}."],
                           peer=peer, Peer=_upper_first(peer), beyond=_join(beyond)))
    return " ".join(parts)


def _country_codes(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), code=f["calling_code"], tld=f["tld"])
    return " ".join([
        _pick(rng, ["The international calling code of {name} is {code}.",
                    "Calls to {name} from abroad begin with the calling code {code}.",
                    "{Name} uses the international calling code {code}."], **fields),
        _pick(rng, ["Its internet country code top-level domain is {tld}.",
                    "The top-level domain for {name} on the internet is {tld}.",
                    "On the internet, {name} has the top-level domain {tld}."], **fields),
        _pick(rng, ["The ITU assigns calling codes, while IANA delegates country domains such as {tld}.",
                    "Calling codes are assigned by the ITU and country domains are delegated by IANA.",
                    "Both codes follow international standards: the ITU sets calling codes and IANA "
                    "manages top-level domains."], **fields),
    ])


def _element_overview(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), symbol=f["symbol"], number=f["number"],
                  category=f.get("category") or "", block=f["block"])
    parts = [_pick(rng, ["{Name} is a chemical element with the symbol {symbol} and atomic number {number}.",
                         "{Name} (symbol {symbol}) is the chemical element with atomic number {number}.",
                         "With atomic number {number}, {name} is the chemical element whose symbol is "
                         "{symbol}."], **fields)]
    if fields["category"]:
        article = "an" if fields["category"][0] in "aeiou" else "a"
        parts.append(_pick(rng, ["It is classed as {article} {category}.",
                                 "Chemists count it as {article} {category}."],
                           article=article, **fields))
    parts.append(_pick(rng, ["It belongs to the {block}-block of the periodic table.",
                             "In the periodic table it is {an} {block}-block element."],
                       an="an" if fields["block"] in "fs" else "a", **fields))
    if e.get("aliases"):
        parts.append(_pick(rng, ["Its name is also spelled {alias}.", "It is also written {alias}."],
                           alias=e["aliases"][0].lower()))
    return " ".join(parts)


def _element_atomic(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), mass=f["mass"])
    if f["mass_is_mass_number"]:
        parts = [_pick(rng, ["{Name} has no stable isotopes; its atomic mass is usually given as {mass}, "
                             "the mass number of a long-lived isotope.",
                             "The atomic mass of {name} is quoted as {mass}, the mass number of a "
                             "long-lived isotope, because it has no stable isotopes."], **fields)]
    else:
        parts = [_pick(rng, ["The atomic mass of {name} is {mass}.",
                             "{Name} has a standard atomic weight of {mass}.",
                             "{Name} has an atomic mass of {mass} u."], **fields)]
        if f["radioactive"]:
            parts.append("All of its isotopes are radioactive.")
    if f.get("radius_pm"):
        parts.append(_pick(rng, ["Its covalent radius is about {radius} picometres.",
                                 "It has a covalent radius of roughly {radius} pm."],
                           radius=f["radius_pm"]))
    peer = ctx["mass_peer"]
    if peer:
        parts.append(_pick(rng, ["By comparison, {peer} has an atomic mass of {peer_mass}.",
                                 "{Peer}, its neighbour in the table, has an atomic mass of {peer_mass}."],
                           peer=peer[0], Peer=_upper_first(peer[0]), peer_mass=peer[1]))
    return " ".join(parts)


def _density_text(f):
    return f"{f['density_prefix']}{f['density']} g/cm3{f['density_suffix']}"


def _element_physical(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), density=_density_text(f), crystal=f.get("crystal") or "")
    parts = [_pick(rng, ["{Name} has a density of {density}.", "The density of {name} is {density}.",
                         "Measured in bulk, {name} has a density of {density}."], **fields)]
    if fields["crystal"] == "diatomic molecules":
        parts.append("It occurs as diatomic molecules.")
    elif fields["crystal"] == "single atoms":
        parts.append("It occurs as single atoms rather than molecules.")
    elif fields["crystal"]:
        parts.append(_pick(rng, ["Solid {name} has a {crystal} crystal structure.",
                                 "Its crystals have a {crystal} structure."], **fields))
    peer = ctx["density_peer"]
    if peer:
        parts.append(_pick(rng, ["For comparison, {peer} has a density of {peer_density} g/cm3.",
                                 "Nearby in the table, {peer} has a density of {peer_density} g/cm3."],
                           peer=peer[0], peer_density=peer[1]))
    return " ".join(parts)


def _element_position(e, ctx, rng):
    f = e["facts"]
    fields = dict(Name=_start(e), name=_mid(e), period=f["period"], group=f.get("group"),
                  series="lanthanides" if f.get("category") == "lanthanide" else "actinides")
    if fields["group"] is None:
        parts = [_pick(rng, ["{Name} is in period {period} of the periodic table, among the {series} "
                             "of the f-block, which carry no group number.",
                             "In the periodic table, {name} sits in period {period} with the {series}, "
                             "an f-block series outside the numbered groups."], **fields)]
    else:
        parts = [_pick(rng, ["{Name} is in period {period} and group {group} of the periodic table.",
                             "In the periodic table, {name} sits in group {group}, period {period}.",
                             "{Name} occupies period {period}, group {group}, of the periodic table."],
                       **fields)]
    before, after = ctx["previous"], ctx["next"]
    if before and after:
        parts.append(_pick(rng, ["It lies between {b} ({bs}) and {a} ({as_}).",
                                 "Its neighbours by atomic number are {b} ({bs}) and {a} ({as_})."],
                           b=before[0], bs=before[1], a=after[0], as_=after[1]))
    elif after:
        parts.append(f"It is followed by {after[0]} ({after[1]}).")
    elif before:
        parts.append(f"It comes right after {before[0]} ({before[1]}).")
    if ctx["group_mates"]:
        mates = _join(ctx["group_mates"])
        parts.append(_pick(rng, ["Other members of its group include {mates}.",
                                 "{Mates} share its group."], mates=mates, Mates=_upper_first(mates)))
    return " ".join(parts)


RENDERERS = {
    "country": {"overview": _country_overview, "geography": _country_geography,
                "capital": _country_capital, "economy": _country_economy, "people": _country_people,
                "neighbours": _country_neighbours, "codes": _country_codes},
    "element": {"overview": _element_overview, "atomic": _element_atomic,
                "physical": _element_physical, "position": _element_position},
}


# ----------------------------------------------------------------------------------------------
# Answers
# ----------------------------------------------------------------------------------------------
def _unique(items):
    seen, out = set(), []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _calling_code_answers(code):
    """'+1-268' -> ['+1-268', '+1 268', '1-268', '+1268', '+1'];  '+33' -> ['+33', '33']."""
    digits = code.lstrip("+")
    if "-" in digits:  # North American Numbering Plan: country code 1 plus an area code
        country, area = digits.split("-")
        return [code, f"+{country} {area}", digits, f"+{country}{area}", f"+{country}"]
    return [code, digits]


def relation_answers(entity, relation, index):
    """Every acceptable answer to ``relation`` about ``entity``, the canonical one first.

    ``index`` maps entity ids to entity records (needed for neighbours' names and aliases).
    Returns an empty list when the entity has no such fact.
    """
    f = entity["facts"]
    if relation == "capital":
        return _unique([f["capital"], *f.get("capital_aliases", [])]) if f.get("capital") else []
    if relation in ("continent", "region"):
        return [f[relation]]
    if relation == "currency":
        return _unique(a for c in f["currencies"] for a in [c["name"], c["code"], *c.get("aliases", [])])
    if relation == "language":
        return _unique(a for lang in f["languages"] for a in [lang["name"], *lang.get("aliases", [])])
    if relation == "demonym":
        return _unique([f["demonym"], *f.get("demonym_aliases", [])]) if f.get("demonym") else []
    if relation == "neighbour":
        return _unique(a for i in f["neighbours"] for a in [index[i]["name"], *index[i]["aliases"]])
    if relation == "calling_code":
        return _calling_code_answers(f["calling_code"])
    if relation == "internet_domain":
        return [f["tld"]]
    if relation == "symbol":
        return [f["symbol"]]
    if relation == "atomic_number":
        return [str(f["number"])]
    if relation == "atomic_mass":
        return [f["mass"]]
    if relation == "density":
        return [f["density"], f"{f['density']} g/cm3"] if f.get("density") else []
    if relation == "period":
        return [str(f["period"]), f"period {f['period']}"]
    if relation == "group":
        return [str(f["group"]), f"group {f['group']}"] if f.get("group") else []
    raise ValueError(f"unknown relation {relation!r}; known relations: {sorted(RELATIONS)}")


# ----------------------------------------------------------------------------------------------
# The real knowledge base
# ----------------------------------------------------------------------------------------------
def _has_aspect(entity, aspect):
    # A physical-properties section needs a measured density; the sources give none for the
    # heaviest elements, and a section without facts would say nothing.
    return not (aspect == "physical" and not entity["facts"].get("density"))


def _real_context(e, aspect, index, groups, rng):
    """Distractor mentions for a real passage: other entities and their true facts."""
    f = e["facts"]
    if e["domain"] == "element":
        return _element_context(f, aspect, groups, rng)

    def others(key, value):  # other countries sharing a region, currency or language
        return [index[i] for i in groups[key].get(value, []) if i != e["id"]]

    def sample(items, k):
        return rng.sample(items, min(k, len(items)))

    neighbours = [index[i] for i in f["neighbours"]]
    farther = [p for p in others("region", f["region"]) if p not in neighbours]
    if aspect == "geography":
        return {"region_peers": [_mid(p) for p in sample(others("region", f["region"]), 3)]}
    if aspect == "capital":  # two other capitals: neighbours' first, then the region's
        chosen = [(p, "neighbour") for p in sample(neighbours, 2)]
        chosen += [(p, "region") for p in sample(farther, 2 - len(chosen))]
        return {"capital_peers": [(_mid(p), p["facts"]["capital"], kind) for p, kind in chosen],
                "region": f["region"]}
    if aspect == "economy":
        code = f["currencies"][0]["code"]
        nearby = [p for p in neighbours or farther if p["facts"]["currencies"][0]["code"] != code]
        return {"currency_peers": [_mid(p) for p in sample(others("currency", code), 3)],
                "other_currencies": [(_mid(p), p["facts"]["currencies"][0]) for p in sample(nearby, 2)]}
    if aspect == "people":
        peers = others("language", f["languages"][0]["name"]) if f["languages"] else []
        return {"language_peers": [_mid(p) for p in sample(peers, 3)]}
    if aspect == "neighbours":
        beyond = {n["id"]: [index[i] for i in n["facts"]["neighbours"] if i != e["id"]] for n in neighbours}
        candidates = [n for n in neighbours if beyond[n["id"]]]
        ring = None
        if candidates:
            peer = rng.choice(candidates)
            ring = (_mid(peer), [_mid(b) for b in sample(beyond[peer["id"]], 3)])
        return {"neighbours": [_mid(n) for n in neighbours], "second_ring": ring,
                "farther": [_mid(p) for p in sample(farther, 2)]}
    return {}


def _element_context(f, aspect, groups, rng):
    before, after = groups["number"].get(f["number"] - 1), groups["number"].get(f["number"] + 1)
    if aspect == "atomic":
        peer = before or after
        return {"mass_peer": (_mid(peer), peer["facts"]["mass"])}
    if aspect == "physical":
        peers = [p for p in (before, after) if p and p["facts"].get("density")]
        return {"density_peer": (_mid(peers[0]), peers[0]["facts"]["density"]) if peers else None}
    if aspect == "position":
        mates = [m for m in groups["group"].get(f.get("group"), []) if m["facts"]["number"] != f["number"]]
        return {"previous": (_mid(before), before["facts"]["symbol"]) if before else None,
                "next": (_mid(after), after["facts"]["symbol"]) if after else None,
                "group_mates": [_mid(m) for m in _sample_sorted(rng, mates, 3)]}
    return {}


def _sample_sorted(rng, items, k):
    """``k`` items drawn without replacement, kept in their original order."""
    chosen = set(rng.sample(range(len(items)), min(k, len(items))))
    return [item for i, item in enumerate(items) if i in chosen]


def _groups(entities):
    """Indexes the distractor mentions are drawn from."""
    groups = {"region": {}, "currency": {}, "language": {}, "number": {}, "group": {}}
    for e in entities:
        f = e["facts"]
        if e["domain"] == "country":
            groups["region"].setdefault(f["region"], []).append(e["id"])
            for c in f["currencies"]:
                groups["currency"].setdefault(c["code"], []).append(e["id"])
            for lang in f["languages"]:
                groups["language"].setdefault(lang["name"], []).append(e["id"])
        else:
            groups["number"][f["number"]] = e
            if f.get("group"):
                groups["group"].setdefault(f["group"], []).append(e)
    return groups


def render_passages(entities, seed=0):
    """One passage per (entity, aspect): records with id, title, text, entity_id, domain, aspect.

    ``entities`` are entity records (``id``, ``name``, ``domain``, ``aliases``, ``facts``). Each
    passage draws its phrasing and distractors from its own generator, seeded by ``seed`` and the
    passage id ("FRA/capital").
    """
    index = {e["id"]: e for e in entities}
    groups = _groups(entities)
    passages = []
    for e in entities:
        for aspect in ASPECTS[e["domain"]]:
            if not _has_aspect(e, aspect):
                continue
            pid = f"{e['id']}/{aspect}"
            rng = random.Random(f"{seed}/passage/{pid}")
            context = _real_context(e, aspect, index, groups, rng)
            text = RENDERERS[e["domain"]][aspect](e, context, rng)
            passages.append({"id": pid, "title": e["name"], "text": text, "entity_id": e["id"],
                             "domain": e["domain"], "aspect": aspect})
    return passages


def _templates(relation, entity, mismatch):
    table = QUESTIONS[relation]
    kind = "mismatch" if mismatch else "plain"
    if relation == "language" and len(entity["facts"]["languages"]) > 1:
        kind += "_many"
    return table[kind]


def _question(relation, entity, passage_text, rng, mismatch):
    """A question about ``relation`` whose overlap with the gold passage matches its kind.

    Plain: shares at least one content word besides the entity's name. Mismatched: shares none.
    Returns None when no template of that kind qualifies for this passage.
    """
    passage_words = content_words(passage_text) - content_words(entity["name"])
    candidates = []
    for template in _templates(relation, entity, mismatch):
        question = template.format(name=_mid(entity))
        if passage_words.isdisjoint(content_words(question)) == mismatch:
            candidates.append(question)
    return rng.choice(candidates) if candidates else None


def render_questions(entities, passages, seed=0, mismatch_rate=0.5):
    """Questions for every (entity, relation) with a known answer.

    Each pair gets a plain question; with probability ``mismatch_rate`` (seeded by the pair) it
    also gets a vocabulary-mismatched one. Records: id ("FRA/capital/0" plain, ".../1" mismatched),
    question, answers (canonical first, then aliases), entity_id, entity, domain, relation,
    passage_id, mismatch, split (the entity's split).
    """
    index = {e["id"]: e for e in entities}
    texts = {p["id"]: p["text"] for p in passages}
    questions = []
    for e in entities:
        for relation, (domain, aspect) in RELATIONS.items():
            if domain != e["domain"] or relation in e.get("skip_relations", ()):
                continue
            answers = e["answers"].get(relation)
            if not answers:
                continue
            pid = f"{e['id']}/{aspect}"
            rng = random.Random(f"{seed}/question/{e['id']}/{relation}")
            plain = _question(relation, e, texts[pid], rng, mismatch=False)
            if plain is None:
                raise RuntimeError(f"no plain question template shares a word with passage {pid}")
            kinds = [(0, plain, False)]
            if rng.random() < mismatch_rate:
                mismatched = _question(relation, e, texts[pid], rng, mismatch=True)
                if mismatched is not None:
                    kinds.append((1, mismatched, True))
            for k, question, is_mismatch in kinds:
                questions.append({"id": f"{e['id']}/{relation}/{k}", "question": question,
                                  "answers": list(answers), "entity_id": e["id"], "entity": e["name"],
                                  "domain": e["domain"], "relation": relation, "passage_id": pid,
                                  "mismatch": is_mismatch, "split": e["split"]})
    return questions


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Phrasings beyond the templates: how people type a question
# ----------------------------------------------------------------------------------------------
# QUESTIONS above write every split's questions ("seen" phrasings: a model trained on the train
# split has met each of them). PHRASINGS hold three more, disjoint pools per relation, in the
# forms people type — elliptical ("capital of {name}"), imperative ("Tell me ..."), possessive
# ("{poss} capital"), other word orders, words the passages never use:
#
#   "train"  only ever used to train models (questions drawn on the fly by the training scripts)
#   "dev"    only in the dev split's held-out questions, to aim at
#   "test"   only in the test split's held-out questions, to measure
#
# so a dev or test question in a "new" phrasing is worded as no training question is (the test
# suite checks it with the entity masked and case and punctuation folded). Fields: {name} /
# {Name} the entity as inside / at the start of a sentence ("the Netherlands" / "The
# Netherlands"), {poss} / {Poss} its possessive ("the Netherlands'", "Iron's").
PHRASINGS = {
    "capital": {
        "train": ["What city is the capital of {name}?", "Give the capital city of {name}.",
                  "{Poss} capital city?", "{name} capital", "the capital of {name} is what",
                  "Do you know the capital of {name}?", "Which city is {poss} capital?",
                  "What is the main city of government in {name}?"],
        "dev": ["capital of {name}", "Tell me the capital of {name}.",
                "{Poss} capital is which city?", "where's the government of {name} based"],
        "test": ["capital city of {name}", "Which city serves as {poss} capital?",
                 "Name the capital of {name}.", "what city is {name} governed from"],
    },
    "continent": {
        "train": ["What continent is {name} in?", "{name} continent", "Give the continent of {name}.",
                  "{Poss} continent?", "Which continent does {name} belong to?",
                  "On what part of the world's land is {name}?"],
        "dev": ["continent of {name}", "Tell me which continent {name} is on.",
                "{Poss} continent is which one?"],
        "test": ["which continent is {name} located on", "Name the continent of {name}.",
                 "{Name} lies on what continent?"],
    },
    "region": {
        "train": ["What region is {name} in?", "{name} region", "Give the region of {name}.",
                  "{Poss} region of the world?", "Which part of the world is {name} in?"],
        "dev": ["region of {name}", "Tell me the world region of {name}.",
                "{Name} is in which region?"],
        "test": ["which world region is {name} in", "Name the region {name} belongs to.",
                 "{Poss} world region?"],
    },
    "currency": {
        "train": ["What currency does {name} use?", "{name} currency", "Give the currency of {name}.",
                  "{Poss} currency?", "What do they pay with in {name}?",
                  "Which money is legal tender in {name}?"],
        "dev": ["currency of {name}", "Tell me the currency used in {name}.",
                "{Poss} money is called what?"],
        "test": ["what money does {name} use", "Name the currency of {name}.",
                 "{Name} pays in which currency?"],
    },
    "language": {
        "train": ["What language is official in {name}?", "{name} official language",
                  "Give an official language of {name}.", "{Poss} official language?",
                  "Which language does the government of {name} use?"],
        "dev": ["official language of {name}", "Tell me an official language of {name}.",
                "{Poss} official tongue is which language?"],
        "test": ["what language is spoken officially in {name}",
                 "Name one official language of {name}.", "{Name} has which official language?"],
    },
    "demonym": {
        "train": ["What are people from {name} called?", "{name} demonym",
                  "Give the demonym of {name}.", "{Poss} demonym?",
                  "What is the word for a native of {name}?"],
        "dev": ["demonym of {name}", "Tell me what people from {name} are called.",
                "a person from {name} is called what?"],
        "test": ["what do you call people from {name}", "Name the demonym for {name}.",
                 "{Poss} people are known as what?"],
    },
    "neighbour": {
        "train": ["What country borders {name}?", "{name} neighbouring country",
                  "Give a country bordering {name}.", "{Poss} neighbour?",
                  "Which country is on the border of {name}?"],
        "dev": ["neighbour of {name}", "Tell me a country that borders {name}.",
                "{Name} shares a border with which country?"],
        "test": ["which country is next to {name}", "Name a neighbour of {name}.",
                 "{Poss} neighbouring country is which one?"],
    },
    "calling_code": {
        "train": ["What is the dialling code of {name}?", "{name} phone code",
                  "Give the calling code of {name}.", "{Poss} calling code?",
                  "Which code do you dial for {name}?"],
        "dev": ["calling code of {name}", "Tell me the country code for phoning {name}.",
                "{Poss} dialling code is what?"],
        "test": ["what's the phone prefix for {name}", "Name the international dialling code of {name}.",
                 "{Name} has which calling code?"],
    },
    "internet_domain": {
        "train": ["What is the top-level domain of {name}?", "{name} internet domain",
                  "Give the internet domain of {name}.", "{Poss} web domain?",
                  "Which domain ending do websites of {name} use?"],
        "dev": ["internet domain of {name}", "Tell me the top-level domain of {name}.",
                "{Poss} country domain is what?"],
        "test": ["what's the web domain of {name}", "Name the internet suffix of {name}.",
                 "{Name} uses which top-level domain?"],
    },
    "symbol": {
        "train": ["What symbol does {name} have?", "{name} symbol", "Give the chemical symbol of {name}.",
                  "{Poss} symbol?", "How is {name} written in chemical formulas?"],
        "dev": ["symbol of {name}", "Tell me the chemical symbol for {name}.",
                "{Poss} element symbol is what?"],
        "test": ["chemical symbol for {name}", "Name the symbol of the element {name}.",
                 "{Name} is written with which symbol?"],
    },
    "atomic_number": {
        "train": ["What atomic number does {name} have?", "{name} atomic number",
                  "Give the atomic number of {name}.", "{Poss} atomic number?",
                  "How many protons has an atom of {name} got?"],
        "dev": ["atomic number of {name}", "Tell me the atomic number of {name}.",
                "{Poss} proton number is what?"],
        "test": ["what's the atomic number of {name}", "Name the atomic number of {name}.",
                 "{Name} has which atomic number?"],
    },
    "atomic_mass": {
        "train": ["What atomic mass does {name} have?", "{name} atomic mass",
                  "Give the atomic weight of {name}.", "{Poss} atomic mass?",
                  "How much does an atom of {name} weigh?"],
        "dev": ["atomic mass of {name}", "Tell me the atomic weight of {name}.",
                "{Poss} atomic weight is what?"],
        "test": ["what's the atomic weight of {name}", "Name the standard atomic mass of {name}.",
                 "{Name} has what atomic mass?"],
    },
    "density": {
        "train": ["What density does {name} have?", "{name} density", "Give the density of {name}.",
                  "{Poss} density?", "How heavy is a cubic centimetre of {name}?"],
        "dev": ["density of {name}", "Tell me the density of {name}.", "How dense is {name}?"],
        "test": ["what's the density of {name}", "Name the density of {name} in g/cm3.",
                 "{Poss} density is what?"],
    },
    "period": {
        "train": ["What period is {name} in?", "{name} period", "Give the period of {name}.",
                  "{Poss} period?", "Which row of the periodic table is {name} in?"],
        "dev": ["period of {name}", "Tell me the period of {name}.", "{Name} sits in which period?"],
        "test": ["which period does {name} belong to", "Name the period of {name}.",
                 "{Poss} period number is what?"],
    },
    "group": {
        "train": ["What group is {name} in?", "{name} group", "Give the group of {name}.",
                  "{Poss} group?", "Which column of the periodic table is {name} in?"],
        "dev": ["group of {name}", "Tell me the group of {name}.", "{Name} sits in which group?"],
        "test": ["which group does {name} belong to", "Name the group of {name}.",
                 "{Poss} group number is what?"],
    },
}

# How a person may type any phrasing: as written, in lower case, without the final mark, or
# both. Training questions get the same surface forms (augmentation); it is the wording that is
# held out, not the casing.
SURFACE_FORMS = ("as written", "lower case", "no final mark", "lower case, no final mark")


def _possessive(text):
    return text + ("'" if text.endswith("s") else "'s")


def phrase(template, entity, form="as written"):
    """One question: ``template`` (from :data:`PHRASINGS` or :data:`QUESTIONS`) about ``entity``,
    typed in surface ``form`` (one of :data:`SURFACE_FORMS`)."""
    if form not in SURFACE_FORMS:
        raise ValueError(f"unknown surface form {form!r}: choose one of {SURFACE_FORMS}")
    mid = _mid(entity)
    question = template.format(name=mid, Name=_upper_first(mid), poss=_possessive(mid),
                               Poss=_upper_first(_possessive(mid)))
    if "lower case" in form:
        question = question.lower()
    if "no final mark" in form:
        question = question.rstrip("?.!")
    return question


def phrasing_key(question, entity_name):
    """The wording of a question with the entity masked and case, punctuation and accents folded:
    "Which city serves as Croatia's capital?" -> "which city serves as <e> s capital"."""
    masked = _fold(question).replace(_fold(entity_name), " <e> ") if _fold(entity_name) else _fold(question)
    return " ".join(masked.split())


def seen_phrasings(relation):
    """Every template of :data:`QUESTIONS` for ``relation`` (all kinds)."""
    return [t for kind in QUESTIONS[relation].values() for t in kind]


def training_phrasings(questions, entities, per_question=1, seed=0):
    """Questions to train on, asked as people type: for each of ``questions`` (the train split's),
    ``per_question`` more about the same fact, each a wording of ``PHRASINGS[relation]["train"]``
    in a random surface form. Records as the originals', with id ".../typed/j" and ``template``
    and ``form``. Only the train pool is used, so dev and test wordings stay unseen."""
    index = {e["id"]: e for e in entities}
    out = []
    for q in questions:
        rng = random.Random(f"{seed}/training-phrasing/{q['id']}")
        for j in range(per_question):
            template, form = rng.choice(PHRASINGS[q["relation"]]["train"]), rng.choice(SURFACE_FORMS)
            out.append({**q, "id": f"{q['id']}/typed/{j}", "mismatch": None,
                        "question": phrase(template, index[q["entity_id"]], form),
                        "template": template, "form": form})
    return out


def drop_words(question, entity_name, p, rng):
    """Word dropout for training questions: each word of ``question`` that is not part of
    ``entity_name`` (possessives included) is left out with probability ``p``, drawn from
    ``rng`` (a ``random.Random``). At least one such word always stays — a content word where
    there is one — so the question still says what it asks: "Give the currency of Chile." -> "currency of Chile." A model trained on
    such questions learns to answer from whichever relation word is there, not from a template."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p is a probability in [0, 1), got {p!r}")
    names = _fold(entity_name).split()
    words = question.split()
    keep = [any(_fold(w).startswith(n) for n in names) if _fold(w) else False for w in words]
    others = [i for i, k in enumerate(keep) if not k]
    if not others or not p:
        return question
    dropped = {i for i in others if rng.random() < p}
    # Keep a content word ("currency", "capital"...) where the question has one.
    content = [i for i in others if content_words(words[i])] or others
    if all(i in dropped for i in content):
        dropped.discard(rng.choice(content))
    return " ".join(w for i, w in enumerate(words) if i not in dropped)


def render_new_phrasings(entities, passages, split, seed=0):
    """One question in a phrasing of the ``split``'s own pool (:data:`PHRASINGS`) for every
    (entity, relation) of that split with a known answer, typed in a random surface form.

    Records have the fields of :func:`render_questions`' records (id "FRA/capital/new"; mismatch
    says whether the question shares no content word with its gold passage) plus ``phrasing``
    ("new"), ``template`` and ``form``.
    """
    if split not in ("dev", "test"):
        raise ValueError(f"held-out phrasings exist for the dev and test splits, not {split!r}")
    texts = {p["id"]: p["text"] for p in passages}
    questions = []
    for e in entities:
        if e["split"] != split:
            continue
        for relation, (domain, aspect) in RELATIONS.items():
            answers = e["answers"].get(relation)
            if domain != e["domain"] or relation in e.get("skip_relations", ()) or not answers:
                continue
            pid = f"{e['id']}/{aspect}"
            rng = random.Random(f"{seed}/new-phrasing/{e['id']}/{relation}")
            template = rng.choice(PHRASINGS[relation][split])
            form = rng.choice(SURFACE_FORMS)
            question = phrase(template, e, form)
            mismatch = not shared_content_words(question, texts[pid], e["name"])
            questions.append({"id": f"{e['id']}/{relation}/new", "question": question,
                              "answers": list(answers), "entity_id": e["id"], "entity": e["name"],
                              "domain": e["domain"], "relation": relation, "passage_id": pid,
                              "mismatch": mismatch, "split": split, "phrasing": "new",
                              "template": template, "form": form})
    return questions
