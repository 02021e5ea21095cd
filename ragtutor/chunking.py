r"""Cutting long documents into chunks, and telling which chunks answer a question.

The knowledge base's passages are already short (20 to 60 words). A real corpus is made of long
documents, and a RAG system must first cut them into pieces a retriever can index and a reader can
read. This module rebuilds that step on the knowledge base itself: it joins each entity's passages
back into one article, cuts the articles in two ways, and measures what each cut keeps::

    docs = articles(load_passages())             # one article per entity, with passage spans
    chunks = chunk_words(docs, 64, overlap=16)   # fixed windows of 64 words, 16 shared
    chunks = chunk_sentences(docs, max_words=64) # whole sentences, packed up to 64 words
    chunk_stats(chunks)                          # how many chunks, how many words each
    gold_chunks(question, chunks)                # the chunks that contain an answer
    gold_passage_chunks(question, chunks, docs)  # the chunks that overlap the gold passage

Every chunk is a passage record (``id``, ``title``, ``text``), so any retriever of the course can
index it, with ``entity_id``, ``doc_id`` and the character offsets ``start`` and ``end`` of its text
in the document: ``document["text"][start:end] == chunk["text"]``. An article also keeps the span
of each passage it was built from, so a chunk can always be traced back to its passages.

Two notions of a relevant chunk, because chunking breaks the one the knowledge base has (its gold
passage):

- **answer-bearing** (:func:`gold_chunks`): the chunk comes from the question's entity and contains
  one of its answers as whole words. A chunk that cuts an answer in two no longer holds it.
- **gold-passage overlap** (:func:`gold_passage_chunks`): the chunk shares at least one character
  with the gold passage. It says where the chunk came from, not whether it holds the answer.
"""
import numbers
import re
from collections.abc import Mapping

__all__ = ["articles", "chunk_words", "chunk_sentences", "split_sentences", "contains_answer",
           "gold_chunks", "source_passages", "overlaps_passage", "gold_passage_chunks",
           "chunk_stats", "ABBREVIATIONS"]

# Words that end in a period but do not end a sentence, even before a capital ("St. George's").
# Short on purpose: "Mt.", "No." and "Co." are left out because they are also element symbols
# (meitnerium, nobelium, cobalt) that can end a sentence ("Its symbol is Co. It ..."), and
# initialisms such as "D.C." end their sentence wherever the knowledge base uses them
# ("... is Washington, D.C. Canada, a neighbour, ...").
ABBREVIATIONS = frozenset({"St.", "Dr.", "Mr.", "Mrs.", "Ms.", "Prof.", "e.g.", "i.e."})

