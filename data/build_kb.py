"""Build the course's knowledge base, deterministically and offline.

    python data/build_kb.py            write data/kb/ (passages, questions per split, entities, manifest)
    python data/build_kb.py --check    rebuild into a temporary folder and compare with data/kb/
    python data/build_kb.py --stats    print the datasheet's tables (markdown) for data/README.md

Facts come from pinned PyPI packages — countryinfo (countries), pycountry (names of ISO currency
and language codes, official country names) and periodictable (elements) — plus the committed list
of sovereign states in data/sources/sovereign_states.csv. Known gaps and outdated values in the
sources are corrected by the tables below, each with its reason; data/README.md lists them.

The text (passage and question templates) lives in ragtutor.templates, so that the counterfactual
training examples of later chapters use exactly the same sentences. Every output is a pure
function of the pinned sources and SEED: same bytes on every run, no time stamps, sorted keys.
"""
import argparse
import collections
import csv
import hashlib
import json
import os
import statistics
import sys
import tempfile
import unicodedata
from pathlib import Path

import periodictable
import pycountry
from countryinfo import CountryInfo

from ragtutor.templates import (ASPECTS, PHRASINGS, RELATIONS, relation_answers, render_new_phrasings,
                                render_passages, render_questions)
from ragtutor.metrics import exact_match

SEED = 0
HERE = Path(__file__).resolve().parent
OUT = HERE / "kb"
STATES_CSV = HERE / "sources" / "sovereign_states.csv"
TYPED_TSV = HERE / "sources" / "typed_questions_dev.tsv"
SPLITS = ("train", "dev", "test")
SPLIT_SHARE = {"dev": 0.15, "test": 0.15}  # the rest is train; by entity, within each domain
MISMATCH_RATE = 0.5  # chance that an (entity, relation) pair also gets a mismatched question
DATA_FILES = ("passages.jsonl", "questions_train.jsonl", "questions_dev.jsonl",
              "questions_test.jsonl", "questions_dev_new.jsonl", "questions_test_new.jsonl",
              "questions_dev_typed.jsonl", "entities.jsonl")
MANIFEST = "MANIFEST.sha256"
SOURCES = {"countryinfo": "1.0.1", "pycountry": "26.2.16", "periodictable": "2.1.0"}

