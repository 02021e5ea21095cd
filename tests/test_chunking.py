"""ragtutor.chunking: articles with passage spans, fixed word windows, sentence chunks, the two
notions of a relevant chunk, and the checks on every argument; on the knowledge base and on small
documents written by hand."""
import re

import pytest

from ragtutor.chunking import (ABBREVIATIONS, articles, chunk_sentences, chunk_stats, chunk_words,
                               contains_answer, gold_chunks, gold_passage_chunks, overlaps_passage,
                               source_passages, split_sentences)
from ragtutor.data import load_entities, load_passages, load_questions


@pytest.fixture(scope="module")
def passages():
    return load_passages()


@pytest.fixture(scope="module")
def docs(passages):
    return articles(passages)


@pytest.fixture(scope="module")
def questions():
    return load_questions("test")


def texts(chunks):
    return [c["text"] for c in chunks]


def check_exact(chunks, documents):
    """Every chunk is its document's text between its offsets, and no chunk is empty."""
    by_id = {d["id"]: d for d in documents}
    for c in chunks:
        assert by_id[c["doc_id"]]["text"][c["start"]:c["end"]] == c["text"], c["id"]
        assert c["text"].strip() == c["text"] != ""


# -- articles -------------------------------------------------------------------------------------
def test_article_spans_give_back_every_passage(passages, docs):
    by_id = {p["id"]: p for p in passages}
    owners = {}
    for d in docs:
        assert d["id"] == d["entity_id"]
        for pid, start, end in d["spans"]:
            assert d["text"][start:end] == by_id[pid]["text"]
            assert by_id[pid]["entity_id"] == d["entity_id"]
            assert by_id[pid]["title"] == d["title"]
            owners.setdefault(pid, []).append(d["id"])
    assert sorted(owners) == sorted(by_id)
    assert all(len(o) == 1 for o in owners.values())
    assert len(docs) == len({p["entity_id"] for p in passages}) == 313


def test_articles_join_passages_with_one_space_in_corpus_order(passages, docs):
    order = [p["id"] for p in passages]
    for d in docs:
        ids = [pid for pid, _, _ in d["spans"]]
        assert ids == sorted(ids, key=order.index)
        for (_, _, end), (_, start, _) in zip(d["spans"], d["spans"][1:]):
            assert d["text"][end:start] == " "
        assert d["spans"][0][1] == 0 and d["spans"][-1][2] == len(d["text"])


def test_articles_of_interleaved_passages_group_by_entity():
    ps = [{"id": "A/1", "title": "A", "text": "One.", "entity_id": "A"},
          {"id": "B/1", "title": "B", "text": "Two.", "entity_id": "B"},
          {"id": "A/2", "title": "A", "text": "Three.", "entity_id": "A"}]
    docs = articles(ps)
    assert [(d["id"], d["text"]) for d in docs] == [("A", "One. Three."), ("B", "Two.")]
    assert docs[0]["spans"] == [("A/1", 0, 4), ("A/2", 5, 11)]


# -- fixed windows --------------------------------------------------------------------------------
def test_windows_of_a_small_document():
    doc = [{"id": "d", "title": "D", "text": "a b c d e f g"}]
    assert texts(chunk_words(doc, 3)) == ["a b c", "d e f", "g"]
    assert texts(chunk_words(doc, 3, overlap=1)) == ["a b c", "c d e", "e f g"]
    assert texts(chunk_words(doc, 3, overlap=2)) == ["a b c", "b c d", "c d e", "d e f", "e f g"]
    assert texts(chunk_words(doc, 4, overlap=2)) == ["a b c d", "c d e f", "e f g"]
    assert texts(chunk_words(doc, 7, overlap=6)) == ["a b c d e f g"]
    assert texts(chunk_words(doc, 100, overlap=50)) == ["a b c d e f g"]
    c = chunk_words(doc, 3)[1]
    assert c == {"id": "d#w1", "title": "D", "text": "d e f", "entity_id": "d", "doc_id": "d",
                 "start": 6, "end": 11}