# A candidate sentence end: ., ? or ! (possibly repeated, possibly closed by a quote or bracket),
# followed by whitespace or the end of the text. A period inside a number ("7.874") or a domain
# (".np") has no whitespace after it, so it is never a candidate.
_CANDIDATE_END = re.compile(r"""[.?!]+["'\u201d\u2019)\]]*(?=\s|$)""")
_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s*")


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def _check_count(value, name, minimum, hint):
    """``value`` if it is an int (not a bool) of at least ``minimum``; a ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number of words, got {value!r} "
                         f"({type(value).__name__}); {hint}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}; {hint}")
    return int(value)


def _check_records(records, what, fields):
    """``records`` as a list, after checking that it is a non-empty list of dicts that each have
    ``fields`` as strings and that no two share an id."""
    if isinstance(records, (str, bytes, Mapping)) or not hasattr(records, "__iter__"):
        raise ValueError(f"{what} must be a list of records (dicts), got "
                         f"{type(records).__name__}; wrap a single one in a list")
    records = list(records)
    if not records:
        raise ValueError(f"{what} is empty: pass at least one record with "
                         f"{', '.join(fields)}")
    seen = set()
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"{what}[{i}] must be a dict with {', '.join(fields)}, got "
                             f"{type(record).__name__}")
        missing = [f for f in fields if f not in record]
        if missing:
            raise ValueError(f"{what}[{i}] lacks the field(s) {', '.join(missing)}; every record "
                             f"needs {', '.join(fields)}")
        for field in fields:
            if not isinstance(record[field], str):
                raise ValueError(f"{what}[{i}][{field!r}] must be a string, got "
                                 f"{type(record[field]).__name__}")
        if not record["id"]:
            raise ValueError(f"{what}[{i}] has an empty id; give every record a non-empty id")
        if record["id"] in seen:
            raise ValueError(f"{what}[{i}] repeats the id {record['id']!r}; ids must be unique "
                             "so that every chunk id names one place in one document")
        seen.add(record["id"])
    return records


# --------------------------------------------------------------------------------------------
# Articles
# --------------------------------------------------------------------------------------------
def articles(passages):
    """One long document per entity, built from its passages: a list of records

        {"id": entity_id, "title", "text", "entity_id", "spans": [(passage_id, start, end), ...]}

    in the order each entity first appears in ``passages``. An article's text is its entity's
    passage texts, in corpus order, joined by a single space; ``spans`` gives each passage's
    characters in it (``text[start:end] == passage["text"]``), so any offset in an article, and so
    any chunk cut from it, maps back to the passages it came from. The knowledge base's 1,811
    passages give 313 articles of 77 to 293 words: documents long enough that chunking matters.

    Raises ValueError when ``passages`` is empty, a passage lacks id, title, text or entity_id,
    two passages share an id, or one entity's passages disagree on the title.
    """
    passages = _check_records(passages, "passages", ("id", "title", "text", "entity_id"))
    grouped = {}
    for p in passages:
        article = grouped.setdefault(p["entity_id"], {"title": p["title"], "parts": []})
        if p["title"] != article["title"]:
            raise ValueError(f"passage {p['id']!r} has the title {p['title']!r}, but another "
                             f"passage of entity {p['entity_id']!r} has {article['title']!r}; "
                             "one entity's passages must share one title")
        article["parts"].append(p)
    documents = []
    for entity_id, article in grouped.items():
        spans, position = [], 0
        for p in article["parts"]:
            spans.append((p["id"], position, position + len(p["text"])))
            position += len(p["text"]) + 1  # the joining space
        documents.append({"id": entity_id, "title": article["title"],
                          "text": " ".join(p["text"] for p in article["parts"]),
                          "entity_id": entity_id, "spans": spans})
    return documents


# --------------------------------------------------------------------------------------------
# Chunkers
# --------------------------------------------------------------------------------------------
def _chunk(document, kind, i, start, end):
    """The chunk record of ``document["text"][start:end]``, the ``i``-th of its ``kind``."""
    return {"id": f"{document['id']}#{kind}{i}", "title": document.get("title", ""),
            "text": document["text"][start:end],
            "entity_id": document.get("entity_id", document["id"]),
            "doc_id": document["id"], "start": start, "end": end}


def chunk_words(documents, size, overlap=0):
    """Fixed windows of ``size`` words over each document, each window ``size - overlap`` words
    after the one before: a list of chunk records

        {"id": f"{doc_id}#w{i}", "title", "text", "entity_id", "doc_id", "start", "end"}

    in document order. Words are runs of non-whitespace; a chunk's text is the document's own text
    from its first word's first character to its last word's last one, so ``start`` and ``end``
    are exact character offsets and the whitespace inside a window is kept as it was.

    The windows restart at every document (none spans two), so a document's last window may be
    shorter than ``size``; a window is only made if it adds a word the one before lacks, so
    consecutive windows share exactly ``overlap`` words and none is empty. A document with no
    words gives no chunk. ``title`` is the document's (empty if it has none) and ``entity_id`` the
    document's, or its id when it has none.

    Overlap is the usual hedge against cutting a fact in two: with ``overlap`` words shared, any
    stretch of up to ``overlap + 1`` words lies whole in some window, at the cost of indexing
    about ``size / (size - overlap)`` times as many words.

    Raises ValueError when ``size`` is not an int ≥ 1, ``overlap`` not an int with
    0 ≤ overlap < size, or ``documents`` is not a non-empty list of records with string ``id``
    and ``text`` and distinct ids.
    """
    size = _check_count(size, "size", 1, "pass the number of words per chunk, such as 64")
    overlap = _check_count(overlap, "overlap", 0,
                           "pass the number of words consecutive chunks share, such as 0")
    if overlap >= size:
        raise ValueError(f"overlap must be smaller than size, got overlap={overlap} and "
                         f"size={size}; each chunk must add at least one new word, so use "
                         f"overlap ≤ {size - 1} (size // 4 = {size // 4} is a common choice)")
    documents = _check_records(documents, "documents", ("id", "text"))
    step = size - overlap
    chunks = []
    for document in documents:
        words = [m.span() for m in _WORD.finditer(document["text"])]
        # The last window starts before the last `overlap` words, so it always adds one.
        for i, first in enumerate(range(0, max(len(words) - overlap, 1) if words else 0, step)):
            last = min(first + size, len(words)) - 1
            chunks.append(_chunk(document, "w", i, words[first][0], words[last][1]))
    return chunks


def split_sentences(text):
    """The sentences of ``text`` as ``(start, end)`` character spans, in order.

    A sentence ends at ., ? or ! (and any closing quote or bracket after it) that is followed by
    the end of the text, or by whitespace and then an upper-case letter or a digit. So a period
    inside a number ("7.874 g/cm3") or an internet domain (".np") never ends one, nor does a
    period before a lower-case word, nor one of the :data:`ABBREVIATIONS` ("St. George's").
    Initialisms do end a sentence before a capital ("Washington, D.C. Canada ..."), as do element
    symbols ("Its symbol is Sr. Chemists ..."): both occur in the knowledge base. The rule fits
    this knowledge base, not every text: "the U.S. Navy" would be split after "U.S.".

    A span runs from a sentence's first non-space character to its last character, so
    ``text[start:end]`` has no surrounding whitespace and the spans, rejoined with the
    whitespace between them, give back ``text.strip()``. Text after the last sentence end (with
    no closing punctuation) is a sentence of its own; a blank text has none.
    """
    spans, start = [], _SPACE.match(text).end()
    for m in _CANDIDATE_END.finditer(text, start):
        after = _SPACE.match(text, m.end()).end()  # where the next sentence would start
        if after < len(text):
            if not (text[after].isupper() or text[after].isdigit()):
                continue
            word_start = m.start()
            while word_start > start and not text[word_start - 1].isspace():
                word_start -= 1
            if text[word_start:m.end()].lstrip("\"'(\u201c\u2018[") in ABBREVIATIONS:
                continue
        spans.append((start, m.end()))
        start = after
    tail = text[start:].rstrip()
    if tail:
        spans.append((start, start + len(tail)))
    return spans


def chunk_sentences(documents, max_words=None):
    """Sentence chunks of each document (sentences as :func:`split_sentences` finds them): a list
    of chunk records

        {"id": f"{doc_id}#s{i}", "title", "text", "entity_id", "doc_id", "start", "end"}

    in document order, with exact character offsets as in :func:`chunk_words`.

    With ``max_words=None`` each sentence is a chunk. With ``max_words`` consecutive sentences of a
    document are packed greedily: a sentence joins the current chunk while the chunk stays within
    ``max_words`` words, and starts the next chunk otherwise. A sentence longer than
    ``max_words`` on its own is kept whole as a chunk by itself, rather than cut mid-sentence.
    Chunks never span two documents.

    Unlike fixed windows, a sentence chunk never cuts a fact in two (every fact of the knowledge
    base sits inside one sentence), but its length varies with the text.

    Raises ValueError when ``max_words`` is neither None nor an int ≥ 1, or ``documents`` is not a
    non-empty list of records with string ``id`` and ``text`` and distinct ids.
    """
    if max_words is not None:
        max_words = _check_count(max_words, "max_words", 1,
                                 "pass the most words a chunk may hold, such as 64, or None "
                                 "for one sentence per chunk")
    documents = _check_records(documents, "documents", ("id", "text"))
    chunks = []
    for document in documents:
        text = document["text"]
        groups = []  # [start, end, words] of each chunk
        for start, end in split_sentences(text):
            n = len(text[start:end].split())
            if groups and max_words is not None and groups[-1][2] + n <= max_words:
                groups[-1][1:] = [end, groups[-1][2] + n]
            else:
                groups.append([start, end, n])
        chunks.extend(_chunk(document, "s", i, start, end)
                      for i, (start, end, _) in enumerate(groups))
    return chunks


# --------------------------------------------------------------------------------------------
# Relevance
# --------------------------------------------------------------------------------------------
def _answer_pattern(answers, ignore_case):
    """One regular expression that finds any of ``answers`` as whole words."""
    if isinstance(answers, str) or not hasattr(answers, "__iter__"):
        raise ValueError(f"answers must be a list of strings, got {type(answers).__name__}; wrap "
                         "a single answer in a list")
    answers = list(answers)
    if not all(isinstance(a, str) for a in answers):
        raise ValueError(f"answers must be a list of strings, got {answers!r}")
    answers = [a for a in answers if a.strip()]
    if not answers:
        raise ValueError("answers has no non-blank string: pass at least one answer")
    # Whitespace inside an answer matches any whitespace; an answer may not be glued to a letter,
    # digit or underscore on either side ("Nepal" is not found in "Nepalese").
    alternatives = "|".join(r"\s+".join(map(re.escape, a.split())) for a in answers)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE if ignore_case else 0)


def contains_answer(text, answers, ignore_case=True):
    """Whether ``text`` contains one of ``answers`` as whole words: True or False.

    Matching ignores case (unless ``ignore_case=False``) but not accents ("Lome" is not "Lomé"),
    and an answer must not be glued to a letter or digit on either side: "Nepal" is not found in
    "Nepalese", nor "7.87" in "7.874", but ".np" is found in "is .np." and "Kathmandu" in
    "KATHMANDU,". Whitespace inside an answer matches any run of whitespace.

    Ignoring case also makes short answers match ordinary words: the symbol "In" (indium) is found
    in "in", "As" in "as"; pass ``ignore_case=False`` where that matters.
    """
    return _answer_pattern(answers, ignore_case).search(text) is not None


def _check_question(question, fields):
    if not isinstance(question, Mapping):
        raise ValueError(f"question must be a question record (a dict with "
                         f"{', '.join(fields)}), got {type(question).__name__}")
    missing = [f for f in fields if f not in question]
    if missing:
        raise ValueError(f"question lacks the field(s) {', '.join(missing)}; pass a record from "
                         "load_questions")


def gold_chunks(question, chunks, ignore_case=True):
    """The ids of the **answer-bearing** chunks of ``question``, in the order of ``chunks``: those
    cut from the question's entity (``chunk["entity_id"] == question["entity_id"]``) whose text
    contains one of ``question["answers"]`` as whole words (:func:`contains_answer`).

    This is what a reader needs: a chunk it can read the answer from. Keeping to the question's
    entity keeps out chunks that merely mention the answer ("Asia" is in every Asian country's
    article, but only one is about the country asked for). An empty list means the chunking
    lost the answer, for instance by cutting "Andorra la Vella" between two windows.

    Raises ValueError when ``question`` lacks answers or entity_id, or a chunk lacks id, text
    or entity_id.
    """
    _check_question(question, ("answers", "entity_id"))
    pattern = _answer_pattern(question["answers"], ignore_case)
    chunks = _check_records(chunks, "chunks", ("id", "text", "entity_id"))
    return [c["id"] for c in chunks
            if c["entity_id"] == question["entity_id"] and pattern.search(c["text"])]


def _spans_by_document(documents):
    if isinstance(documents, Mapping):
        documents = list(documents.values())
    documents = _check_records(documents, "documents", ("id", "text"))
    for i, d in enumerate(documents):
        if "spans" not in d:
            raise ValueError(f"documents[{i}] ({d['id']!r}) has no spans; pass the articles "
                             "that articles(passages) returns, which record them")
    return {d["id"]: d["spans"] for d in documents}


def _overlapping(chunk, spans):
    if not isinstance(chunk, Mapping) or not all(f in chunk for f in ("doc_id", "start", "end")):
        raise ValueError("chunk must be a chunk record with doc_id, start and end, as "
                         "chunk_words and chunk_sentences make them")
    if chunk["doc_id"] not in spans:
        raise ValueError(f"chunk {chunk.get('id')!r} comes from document {chunk['doc_id']!r}, "
                         "which is not among documents; pass the documents it was cut from")
    # Half-open intervals [start, end) meet when each starts before the other ends.
    return [pid for pid, start, end in spans[chunk["doc_id"]]
            if chunk["start"] < end and start < chunk["end"]]


def source_passages(chunk, documents):
    """The ids of the passages whose text ``chunk`` shares at least one character with, in
    document order: where the chunk came from. ``documents`` are the articles (from
    :func:`articles`) the chunk was cut from, as a list or a dict by id.

    Raises ValueError when the chunk is not a chunk record or its document is not among
    ``documents``, or a document has no spans.
    """
    return _overlapping(chunk, _spans_by_document(documents))


def overlaps_passage(chunk, passage_id, documents):
    """Whether ``chunk`` shares at least one character with the passage ``passage_id``: True or
    False. The single space that joins two passages in an article belongs to neither, and a
    chunk of words never starts or ends on it, so touching is not overlapping."""
    return passage_id in source_passages(chunk, documents)


def gold_passage_chunks(question, chunks, documents):
    """The ids of the chunks that **overlap the gold passage** of ``question``
    (``question["passage_id"]``), in the order of ``chunks``; ``documents`` are the articles
    the chunks were cut from.

    This relevance is about provenance: it holds for a chunk with only the gold passage's last
    word, and fails for a chunk elsewhere that repeats the answer. Compare it with
    :func:`gold_chunks`, which asks whether the answer itself is there.

    Raises ValueError when ``question`` has no passage_id or a chunk is not a chunk record of one
    of ``documents``.
    """
    _check_question(question, ("passage_id",))
    spans = _spans_by_document(documents)
    chunks = _check_records(chunks, "chunks", ("id", "text"))
    return [c["id"] for c in chunks if question["passage_id"] in _overlapping(c, spans)]


# --------------------------------------------------------------------------------------------
# Description
# --------------------------------------------------------------------------------------------
def chunk_stats(chunks):
    """A description of a chunking: ``{"chunks", "documents", "words", "mean_words",
    "min_words", "max_words"}`` — the number of chunks and of documents they come from, the
    words they hold in all (overlapping windows count shared words once per chunk, so this
    exceeds the corpus's count by the duplication that overlap costs), and the mean, smallest and
    largest number of words of a chunk.

    Raises ValueError when ``chunks`` is empty or a chunk lacks id or text.
    """
    chunks = _check_records(chunks, "chunks", ("id", "text"))
    counts = [len(c["text"].split()) for c in chunks]
    return {"chunks": len(chunks), "documents": len({c.get("doc_id", c["id"]) for c in chunks}),
            "words": sum(counts), "mean_words": sum(counts) / len(counts),
            "min_words": min(counts), "max_words": max(counts)}