# ----------------------------------------------------------------------------------------------
# Corrections to the sources: (entity, field, value, reason). Checked by hand against the
# countries' own constitutions and central banks as summarised in current encyclopedias.
# ----------------------------------------------------------------------------------------------
COUNTRY_FIXES = [
    # capitals
    ("KAZ", "capital", "Astana", "renamed back from Nur-Sultan to Astana in 2022"),
    ("KAZ", "capital_aliases", ["Nur-Sultan"], "the city's name from 2019 to 2022"),
    ("KAZ", "capital_note", "The city was called Nur-Sultan from 2019 to 2022.", "name change"),
    ("BDI", "capital", "Gitega", "political capital moved from Bujumbura to Gitega in 2019"),
    ("BDI", "capital_note", "Bujumbura, the former capital, is its largest city.", "former capital"),
    ("LKA", "capital", "Sri Jayawardenepura Kotte", "source gives Colombo, the executive capital"),
    ("LKA", "capital_aliases", ["Colombo"], "executive and commercial capital"),
    ("LKA", "capital_note", "Colombo is the executive and commercial capital.", "two capitals"),
    ("SWZ", "capital", "Mbabane", "source gives Lobamba only; Mbabane is the administrative capital"),
    ("SWZ", "capital_aliases", ["Lobamba"], "royal and legislative capital"),
    ("SWZ", "capital_note", "Lobamba is the royal and legislative capital.", "two capitals"),
    ("BOL", "capital_aliases", ["La Paz"], "seat of government"),
    ("BOL", "capital_note", "La Paz is the seat of government.", "two capitals"),
    ("ZAF", "capital_aliases", ["Cape Town", "Bloemfontein"], "legislative and judicial capitals"),
    ("ZAF", "capital_note", "Pretoria is the executive capital, Cape Town the legislative capital and "
     "Bloemfontein the judicial capital.", "three capitals"),
    ("NLD", "capital_note", "The Hague is the seat of government.", "capital and seat differ"),
    ("BEN", "capital_note", "Cotonou is the seat of government and largest city.", "capital and seat differ"),
    ("CIV", "capital_note", "Abidjan is its largest city and economic centre.",
     "capital and largest city differ"),
    ("TZA", "capital_note", "Dar es Salaam is its largest city.", "capital and largest city differ"),
    ("MYS", "capital_note", "Putrajaya is the administrative centre.", "capital and seat differ"),
    ("NRU", "capital_note", "Nauru has no official capital; government offices are in Yaren.",
     "no de jure capital"),
    ("ISR", "capital_note", "Most countries do not recognise it as the capital.", "disputed status"),
    ("ISR", "skip_relations", ["capital"], "disputed capital: no question is asked"),
    ("PSE", "capital", "East Jerusalem", "proclaimed capital; the source gives Ramallah"),
    ("PSE", "capital_aliases", ["Ramallah"], "administrative centre"),
    ("PSE", "capital_note", "Its administration is based in Ramallah.", "proclaimed and actual seat differ"),
    ("PSE", "skip_relations", ["capital"], "disputed capital: no question is asked"),
    ("VAT", "capital", "Vatican City", "source gives 'Vatican City State', the state's name"),
    ("USA", "capital", "Washington, D.C.", "punctuation"),
    ("USA", "capital_aliases", ["Washington"], "short form"),
    ("ISL", "capital", "Reykjavík", "accented spelling; the unaccented one is an alias"),
    ("UKR", "capital_aliases", ["Kiev"], "former English spelling"),
    ("MMR", "capital_aliases", ["Nay Pyi Taw"], "official romanisation"),
    ("GRD", "capital_aliases", ["Saint George's"], "spelled-out form"),
    ("ATG", "capital_aliases", ["St. John's"], "abbreviated form"),
    ("SMR", "capital_aliases", ["San Marino"], "short form"),
    ("LUX", "capital_aliases", ["Luxembourg City"], "long form"),
    ("DJI", "capital_aliases", ["Djibouti City"], "long form"),
    ("YEM", "capital_aliases", ["Sanaa"], "spelling"),
    ("KIR", "capital_aliases", ["Tarawa"], "the atoll"),
    ("TON", "capital_aliases", ["Nukualofa"], "spelling without the okina"),
    # currencies (ISO 4217 codes); fund codes such as BOV or CHW are not currencies in circulation
    ("BGR", "currencies", ["EUR"], "Bulgaria adopted the euro on 1 January 2026 (pycountry dropped BGN)"),
    ("HRV", "currencies", ["EUR"], "Croatia adopted the euro in 2023"),
    ("BLR", "currencies", ["BYN"], "redenominated in 2016 (BYR withdrawn)"),
    ("CUB", "currencies", ["CUP"], "convertible peso (CUC) withdrawn in 2021"),
    ("MRT", "currencies", ["MRU"], "redenominated in 2018 (MRO withdrawn)"),
    ("STP", "currencies", ["STN"], "redenominated in 2018 (STD withdrawn)"),
    ("SLE", "currencies", ["SLE"], "redenominated in 2022 (SLL withdrawn)"),
    ("VEN", "currencies", ["VES"], "redenominated in 2018 (VEF withdrawn)"),
    ("ZMB", "currencies", ["ZMW"], "redenominated in 2013 (ZMK withdrawn)"),
    ("ZWE", "currencies", ["ZWG"], "Zimbabwe Gold introduced in 2024"),
    ("SLV", "currencies", ["USD"], "the colón has not circulated since 2001"),
    ("BOL", "currencies", ["BOB"], "BOV is a fund code"),
    ("CHL", "currencies", ["CLP"], "CLF is a unit of account"),
    ("URY", "currencies", ["UYU"], "UYI is a fund code"),
    ("USA", "currencies", ["USD"], "USN and USS are fund codes"),
    ("CHE", "currencies", ["CHF"], "CHE and CHW are fund codes"),
    # official languages (ISO 639 codes)
    ("AFG", "languages", ["ps", "prs"], "official languages are Pashto and Dari"),
    ("AND", "languages", ["ca"], "Catalan is the only official language"),
    ("ARG", "languages", ["es"], "Guarani is official only in Corrientes province"),
    ("ARM", "languages", ["hy"], "Russian is not official"),
    ("AZE", "languages", ["az"], "Armenian is not official"),
    ("BLZ", "languages", ["en"], "Spanish is widely spoken but not official"),
    ("BDI", "languages", ["rn", "fr", "en"], "English became official in 2014"),
    ("CHE", "languages", ["de", "fr", "it", "rm"], "Romansh is a national language"),
    ("COD", "languages", ["fr"], "the other four are national, not official, languages"),
    ("COG", "languages", ["fr"], "Lingala is a national, not official, language"),
    ("CYP", "languages", ["el", "tr"], "Armenian is a minority language"),
    ("FJI", "languages", ["en", "fj", "hi"], "Urdu is not official"),
    ("GIN", "languages", ["fr"], "Fula is not official"),
    ("GNQ", "languages", ["es", "fr", "pt"], "Portuguese became official in 2010"),
    ("ISR", "languages", ["he"], "Arabic has had a special status since 2018"),
    ("LBN", "languages", ["ar"], "French is widely used but not official"),
    ("MKD", "languages", ["mk", "sq"], "Albanian became co-official in 2019"),
    ("MYS", "languages", ["ms"], "source lists none; Malay is the national language"),
    ("NAM", "languages", ["en"], "Afrikaans has not been official since 1990"),
    ("NOR", "languages", ["no"], "Bokmål and Nynorsk are written forms of Norwegian"),
    ("PHL", "languages", ["fil", "en"], "Filipino is official alongside English"),
    ("RWA", "languages", ["rw", "en", "fr", "sw"], "Swahili became official in 2017"),
    ("SRB", "languages", ["sr"], "source gives the invalid code 'rs'"),
    ("TJK", "languages", ["tg"], "Russian is a language of inter-ethnic communication, not official"),
    ("TKM", "languages", ["tk"], "Russian is not official"),
    ("TLS", "languages", ["tet", "pt"], "Tetum is official alongside Portuguese"),
    ("UZB", "languages", ["uz"], "Russian is not official"),
    ("ZAF", "languages", ["zu", "xh", "af", "en", "nso", "tn", "st", "ts", "ss", "ve", "nr"],
     "Northern Sotho was missing"),
    ("VAT", "languages", ["it"], "Italian is the state's language"),
    ("BFA", "language_role", "working", "French has been a working, not official, language since 2023"),
    ("BFA", "skip_relations", ["language"], "official languages changed in 2023"),
    ("MLI", "language_role", "working", "French has been a working, not official, language since 2023"),
    ("MLI", "skip_relations", ["language"], "official languages changed in 2023"),
    ("NER", "language_role", "working", "French has been a working, not official, language since 2025"),
    ("NER", "skip_relations", ["language"], "official languages changed in 2025"),
    # demonyms
    ("ATG", "demonym", "Antiguan and Barbudan", "source has a comma-separated pair"),
    ("ATG", "demonym_aliases", ["Antiguan"], "short form"),
    ("BIH", "demonym", "Bosnian and Herzegovinian", "source has a comma-separated pair"),
    ("BIH", "demonym_aliases", ["Bosnian"], "short form"),
    ("ARG", "demonym", "Argentine", "usual form"),
    ("ARG", "demonym_aliases", ["Argentinian", "Argentinean"], "variants"),
    ("CPV", "demonym", "Cape Verdean", "misspelled 'Cape Verdian'"),
    ("COM", "demonym", "Comorian", "usual form"),
    ("COM", "demonym_aliases", ["Comoran"], "source's form"),
    ("DJI", "demonym", "Djiboutian", "source gives the country name"),
    ("ECU", "demonym", "Ecuadorian", "usual form"),
    ("ECU", "demonym_aliases", ["Ecuadorean"], "source's form"),
    ("ISL", "demonym", "Icelandic", "adjectival form, like the others"),
    ("ISL", "demonym_aliases", ["Icelander"], "source's form (a noun)"),
    ("KGZ", "demonym", "Kyrgyzstani", "source's 'Kirghiz' is dated"),
    ("KGZ", "demonym_aliases", ["Kyrgyz"], "short form"),
    ("MDV", "demonym", "Maldivian", "misspelled 'Maldivan'"),
    ("TJK", "demonym", "Tajikistani", "source's 'Tadzhik' is dated"),
    ("TJK", "demonym_aliases", ["Tajik"], "short form"),
    ("SUR", "demonym", "Surinamese", "usual form"),
    ("SUR", "demonym_aliases", ["Surinamer"], "source's form"),
    ("GNB", "demonym", "Bissau-Guinean", "usual form"),
    ("GNB", "demonym_aliases", ["Guinea-Bissauan"], "source's form"),
    ("STP", "demonym", "São Toméan", "accented form; the unaccented one is an alias"),
    ("UZB", "demonym", "Uzbek", "usual form"),
    ("UZB", "demonym_aliases", ["Uzbekistani"], "source's form"),
    ("SAU", "demonym_aliases", ["Saudi"], "short form"),
    ("SVN", "demonym_aliases", ["Slovenian"], "variant"),
    ("TLS", "demonym_aliases", ["Timorese"], "short form"),
    ("TTO", "demonym", "Trinidadian and Tobagonian", "both islands"),
    ("TTO", "demonym_aliases", ["Trinidadian"], "source's form"),
    ("BFA", "demonym_aliases", ["Burkinabè"], "accented form"),
    ("BWA", "demonym_aliases", ["Botswanan"], "variant"),
    ("VAT", "demonym", "", "no established demonym; no question is asked"),
    # regions (UN M49 geoscheme) and borders
    ("SRB", "region", "Southern Europe", "UN M49 places Serbia in Southern Europe"),
    ("MNE", "region", "Southern Europe", "UN M49 places Montenegro in Southern Europe"),
    ("MMR", "borders", ["BGD", "CHN", "IND", "LAO", "THA"], "source lists Bhutan instead of India"),
    ("CYP", "borders", [], "the UK's sovereign base areas are not counted as a neighbour"),
    ("LKA", "borders", [], "Sri Lanka has no land border with India"),
    ("IND", "borders", ["BGD", "BTN", "MMR", "CHN", "NPL", "PAK"],
     "no land border with Sri Lanka; the border with Afghanistan is only claimed, through Kashmir"),
    ("CHN", "borders", ["AFG", "BTN", "MMR", "IND", "KAZ", "PRK", "KGZ", "LAO", "MNG", "NPL", "PAK", "RUS",
                        "TJK", "VNM"], "source omits Nepal (Hong Kong and Macau are not sovereign)"),
    ("KWT", "borders", ["IRQ", "SAU"], "source lists Iran instead of Iraq"),
    ("TCD", "borders", ["CMR", "CAF", "LBY", "NER", "NGA", "SDN"],
     "source lists South Sudan instead of Sudan"),
    ("SRB", "borders", ["HUN", "ROU", "BGR", "MKD", "HRV", "BIH", "MNE"],
     "the border with Albania runs only through Kosovo, which is not on the list"),
    ("SUR", "borders", ["BRA", "GUY"], "French Guiana (France) is an overseas border, as for Brazil"),
    ("EGY", "borders", ["ISR", "LBY", "SDN", "PSE"], "Gaza border"),
    ("ISR", "borders", ["EGY", "JOR", "LBN", "SYR", "PSE"], "border with Palestine"),
    ("JOR", "borders", ["IRQ", "ISR", "SAU", "SYR", "PSE"], "West Bank border"),
    # calling codes
    ("KAZ", "calling_code", "+7", "source gives 76 and 77, which are number ranges within +7"),
    ("VAT", "calling_code", "+39", "the assigned +379 is unused; Vatican numbers use Italy's +39"),
]