def test_windows_keep_the_documents_own_whitespace_and_offsets():
    doc = [{"id": "d", "text": "  alpha\tbeta\n\ngamma  delta   epsilon \n"}]
    chunks = chunk_words(doc, 2)
    assert texts(chunks) == ["alpha\tbeta", "gamma  delta", "epsilon"]
    check_exact(chunks, doc)
    assert [(c["start"], c["end"]) for c in chunks] == [(2, 12), (14, 26), (29, 36)]


def test_windows_never_cross_documents_and_skip_empty_ones():
    docs = [{"id": "a", "text": "one two three", "entity_id": "X"}, {"id": "b", "text": "  \n "},
            {"id": "c", "text": "four five"}]
    chunks = chunk_words(docs, 2)
    assert [(c["doc_id"], c["text"]) for c in chunks] == [("a", "one two"), ("a", "three"),
                                                          ("c", "four five")]
    assert [c["entity_id"] for c in chunks] == ["X", "X", "c"]
    assert [c["title"] for c in chunks] == ["", "", ""]


@pytest.mark.parametrize("size", [1, 32, 64, 128, 256])
def test_windows_without_overlap_give_back_each_article(docs, size):
    chunks = chunk_words(docs, size)
    check_exact(chunks, docs)
    assert len({c["id"] for c in chunks}) == len(chunks)
    assert all(len(c["text"].split()) <= size for c in chunks)
    for d in docs:
        own = [c for c in chunks if c["doc_id"] == d["id"]]
        rebuilt = "".join(c["text"] + d["text"][c["end"]:nxt["start"]]
                          for c, nxt in zip(own, own[1:])) + own[-1]["text"]
        assert rebuilt == d["text"]
        assert all(len(c["text"].split()) == size for c in own[:-1])


@pytest.mark.parametrize("size,overlap", [(2, 1), (32, 8), (64, 16), (128, 32), (256, 64),
                                          (10, 9)])
