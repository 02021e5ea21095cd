"""Retrieval-augmented recommendation measured: hit@k against popularity and chance, reasons checked.

    python benchmarks/recommendation.py [--users 200] [--folder checkpoints]

Users are built by ``ragtutor.recommend.build_users`` from the knowledge base (seed 1: four liked
entities that share a hidden taste, one more held out); the popularity baseline counts the liked
entities of another 500 users (seed 0). The recommender (``ragtutor.recommend.Recommender``)
reads each liked entity's values with chapter 07's question-answering system on
``checkpoints/rag_token`` (its calibrated "I don't know" rule included), retrieves candidates with
BM25 over the passages, and keeps those the system confidently reads as sharing the value. Prints
hit@1 and hit@5 with 95% bootstrap intervals for the recommender, popularity and a uniform random
draw, how often the inferred relation is the taste's, and how many stated reasons are true of the
recommended and the named liked entities by the knowledge base's answers; writes them to the
recommendation section of ``benchmarks/RESULTS.md`` (not with ``--folder``).
"""
import argparse
from pathlib import Path

import numpy as np

from ragtutor import data
from ragtutor import recommend as rec
from ragtutor.generation import CHECKPOINT_DIR
from ragtutor.metrics import bootstrap_interval
from ragtutor.qa import QASystem
from ragtutor.sparse import BM25Retriever
from ragtutor.tools.records import machine, write_section

RESULTS_MD = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="how many users to recommend to")
    parser.add_argument("--folder", type=Path, default=None,
                        help="parent of rag_token/ and qa_calibration.json (default checkpoints/)")
    args = parser.parse_args(argv)
    folder = args.folder or CHECKPOINT_DIR
    entities, passages = data.load_entities(), data.load_passages()
    users = rec.build_users(entities, n_users=args.users, seed=1)
    others = rec.build_users(entities, n_users=500, seed=0)
    recommender = rec.Recommender(QASystem.from_pretrained(folder / "rag_token"),
                                  BM25Retriever().fit(passages), passages, entities)
    recommendations = [recommender.recommend(u["liked"], k=5) for u in users]
    rankings = {
        "the recommender (read, retrieve, read)": [[r.entity_id for r in rs] for rs in recommendations],
        "popularity (most liked by 500 other users)":
            [rec.popularity_ranking(others, entities, u["liked"], 5) for u in users],
        "random (uniform over the domain)":
            [rec.random_ranking(entities, u["liked"], 5, np.random.default_rng(i))
             for i, u in enumerate(users)],
    }
    lines = []
    for name, ranking in rankings.items():
        cells = []
        for k in (1, 5):
            hits = [float(u["held_out"] in r[:k]) for r, u in zip(ranking, users)]
            low, high = bootstrap_interval(hits)
            cells.append(f"hit@{k} {np.mean(hits):.3f} ({low:.3f}-{high:.3f})")
        print(f"{name}: " + ", ".join(cells))
        lines.append(f"- {name}: " + ", ".join(cells) + ".")
    truths = [rec.reason_is_true(r, entities)
              for rs, u in zip(recommendations, users) for r in rs]
    tastes = [recommender.taste(u["liked"]) for u in users]
    relation_right = np.mean([t is not None and t[0] == u["taste"].split("=")[0]
                              for t, u in zip(tastes, users)])
    empty = sum(1 for rs in recommendations if not rs)
    by_id = {e["id"]: e for e in entities}

    def shared(liked):  # the (relation, value) pairs every liked entity has, by the knowledge base
        domain = by_id[liked[0]]["domain"]
        return set.intersection(*({(r, v) for r in rec.TASTE_RELATIONS[domain]
                                   for v in rec._canonical(by_id[e], r)} for e in liked))

    ambiguous = sum(1 for u in users if len(shared(u["liked"])) > 1)
    summary = (f"Reasons true of the recommended entity and the liked ones they name: "
               f"{np.mean(truths):.3f} of {len(truths)}. The relation read from the history is the "
               f"taste's for {relation_right:.3f} of the users; by the knowledge base, the liked "
               f"entities of {ambiguous} of {len(users)} users share more than one value (four euro "
               f"countries may all be European too), so another relation can be as right. {empty} "
               f"of {len(users)} users got no recommendation.")
    print(summary)
    if args.folder is None:
        section = "\n".join([
            "## Retrieval-augmented recommendation", "",
            f"Measured with `python benchmarks/recommendation.py` on {machine()}.", "",
            f"{len(users)} users, each with four liked entities that share a hidden taste (a currency, "
            "an official language, a region or continent, a group or period of the periodic table) "
            "and one held out; 95% bootstrap intervals in brackets:", "", *lines, "", summary])
        write_section(RESULTS_MD, section, "<!-- recommendation:begin -->", "<!-- recommendation:end -->")
        print(f"-> {RESULTS_MD}")


if __name__ == "__main__":
    main()