# Alternative names accepted in answers (besides the United Nations' and ISO's names).
COUNTRY_ALIASES = {
    "CZE": ["Czech Republic"], "CIV": ["Côte d'Ivoire"], "COG": ["Congo", "Congo-Brazzaville"],
    "COD": ["DR Congo", "DRC", "Congo-Kinshasa"], "MMR": ["Burma"], "SWZ": ["Swaziland"],
    "TUR": ["Türkiye"], "TLS": ["Timor-Leste"], "CPV": ["Cabo Verde"], "MKD": ["Macedonia"],
    "GBR": ["UK", "Britain", "Great Britain"], "USA": ["USA", "US", "United States of America"],
    "ARE": ["UAE"], "VAT": ["Holy See"], "PSE": ["State of Palestine"], "PRK": ["DPRK"],
    "KOR": ["Republic of Korea"], "NLD": ["Holland"], "BHS": ["The Bahamas"], "GMB": ["The Gambia"],
    "FSM": ["Federated States of Micronesia"], "LAO": ["Lao PDR"], "VNM": ["Viet Nam"],
    "RUS": ["Russian Federation"], "BRN": ["Brunei Darussalam"],
}
# Names that take "the" inside a sentence ("the Netherlands").
DEFINITE = {"ARE", "BHS", "CAF", "COD", "COG", "COM", "DOM", "GBR", "GMB", "MDV", "MHL", "NLD",
            "PHL", "SLB", "SYC", "USA"}