def test_consecutive_windows_share_exactly_the_overlap(docs, size, overlap):
    chunks = chunk_words(docs, size, overlap)
    check_exact(chunks, docs)
    assert len({c["id"] for c in chunks}) == len(chunks)
    by_doc = {}
    for c in chunks:
        assert len(c["text"].split()) <= size
        by_doc.setdefault(c["doc_id"], []).append(c)
    for d in docs:
        own = by_doc[d["id"]]
        words = d["text"].split()
        for a, b in zip(own, own[1:]):
            wa, wb = a["text"].split(), b["text"].split()
            assert wa[-overlap:] == wb[:overlap]
            # exactly: the windows' first words are size - overlap words apart
            assert len(d["text"][a["start"]:b["start"]].split()) == size - overlap
        # every word is covered, the last window ends at the last word and adds a new one
        assert own[-1]["end"] == len(d["text"].rstrip())
        assert len(own[-1]["text"].split()) > overlap or len(own) == 1
        assert len(own) == max(1, -(-(len(words) - overlap) // (size - overlap)))


# -- sentences ------------------------------------------------------------------------------------
def test_every_passage_splits_into_sentences_that_rejoin_to_it(passages):
    chunks = chunk_sentences(passages)
    check_exact(chunks, passages)
    by_doc = {}
    for c in chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
    for p in passages:
        own = by_doc[p["id"]]
        rebuilt = "".join(c["text"] + p["text"][c["end"]:nxt["start"]]
                          for c, nxt in zip(own, own[1:])) + own[-1]["text"]
        assert rebuilt == p["text"]
        for c, nxt in zip(own, own[1:]):
            assert p["text"][c["end"]:nxt["start"]].isspace()
            assert c["text"][-1] in ".?!"
    # the knowledge base's passages hold two to four sentences each
    assert {len(v) for v in by_doc.values()} <= {2, 3, 4}
    assert len({c["id"] for c in chunks}) == len(chunks)


def test_no_decimal_number_is_split(passages):
    numbers = re.compile(r"\d+\.\d+")
    seen = 0
    for p in passages:
        spans = split_sentences(p["text"])
        for m in numbers.finditer(p["text"]):
            seen += 1
            assert any(s <= m.start() and m.end() <= e for s, e in spans), (p["id"], m.group())
    assert seen > 200
    text = "Iron has a density of 7.874 g/cm3. It melts at 1538 °C."
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Iron has a density of 7.874 g/cm3.", "It melts at 1538 °C."]


@pytest.mark.parametrize("text,expected", [
    # abbreviations before a name do not end a sentence
    ("The capital of Grenada is St. George's. Barbados is near.",
     ["The capital of Grenada is St. George's.", "Barbados is near."]),
    # an initialism before a capital does (as the knowledge base uses "D.C.")
    ("The capital is Washington, D.C. Canada, a neighbour, has Ottawa.",
     ["The capital is Washington, D.C.", "Canada, a neighbour, has Ottawa."]),
    # so does an element symbol that looks like an abbreviation
    ("Its symbol is Sr. Chemists count it as an alkaline earth metal.",
     ["Its symbol is Sr.", "Chemists count it as an alkaline earth metal."]),
    ("Its domain is .np. Both codes follow a standard.", ["Its domain is .np.",
                                                         "Both codes follow a standard."]),
    ("Is it? Yes! It is 42. 42 is the answer", ["Is it?", "Yes!", "It is 42.",
                                                 "42 is the answer"]),
    ("It ends. the next word is lower-case.", ["It ends. the next word is lower-case."]),
    ('He said "Go." Then he went.', ['He said "Go."', "Then he went."]),
    ("Paris (France.) Berlin next.", ["Paris (France.)", "Berlin next."]),
    ("  One.  Two.\n", ["One.", "Two."]),
    ("", []), ("   ", []),
])
def test_sentence_ends(text, expected):
    assert [text[s:e] for s, e in split_sentences(text)] == expected


def test_abbreviations_leave_out_element_symbols():
    symbols = {e["facts"]["symbol"] + "." for e in load_entities() if e["domain"] == "element"}
    assert len(symbols) == 118 and {"Mt.", "No.", "Co.", "Sr."} <= symbols
    assert not ABBREVIATIONS & symbols


def test_sentences_of_knowledge_base_passages(passages):
    by_id = {p["id"]: p for p in passages}
    for pid, n in [("ATG/capital", 3), ("USA/capital", 3), ("VCT/overview", 3), ("Sr/overview", 3),
                    ("CAN/geography", 2)]:
        assert len(split_sentences(by_id[pid]["text"])) == n, pid


@pytest.mark.parametrize("max_words", [1, 12, 30, 64, 128])
def test_sentence_packing_stays_within_max_words_and_is_greedy(docs, max_words):
    chunks = chunk_sentences(docs, max_words=max_words)
    check_exact(chunks, docs)
    sentences = {d["id"]: split_sentences(d["text"]) for d in docs}
    text = {d["id"]: d["text"] for d in docs}
    by_doc = {}
    for c in chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
        inside = [(s, e) for s, e in sentences[c["doc_id"]] if c["start"] <= s and e <= c["end"]]
        # a chunk is whole sentences, from a sentence's start to a sentence's end
        assert inside[0][0] == c["start"] and inside[-1][1] == c["end"]
        n = len(c["text"].split())
        assert n <= max_words or len(inside) == 1
    for doc_id, own in by_doc.items():
        # greedy: the next chunk's first sentence would not have fitted in this one
        for c, nxt in zip(own, own[1:]):
            first = next((s, e) for s, e in sentences[doc_id] if s == nxt["start"])
            assert len(c["text"].split()) + len(text[doc_id][first[0]:first[1]].split()) > max_words
        # and every sentence is in exactly one chunk
        assert sum(len([1 for s, e in sentences[doc_id] if c["start"] <= s and e <= c["end"]])
                   for c in own) == len(sentences[doc_id])


def test_sentence_chunks_by_hand():
    doc = [{"id": "d", "title": "T", "text": "One two three. Four five. Six seven eight nine ten. "
                                             "Eleven."}]
    assert texts(chunk_sentences(doc)) == ["One two three.", "Four five.",
                                           "Six seven eight nine ten.", "Eleven."]
    assert texts(chunk_sentences(doc, max_words=5)) == ["One two three. Four five.",
                                                        "Six seven eight nine ten.", "Eleven."]
    assert texts(chunk_sentences(doc, max_words=3)) == ["One two three.", "Four five.",
                                                        "Six seven eight nine ten.", "Eleven."]
    assert texts(chunk_sentences(doc, max_words=100)) == [doc[0]["text"]]
    assert [c["id"] for c in chunk_sentences(doc, max_words=5)] == ["d#s0", "d#s1", "d#s2"]
    two = doc + [{"id": "e", "text": "Twelve."}]
    assert [c["doc_id"] for c in chunk_sentences(two, max_words=100)] == ["d", "e"]


# -- relevance ------------------------------------------------------------------------------------
def test_whole_article_chunks_hold_every_answer_found_in_the_article(docs, questions):
    size = max(len(d["text"].split()) for d in docs)
    chunks = chunk_words(docs, size)
    assert len(chunks) == len(docs)
    text = {d["id"]: d["text"] for d in docs}
    answerable = [q for q in questions if contains_answer(text[q["entity_id"]], q["answers"])]
    assert len(answerable) == len(questions) == 538
    for q in answerable:
        assert gold_chunks(q, chunks) == [f"{q['entity_id']}#w0"], q["id"]
        assert gold_passage_chunks(q, chunks, docs) == [f"{q['entity_id']}#w0"], q["id"]


def test_gold_chunks_match_case_insensitively_on_word_boundaries():
    docs = [{"id": "NPL", "text": "Nepalese rupee. The capital is KATHMANDU, in the hills."},
            {"id": "IND", "text": "Kathmandu lies north of India."}]
    chunks = chunk_words(docs, 3)
    q = {"answers": ["Kathmandu"], "entity_id": "NPL"}
    assert gold_chunks(q, chunks) == ["NPL#w1"]            # not IND#w0: another entity
    assert gold_chunks(q, chunks, ignore_case=False) == []
    assert gold_chunks({"answers": ["Nepal"], "entity_id": "NPL"}, chunks) == []
    assert gold_chunks({"answers": ["nepalese"], "entity_id": "NPL"}, chunks) == ["NPL#w0"]
    assert gold_chunks({"answers": ["Nepal", "hills"], "entity_id": "NPL"}, chunks) == ["NPL#w2"]


@pytest.mark.parametrize("text,answer,found", [
    ("Its density is 7.874 g/cm3.", "7.874 g/cm3", True),
    ("Its density is 7.874 g/cm3.", "7.87", False),
    ("Its density is 17.874 g/cm3.", "7.874", False),
    ("Its domain is .np. Both", ".np", True),
    ("Its calling code is +977.", "+977", True),
    ("It is Andorra  la\nVella.", "Andorra la Vella", True),
    ("It is Lomé.", "Lome", False),
    ("It uses the Euro (EUR).", "EUR", True),
    ("the Nepalese people", "Nepal", False),
    ("about nepal today", "Nepal", True),
    ("Nepal_", "Nepal", False),
])
def test_contains_answer(text, answer, found):
    assert contains_answer(text, [answer]) is found


def test_an_answer_cut_between_windows_is_lost_and_overlap_keeps_it():
    docs = [{"id": "AND", "text": "The capital is Andorra la Vella today."}]
    q = {"answers": ["Andorra la Vella"], "entity_id": "AND"}
    assert texts(chunk_words(docs, 4)) == ["The capital is Andorra", "la Vella today."]
    assert gold_chunks(q, chunk_words(docs, 4)) == []
    assert gold_chunks(q, chunk_words(docs, 4, overlap=2)) == ["AND#w1"]
    assert gold_chunks(q, chunk_sentences(docs)) == ["AND#s0"]


def test_passage_overlap_by_hand():
    ps = [{"id": "A/1", "title": "A", "text": "w1 w2 w3.", "entity_id": "A"},
          {"id": "A/2", "title": "A", "text": "w4 w5 w6.", "entity_id": "A"},
          {"id": "B/1", "title": "B", "text": "w7 w8.", "entity_id": "B"}]
    docs = articles(ps)
    chunks = chunk_words(docs, 2)  # "w1 w2", "w3. w4", "w5 w6.", "w7 w8."
    assert [source_passages(c, docs) for c in chunks] == [["A/1"], ["A/1", "A/2"], ["A/2"],
                                                           ["B/1"]]
    assert overlaps_passage(chunks[1], "A/2", docs)
    assert not overlaps_passage(chunks[0], "A/2", docs)
    assert not overlaps_passage(chunks[3], "A/2", {d["id"]: d for d in docs})
    q = {"passage_id": "A/2", "answers": ["w6"], "entity_id": "A"}
    assert gold_passage_chunks(q, chunks, docs) == ["A#w1", "A#w2"]
    assert gold_chunks(q, chunks) == ["A#w2"]
    # a chunk ending exactly where a passage starts does not overlap it; one character more does
    touching = {"id": "x", "doc_id": "A", "start": 0, "end": docs[0]["spans"][1][1]}
    assert source_passages(touching, docs) == ["A/1"]
    touching["end"] += 1
    assert source_passages(touching, docs) == ["A/1", "A/2"]


def test_gold_passage_chunks_on_the_knowledge_base(docs, questions):
    chunks = chunk_words(docs, 32, overlap=8)
    by_entity = {}
    for c in chunks:
        by_entity.setdefault(c["entity_id"], []).append(c)
    span = {pid: (s, e) for d in docs for pid, s, e in d["spans"]}
    for q in questions[:100]:
        ids = gold_passage_chunks(q, by_entity[q["entity_id"]], docs)
        assert ids
        s, e = span[q["passage_id"]]
        for c in by_entity[q["entity_id"]]:
            assert (c["id"] in ids) == (c["start"] < e and s < c["end"])


# -- statistics -----------------------------------------------------------------------------------
def test_chunk_stats_by_hand_and_on_the_knowledge_base(docs):
    doc = [{"id": "d", "text": "a b c d e f g"}, {"id": "e", "text": "h"}]
    assert chunk_stats(chunk_words(doc, 3)) == {"chunks": 4, "documents": 2, "words": 8,
                                                "mean_words": 2.0, "min_words": 1,
                                                "max_words": 3}
    assert chunk_stats(chunk_words(doc, 3, overlap=1))["words"] == 10
    total = sum(len(d["text"].split()) for d in docs)
    for chunks in (chunk_words(docs, 64), chunk_sentences(docs), chunk_sentences(docs, 64)):
        stats = chunk_stats(chunks)
        assert stats["words"] == total and stats["documents"] == len(docs)
        assert stats["min_words"] <= stats["mean_words"] <= stats["max_words"]
    assert chunk_stats(chunk_words(docs, 64, overlap=16))["words"] > total


# -- bad input ------------------------------------------------------------------------------------
DOC = [{"id": "d", "text": "a b c"}]


@pytest.mark.parametrize("kwargs,message", [
    ({"size": 0}, r"size must be at least 1, got 0"),
    ({"size": -3}, r"size must be at least 1"),
    ({"size": 2.5}, r"size must be a whole number of words, got 2\.5 \(float\)"),
    ({"size": "64"}, r"size must be a whole number of words, got '64' \(str\)"),
    ({"size": True}, r"size must be a whole number of words, got True \(bool\)"),
    ({"size": 4, "overlap": -1}, r"overlap must be at least 0, got -1"),
    ({"size": 4, "overlap": 4}, r"overlap must be smaller than size, got overlap=4 and size=4"),
    ({"size": 4, "overlap": 9}, r"use overlap ≤ 3"),
    ({"size": 4, "overlap": 1.0}, r"overlap must be a whole number of words"),
    ({"size": 4, "overlap": False}, r"overlap must be a whole number of words, got False"),
])
def test_bad_window_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chunk_words(DOC, **kwargs)


@pytest.mark.parametrize("max_words,message", [
    (0, r"max_words must be at least 1, got 0"),
    (True, r"max_words must be a whole number of words, got True \(bool\)"),
    (6.4, r"max_words must be a whole number"),
])
def test_bad_max_words(max_words, message):
    with pytest.raises(ValueError, match=message):
        chunk_sentences(DOC, max_words=max_words)


@pytest.mark.parametrize("documents,message", [
    ([], r"documents is empty: pass at least one record with id, text"),
    ("some text", r"documents must be a list of records \(dicts\), got str; wrap"),
    ({"id": "d", "text": "a"}, r"documents must be a list of records \(dicts\), got dict"),
    (["a b c"], r"documents\[0\] must be a dict with id, text, got str"),
    ([{"id": "d"}], r"documents\[0\] lacks the field\(s\) text"),
    ([{"text": "a"}], r"documents\[0\] lacks the field\(s\) id"),
    ([{"id": "d", "text": None}], r"documents\[0\]\['text'\] must be a string, got NoneType"),
    ([{"id": 7, "text": "a"}], r"documents\[0\]\['id'\] must be a string, got int"),
    ([{"id": "", "text": "a"}], r"documents\[0\] has an empty id"),
    ([{"id": "d", "text": "a"}, {"id": "d", "text": "b"}], r"documents\[1\] repeats the id 'd'"),
])
@pytest.mark.parametrize("chunker", [lambda d: chunk_words(d, 2), chunk_sentences])
def test_bad_documents(chunker, documents, message):
    with pytest.raises(ValueError, match=message):
        chunker(documents)


def test_bad_passages_for_articles():
    p = {"id": "A/1", "title": "A", "text": "x.", "entity_id": "A"}
    with pytest.raises(ValueError, match=r"passages is empty"):
        articles([])
    with pytest.raises(ValueError, match=r"passages\[0\] lacks the field\(s\) entity_id"):
        articles([{k: v for k, v in p.items() if k != "entity_id"}])
    with pytest.raises(ValueError, match=r"passages\[1\] repeats the id 'A/1'"):
        articles([p, p])
    with pytest.raises(ValueError, match=r"passage 'A/2' has the title 'B'.*share one title"):
        articles([p, {**p, "id": "A/2", "title": "B"}])


def test_bad_relevance_arguments():
    ps = [{"id": "A/1", "title": "A", "text": "w1 w2.", "entity_id": "A"}]
    docs = articles(ps)
    chunks = chunk_words(docs, 1)
    with pytest.raises(ValueError, match=r"question lacks the field\(s\) entity_id"):
        gold_chunks({"answers": ["w1"]}, chunks)
    with pytest.raises(ValueError, match=r"question must be a question record"):
        gold_chunks("w1", chunks)
    with pytest.raises(ValueError, match=r"answers must be a list of strings, got str; wrap"):
        gold_chunks({"answers": "w1", "entity_id": "A"}, chunks)
    with pytest.raises(ValueError, match=r"answers has no non-blank string"):
        gold_chunks({"answers": [" "], "entity_id": "A"}, chunks)
    with pytest.raises(ValueError, match=r"answers must be a list of strings, got \[1\]"):
        contains_answer("w1", [1])
    with pytest.raises(ValueError, match=r"chunks is empty"):
        gold_chunks({"answers": ["w1"], "entity_id": "A"}, [])
    with pytest.raises(ValueError, match=r"question lacks the field\(s\) passage_id"):
        gold_passage_chunks({"answers": ["w1"]}, chunks, docs)
    with pytest.raises(ValueError, match=r"has no spans; pass the articles"):
        source_passages(chunks[0], [{"id": "A", "text": "w1 w2."}])
    with pytest.raises(ValueError, match=r"comes from document 'A', which is not among documents"):
        overlaps_passage(chunks[0], "A/1", articles([{**ps[0], "entity_id": "Z"}]))
    with pytest.raises(ValueError, match=r"must be a chunk record with doc_id, start and end"):
        source_passages({"id": "A/1", "text": "w1 w2."}, docs)
    with pytest.raises(ValueError, match=r"chunks is empty"):
        chunk_stats([])
