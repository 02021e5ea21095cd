"""Chapter 05's open question: does the question encoder learn from answers alone here?

    python benchmarks/joint_training.py --start checkpoints/retriever --variant sequence \\
        --lr 5e-4 --seconds 30 --eval-on train

Builds a :class:`ragtutor.rag.RAGModel` from a bi-encoder folder (``--start``, written by
``scripts/train_retriever.py``; ``--steps 750`` there gives a weak start) and chapter 03's reader
(frozen), trains it with :func:`ragtutor.rag.train_rag` — no retrieval labels — for ``--seconds``
of training on one thread, evaluating exact match and Recall@1/@K every ``--eval-every`` steps on
every third dev question (``--eval-on dev``) or every twelfth training question (``--eval-on
train``), then on all test questions. Prints the loss curve and every evaluation as JSON lines;
nothing is written. A chapter 05 recipe must be settled with it before the notebook is written.
"""
import argparse
import json
import time

import torch

from ragtutor import set_seed
from ragtutor.data import load_passages, load_questions
from ragtutor.dense import BiEncoder
from ragtutor.generation import load_checkpoint
from ragtutor.rag import VARIANTS, RAGModel, train_rag


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, help="bi-encoder folder (the weak start)")
    parser.add_argument("--variant", choices=VARIANTS, default="sequence")
    parser.add_argument("--n-docs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-on", choices=("dev", "train"), default="dev")
    parser.add_argument("--train-embeddings", action="store_true",
                        help="train the question encoder's word embeddings too")
    parser.add_argument("--retriever-dropout", action="store_true",
                        help="keep DPR's dropout on while training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    set_seed(args.seed)
    passages = load_passages()
    train, dev, test = (load_questions(s) for s in ("train", "dev", "test"))
    generator, tokenizer, _ = load_checkpoint("reader")
    model = RAGModel(BiEncoder.from_pretrained(args.start), generator, tokenizer, passages,
                     n_docs=args.n_docs, variant=args.variant,
                     freeze_question_embeddings=not args.train_embeddings,
                     retriever_dropout=args.retriever_dropout)
    watched = dev[::3] if args.eval_on == "dev" else train[::12]
    start = time.perf_counter()
    history = train_rag(model, train, max_seconds=args.seconds, batch_size=args.batch_size,
                        lr=args.lr, dev=watched, eval_every=args.eval_every, seed=args.seed,
                        progress=False)
    print(json.dumps({"settings": vars(args), "wall_seconds": round(time.perf_counter() - start, 1),
                      "loss": [round(x, 3) for x in history["loss"]]}))
    for row in history["eval"]:
        print(json.dumps({"on": args.eval_on, **{k: round(v, 3) if isinstance(v, float) else v
                                                 for k, v in row.items()}}))
    result = model.evaluate(test)
    result.pop("predictions")
    print(json.dumps({"on": "test", **{k: round(v, 3) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