# English names of currencies where the ISO 4217 name is not the usual one.
CURRENCY_NAMES = {
    "XOF": ("West African CFA franc", ["CFA franc"]), "XAF": ("Central African CFA franc", ["CFA franc"]),
    "CNY": ("renminbi", ["yuan", "Chinese yuan"]), "USD": ("US dollar", ["United States dollar", "dollar"]),
    "GBP": ("pound sterling", ["British pound", "pound"]), "EUR": ("euro", []),
    "ILS": ("new shekel", ["Israeli new shekel", "shekel"]), "NIO": ("córdoba", ["Nicaraguan córdoba"]),
    "OMR": ("Omani rial", []), "UYU": ("Uruguayan peso", []), "VES": ("bolívar", ["Venezuelan bolívar"]),
    "TOP": ("paʻanga", ["pa'anga", "Tongan paʻanga"]), "TMT": ("Turkmen manat", ["manat"]),
    "UZS": ("Uzbek som", ["sum", "som"]), "KGS": ("Kyrgyz som", ["som"]),
    "BAM": ("convertible mark", ["Bosnia and Herzegovina convertible mark"]),
    "ISK": ("Icelandic króna", ["krona"]), "MNT": ("tögrög", ["tugrik"]),
    "CVE": ("Cape Verdean escudo", ["escudo"]), "SRD": ("Surinamese dollar", []),
    "AZN": ("Azerbaijani manat", ["manat"]), "KRW": ("South Korean won", ["won"]),
    "KPW": ("North Korean won", ["won"]), "ZWG": ("Zimbabwe Gold", ["ZiG"]), "PEN": ("sol", ["Peruvian sol"]),
    "STN": ("dobra", []), "SLE": ("leone", []), "MRU": ("ouguiya", []),
    "BYN": ("Belarusian ruble", ["ruble"]),
    "GHS": ("Ghanaian cedi", ["cedi", "Ghana cedi"]), "AED": ("UAE dirham", ["dirham"]),
}
# English names of languages where ISO 639's name needs tidying; aliases after the name.
LANGUAGE_NAMES = {
    "el": ("Greek", ["Modern Greek"]), "ms": ("Malay", []), "ne": ("Nepali", []),
    "ps": ("Pashto", ["Pushto"]),
    "sw": ("Swahili", ["Kiswahili"]), "to": ("Tongan", []), "ky": ("Kyrgyz", ["Kirghiz"]),
    "dv": ("Dhivehi", ["Divehi", "Maldivian"]), "ht": ("Haitian Creole", ["Haitian"]), "na": ("Nauruan", []),
    "rn": ("Kirundi", ["Rundi"]), "ss": ("Swati", ["Swazi", "siSwati"]),
    "st": ("Sesotho", ["Southern Sotho"]),
    "tn": ("Setswana", ["Tswana"]), "nd": ("Northern Ndebele", ["North Ndebele"]),
    "nr": ("Southern Ndebele", ["South Ndebele"]), "nso": ("Northern Sotho", ["Sepedi", "Pedi"]),
    "fa": ("Persian", ["Farsi"]), "sl": ("Slovene", ["Slovenian"]), "mi": ("Māori", []),
    "ny": ("Chichewa", ["Chewa", "Nyanja"]), "ts": ("Tsonga", ["Xitsonga"]), "ve": ("Venda", ["Tshivenda"]),
    "prs": ("Dari", []), "tet": ("Tetum", []), "fil": ("Filipino", []), "cnr": ("Montenegrin", []),
}
# periodictable uses American spellings; the knowledge base uses IUPAC's.
ELEMENT_NAMES = {"aluminum": ("Aluminium", ["Aluminum"]), "cesium": ("Caesium", ["Cesium"]),
                 "sulfur": ("Sulfur", ["Sulphur"])}
CRYSTALS = {"BCC": "body-centred cubic", "fcc": "face-centred cubic", "hcp": "hexagonal close-packed",
            "Diamond": "diamond cubic", "SC": "simple cubic", "Cubic": "cubic", "Tetragonal": "tetragonal",
            "Orthorhombic": "orthorhombic", "Rhombohedral": "rhombohedral", "Monoclinic": "monoclinic",
            "diatom": "diatomic molecules", "atom": "single atoms"}
# Elements with no stable isotope: technetium, promethium, and everything from polonium on.
RADIOACTIVE = {43, 61, *range(84, 119)}


# ----------------------------------------------------------------------------------------------
# Countries
# ----------------------------------------------------------------------------------------------
def _plain(text):
    """The unaccented spelling: "Bogotá" -> "Bogota"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _with_plain(names):
    """``names`` plus their unaccented spellings, without duplicates, order kept."""
    out = []
    for name in names:
        for variant in (name, _plain(name)):
            if variant and variant not in out:
                out.append(variant)
    return out


def _is_latin(text):
    return all(c.isascii() or unicodedata.name(c, "").startswith("LATIN") for c in text)


def read_states(path=STATES_CSV):
    """Rows of the sovereign-states list: alpha3, name, un_name, un_status (comment lines skipped)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _currency(code):
    iso = pycountry.currencies.get(alpha_3=code)
    if iso is None:
        raise ValueError(f"currency {code} is not in pycountry {SOURCES['pycountry']}: add a fix")
    name, aliases = CURRENCY_NAMES.get(code, (None, []))
    if name is None:  # "Algerian Dinar" -> "Algerian dinar": the currency noun is lower case
        words = iso.name.split()
        name = " ".join(words[:-1] + [words[-1].lower()])
    return {"code": code, "name": name, "aliases": _with_plain([iso.name, *aliases])[:6]}


def _language(code):
    name, aliases = LANGUAGE_NAMES.get(code, (None, []))
    if name is None:
        key = "alpha_2" if len(code) == 2 else "alpha_3"
        iso = pycountry.languages.get(**{key: code})
        if iso is None:
            raise ValueError(f"language code {code!r} is not in pycountry: add a fix")
        name = iso.name
    return {"name": name, "aliases": [a for a in _with_plain([name, *aliases]) if a != name]}


def _calling_code(codes):
    """countryinfo's list -> one code: ['33'] -> '+33'; ['1268'] or ['1-268'] -> '+1-268'."""
    code = codes[0].replace("-", "")
    if code.startswith("1") and len(code) == 4:
        return f"+1-{code[1:]}"
    return f"+{code}"


def _continent(region_name, subregion):
    if region_name == "Americas":
        return "South America" if subregion == "South America" else "North America"
    return region_name


def load_countries():
    """Country entity records (facts with fixes applied), sorted by ISO alpha-3 code."""
    fixes = collections.defaultdict(dict)
    for alpha3, field, value, _reason in COUNTRY_FIXES:
        fixes[alpha3][field] = value
    states = read_states()
    sovereign = {row["alpha3"] for row in states}
    records = []
    for row in states:
        a3 = row["alpha3"]
        # countryinfo has two files for Palestine; look it up by the name of the complete one.
        info = CountryInfo("Palestine" if a3 == "PSE" else a3).info()
        fix = fixes[a3]
        iso = pycountry.countries.get(alpha_3=a3)
        official = (getattr(iso, "official_name", "") or "").removeprefix("the ")
        official = "" if "(" in official or official == row["name"] else official
        region = fix.get("region") or info.get("intermediateregion") or info["subregion"]
        borders = fix.get("borders", info.get("borders") or [])
        others = [s.strip() for s in info.get("altSpellings", [])]
        known = {_plain(n) for n in (row["name"], row["un_name"], official)}
        others = [s for s in others if len(s) > 3 and "," not in s and _is_latin(s) and not s.isupper()
                  and _plain(s) not in known][:2]
        aliases = [row["un_name"], getattr(iso, "common_name", ""), official,
                   *COUNTRY_ALIASES.get(a3, [])]
        aliases = [a for a in _with_plain(a for a in aliases if a and "(" not in a) if a != row["name"]]
        demonym = fix.get("demonym", info.get("demonym") or "")
        capital = fix.get("capital", info["capital"])
        facts = {
            "official_name": official,
            "other_names": others,
            "un_status": row["un_status"],
            "iso2": iso.alpha_2, "iso3": a3,
            "definite": a3 in DEFINITE,
            "continent": _continent(info["region"], region),
            "region": region,
            "area_km2": info["area"],
            "capital": capital,
            "capital_aliases": _with_plain([capital, *fix.get("capital_aliases", [])])[1:],
            "capital_note": fix.get("capital_note", ""),
            "currencies": [_currency(c) for c in fix.get("currencies", info["currencies"])],
            "languages": [_language(c) for c in fix.get("languages", info["languages"])],
            "language_role": fix.get("language_role", "official"),
            "demonym": demonym,
            "demonym_aliases": _with_plain([demonym, *fix.get("demonym_aliases", [])])[1:] if demonym else [],
            "neighbours": sorted(b for b in borders if b in sovereign),
            "calling_code": fix.get("calling_code") or _calling_code(info["callingCodes"]),
            "tld": next(t for t in info["tld"] if t.isascii()),
        }
        records.append({"id": a3, "name": row["name"], "domain": "country", "aliases": aliases,
                        "facts": facts, "skip_relations": fix.get("skip_relations", [])})
    _check_borders(records)
    return sorted(records, key=lambda r: r["id"])


def _check_borders(records):
    """Land borders must be symmetric: a fix on one side needs the same fix on the other."""
    neighbours = {r["id"]: set(r["facts"]["neighbours"]) for r in records}
    for a, ns in neighbours.items():
        for b in ns:
            if a not in neighbours[b]:
                raise ValueError(f"border {a}-{b} is listed by {a} but not by {b}: fix the sources")


# ----------------------------------------------------------------------------------------------
# Elements
# ----------------------------------------------------------------------------------------------
def period_of(z):
    """Row of the periodic table holding atomic number ``z`` (1..118)."""
    return next(p for p, last in enumerate((2, 10, 18, 36, 54, 86, 118), start=1) if z <= last)


def group_of(z):
    """IUPAC group 1..18, or None for the f-block (lanthanum..ytterbium, actinium..nobelium).

    Lutetium and lawrencium are placed in group 3, as in IUPAC's 2021 recommendation.
    """
    if z in (1, 3, 11, 19, 37, 55, 87):
        return 1
    if z == 2:
        return 18
    period = period_of(z)
    first = (1, 3, 11, 19, 37, 55, 87)[period - 1]
    offset = z - first  # 0-based position in the row
    if period in (2, 3):
        return offset + 1 if offset < 2 else offset + 11
    if period in (4, 5):
        return offset + 1
    if offset < 2:
        return offset + 1
    if offset < 16:  # La..Yb or Ac..No: the f-block
        return None
    return offset - 13  # Lu/Lr -> 3 ... Rn/Og -> 18


def block_of(z):
    group = group_of(z)
    if group is None:
        return "f"
    if group <= 2 or z == 2:
        return "s"
    return "d" if group <= 12 else "p"


def category_of(z):
    """A family name where it is uncontroversial, else None."""
    group = group_of(z)
    if 57 <= z <= 71:
        return "lanthanide"
    if 89 <= z <= 103:
        return "actinide"
    if z == 1:
        return "nonmetal"
    return {1: "alkali metal", 2: "alkaline earth metal"}.get(group) or (
        "transition metal" if group and 3 <= group <= 11 else
        "halogen" if group == 17 and z <= 85 else
        "noble gas" if group == 18 and z <= 86 else None)


def _density(element):
    """(value, prefix, suffix) from periodictable's density and its caveat, or (None, "", "")."""
    if element.density is None:
        return None, "", ""
    value, caveat = repr(element.density), element.density_caveat or ""
    if caveat.startswith("T="):
        t = float(caveat[2:].split(",")[0])
        return value, "", (f" as a liquid at {t:g} °C" if t < 0 else f" at {t:g} °C")
    if caveat == "calculated":
        return value, "", " (calculated)"
    if caveat.startswith("1.9-2.3 (graphite)"):
        return value, "about ", " as graphite"
    if caveat:  # "approximate", "estimated" or a range such as "7.18-7.20"
        return value, "about ", ""
    return value, "", ""


def load_elements():
    """Element entity records for atomic numbers 1..118, in that order."""
    records = []
    for element in periodictable.elements:
        z = element.number
        if z == 0:  # periodictable's free neutron
            continue
        name, aliases = ELEMENT_NAMES.get(element.name, (element.name.capitalize(), []))
        whole = float(element.mass).is_integer()
        density, prefix, suffix = _density(element)
        radius = getattr(element, "covalent_radius", None)
        crystal = (getattr(element, "crystal_structure", None) or {}).get("symmetry")
        facts = {
            "symbol": element.symbol, "number": z,
            "mass": str(int(element.mass)) if whole else repr(element.mass),
            "mass_is_mass_number": whole, "radioactive": z in RADIOACTIVE,
            "radius_pm": round(radius * 100) if radius else None,
            "density": density, "density_prefix": prefix, "density_suffix": suffix,
            "crystal": CRYSTALS[crystal] if crystal else None,
            "period": period_of(z), "group": group_of(z), "block": block_of(z), "category": category_of(z),
        }
        records.append({"id": element.symbol, "name": name, "domain": "element", "aliases": aliases,
                        "facts": facts, "skip_relations": []})
    if len(records) != 118:
        raise ValueError(f"expected 118 elements, periodictable gave {len(records)}")
    return records


# ----------------------------------------------------------------------------------------------
# Splits, answers, files
# ----------------------------------------------------------------------------------------------
def assign_splits(entities, seed=SEED):
    """Split by entity within each domain: ids ordered by sha256(seed:id); first 15% test, next 15% dev."""
    for domain in ASPECTS:
        ids = sorted((e["id"] for e in entities if e["domain"] == domain),
                     key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        n_test, n_dev = (round(SPLIT_SHARE[s] * len(ids)) for s in ("test", "dev"))
        split = {i: ("test" if k < n_test else "dev" if k < n_test + n_dev else "train")
                 for k, i in enumerate(ids)}
        for e in entities:
            if e["domain"] == domain:
                e["split"] = split[e["id"]]


def typed_questions(entities, path=TYPED_TSV):
    """The hand-typed dev questions of ``path`` as question records (answers and gold passage
    from the knowledge base; ``phrasing`` "typed"). Every row must name a dev-split entity and a
    relation it has an answer for."""
    index = {e["id"]: e for e in entities}
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        entity_id, relation, question = line.split("\t")
        e = index.get(entity_id)
        if e is None or e["split"] != "dev" or relation not in e["answers"]:
            raise ValueError(f"{path.name} line {number}: {entity_id!r} is not a dev-split entity "
                             f"with an answer for {relation!r}")
        aspect = RELATIONS[relation][1]
        questions.append({"id": f"{entity_id}/{relation}/typed/{number}", "question": question,
                          "answers": e["answers"][relation], "entity_id": entity_id,
                          "entity": e["name"], "domain": e["domain"], "relation": relation,
                          "passage_id": f"{entity_id}/{aspect}", "mismatch": None, "split": "dev",
                          "phrasing": "typed"})
    return questions


def build(seed=SEED):
    """All records: {"entities": [...], "passages": [...], "questions": [...]}."""
    entities = load_countries() + load_elements()
    assign_splits(entities, seed)
    index = {e["id"]: e for e in entities}
    for e in entities:
        answers = {r: relation_answers(e, r, index) for r, (d, _) in RELATIONS.items() if d == e["domain"]}
        e["answers"] = {r: a for r, a in answers.items() if a}
    passages = render_passages(entities, seed)
    questions = render_questions(entities, passages, seed, MISMATCH_RATE)
    new = [q for split in ("dev", "test") for q in render_new_phrasings(entities, passages, split, seed)]
    return {"entities": entities, "passages": passages, "questions": questions, "new_phrasings": new,
            "typed": typed_questions(entities)}


def _jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


def write(records, out=OUT):
    """Write the data files and their manifest into ``out``; returns {file name: bytes}."""
    files = {"passages.jsonl": _jsonl(records["passages"]), "entities.jsonl": _jsonl(records["entities"])}
    for split in SPLITS:
        files[f"questions_{split}.jsonl"] = _jsonl(q for q in records["questions"] if q["split"] == split)
    for split in ("dev", "test"):
        files[f"questions_{split}_new.jsonl"] = _jsonl(q for q in records["new_phrasings"]
                                                       if q["split"] == split)
    files["questions_dev_typed.jsonl"] = _jsonl(records["typed"])
    files[MANIFEST] = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n"
                              for name in sorted(files)).encode()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def check(out=OUT):
    """Rebuild into a temporary folder; return the names of files that differ from ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write(build(), Path(tmp))
    return [name for name, data in fresh.items()
            if not (out / name).is_file() or (out / name).read_bytes() != data]


# ----------------------------------------------------------------------------------------------
# Datasheet tables
# ----------------------------------------------------------------------------------------------
def majority_baseline(questions):
    """The single answer string that maximises mean exact match over ``questions``, and that mean.

    Ties go to the string that is the canonical (first) answer of more questions, then to the
    shorter, then to the alphabetically first: "Serbia" rather than its alias "Republic of Serbia".
    """
    candidates = sorted({a for q in questions for a in q["answers"]})
    scores = {c: sum(exact_match(c, q["answers"]) for q in questions) / len(questions) for c in candidates}
    canonical = collections.Counter(q["answers"][0] for q in questions)
    best = max(candidates, key=lambda c: (scores[c], canonical[c], -len(c)))
    return best, scores[best]


def stats(records):
    """The datasheet's tables as markdown (every number in data/README.md comes from here)."""
    entities, passages, questions = records["entities"], records["passages"], records["questions"]
    lines = []
    add = lines.append
    words = [len(p["text"].split()) for p in passages]
    add("| domain | entities | train | dev | test | passages | aspects |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for domain, aspects in ASPECTS.items():
        es = [e for e in entities if e["domain"] == domain]
        n = collections.Counter(e["split"] for e in es)
        n_p = sum(p["domain"] == domain for p in passages)
        add(f"| {domain} | {len(es)} | {n['train']} | {n['dev']} | {n['test']} | {n_p} | "
            f"{', '.join(aspects)} |")
    add(f"| **all** | {len(entities)} | " + " | ".join(
        str(sum(e['split'] == s for e in entities)) for s in SPLITS) + f" | {len(passages)} | |")
    add("")
    add(f"Passage length in words: min {min(words)}, median {statistics.median(words):g}, max {max(words)}.")
    add("")
    add("| split | questions | vocabulary-mismatched | share |")
    add("| --- | ---: | ---: | ---: |")
    for split in (*SPLITS, "all"):
        qs = [q for q in questions if split in ("all", q["split"])]
        m = sum(q["mismatch"] for q in qs)
        add(f"| {split} | {len(qs)} | {m} | {m / len(qs):.1%} |")
    add("")
    test = [q for q in questions if q["split"] == "test"]
    add("| relation | domain | gold aspect | train | dev | test | majority answer (test) | exact match |")
    add("| --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
    for relation, (domain, aspect) in RELATIONS.items():
        n = collections.Counter(q["split"] for q in questions if q["relation"] == relation)
        answer, em = majority_baseline([q for q in test if q["relation"] == relation])
        add(f"| {relation} | {domain} | {aspect} | {n['train']} | {n['dev']} | {n['test']} | {answer} | "
            f"{em:.3f} |")
    add("")
    new = records["new_phrasings"]
    add("| split | questions in new phrasings | vocabulary-mismatched | templates (per relation) |")
    add("| --- | ---: | ---: | --- |")
    for split in ("dev", "test"):
        qs = [q for q in new if q["split"] == split]
        m = sum(q["mismatch"] for q in qs)
        pool = sorted({len(p[split]) for p in PHRASINGS.values()})
        add(f"| {split} | {len(qs)} | {m} ({m / len(qs):.1%}) | {'–'.join(map(str, pool))} |")
    train_pool = sorted({len(p["train"]) for p in PHRASINGS.values()})
    add(f"| train (drawn by the training scripts) | — | — | {'–'.join(map(str, train_pool))} |")
    forms = collections.Counter(q["form"] for q in new)
    add("")
    add("Surface forms of the new-phrasing questions: " + ", ".join(
        f"{form} {n}" for form, n in sorted(forms.items())) + ".")
    typed = records["typed"]
    add("")
    add(f"Typed dev questions: {len(typed)}, about {len({q['entity_id'] for q in typed})} dev-split "
        f"entities and {len({q['relation'] for q in typed})} relations.")
    add("")
    add("| fixed entity | field | value | reason |")
    add("| --- | --- | --- | --- |")
    for alpha3, field, value, reason in COUNTRY_FIXES:
        shown = ", ".join(value) if isinstance(value, list) else value
        add(f"| {alpha3} | {field} | {shown or '(none)'} | {reason} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="rebuild in a temporary folder and compare")
    mode.add_argument("--stats", action="store_true", help="print the datasheet's tables (markdown)")
    args = parser.parse_args(argv)
    # The folder the loaders read (ragtutor.data): RAGTUTOR_DATA_DIR when it is set.
    out = Path(os.environ.get("RAGTUTOR_DATA_DIR") or OUT)
    if args.check:
        differ = check(out)
        if differ:
            print(f"{out} differs from a fresh build in: {', '.join(differ)}; "
                  "run `python data/build_kb.py` to rebuild", file=sys.stderr)
            return 1
        print(f"{out}: identical to a fresh build ({len(DATA_FILES)} data files and {MANIFEST})")
        return 0
    records = build()
    if args.stats:
        print(stats(records))
        return 0
    write(records, out)
    print(f"wrote {len(records['passages'])} passages, {len(records['questions'])} questions and "
          f"{len(records['entities'])} entities to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
