"""Chapter 09's measurements of scale: shards on Ray, where a RAG step's time goes, K, batching.

    python benchmarks/scaling.py [--n 200000] [--repeat 3]

1. Sharded search: a flat index of ``--n`` synthetic 64-dimensional vectors, searched for 1,000
   queries (one batch) and for single queries, by one VectorIndex (1 and 2 faiss threads) and by
   a ShardedIndex of 1, 2 and 4 Ray actors (one thread each): queries per second, the median of
   ``--repeat`` runs.
2. One RAG training step of ``checkpoints/rag_token`` (batch 16, the generator training too, one
   torch thread), timed in parts — retrieval (question encoder and index search), the
   generator's K forward passes and the marginal, the backward pass, the optimiser — for
   K = 1, 2, 5, 10; and the shipped model's exact match on the test questions when it reads K
   passages (a model trained with K = 5, read with other K: not one trained per K).
3. Question answering throughput: ``RAGModel.generate`` on 256 test questions at batch sizes
   1, 8, 32 and 128, one torch thread.
4. Data parallelism on this machine: the same training step (batch 16) in one process with two
   torch threads, and in two processes with one thread each (``ragtutor.distributed``).

Writes ``benchmarks/scaling.json`` and the scaling section of ``benchmarks/RESULTS.md``.
"""
import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ragtutor.data import load_questions
from ragtutor.distributed import run_data_parallel
from ragtutor.index import VectorIndex
from ragtutor.rag import rag_token_nll, teacher_forcing
from ragtutor.rag_model import RAGModel
from ragtutor.sharding import ShardedIndex, local_ray
from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
OUT = ROOT / "benchmarks" / "scaling.json"


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sharded_search(n, repeat, dim=64, n_queries=1000, single=50):
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    rows = []

    def measure(name, index):
        index.search(queries[:10], 10)  # warm up
        batch = _median_time(lambda: index.search(queries, 10), repeat)
        one = _median_time(lambda: [index.search(q[None], 10) for q in queries[:single]], repeat)
        rows.append({"index": name, "batch_qps": n_queries / batch, "single_qps": single / one})
        print(rows[-1], flush=True)

    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        measure(f"one flat index, {threads} thread{'s' if threads > 1 else ''}",
                VectorIndex("flat").fit(vectors))
    faiss.omp_set_num_threads(1)
    exact = VectorIndex("flat").fit(vectors).search(queries, 10)[1]
    with local_ray(num_cpus=2, object_store_mb=200 + n * dim * 4 // 2**20):
        for shards in (1, 2, 4):
            index = ShardedIndex(shards).fit(vectors)
            assert (index.search(queries, 10)[1] == exact).all(), "shards differ from one index"
            measure(f"{shards} shard{'s' if shards > 1 else ''} on Ray (1 thread each)", index)
            index.close()
    return rows


def _step_parts(model, questions, optimizer):
    """One training step, timed in parts (seconds)."""
    texts, answers = [q["question"] for q in questions], [q["answers"][0] for q in questions]
    parts = {}
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    doc_scores, doc_ids = model.retrieve_rows(texts)
    parts["retrieval"] = time.perf_counter() - start
    start = time.perf_counter()
    input_ids, attention_mask = model.generator_inputs(texts, doc_ids)
    config = model.generator.config
    decoder_input_ids, target = teacher_forcing(model._answer_ids(answers),
                                                config.decoder_start_token_id, config.pad_token_id)
    logits = model.generator(input_ids=input_ids, attention_mask=attention_mask,
                             decoder_input_ids=decoder_input_ids.repeat_interleave(
                                 model.n_docs, dim=0), use_cache=False).logits
    logprobs = torch.log_softmax(logits, -1).view(len(texts), model.n_docs, *logits.shape[1:])
    loss = rag_token_nll(logprobs, doc_scores, target, config.pad_token_id).mean()
    parts["generator forward (K passes)"] = time.perf_counter() - start
    start = time.perf_counter()
    loss.backward()
    parts["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    optimizer.step()
    parts["optimizer"] = time.perf_counter() - start
    return parts


def step_time(repeat, ks=(1, 2, 5, 10), batch=16):
    torch.set_num_threads(1)
    train = load_questions("train")
    rows = []
    for k in ks:
        model = RAGModel.from_pretrained(ROOT / "checkpoints" / "rag_token", n_docs=k,
                                         train_generator=True)
        model.train()
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-6)
        _step_parts(model, train[:batch], optimizer)  # warm up
        samples = [_step_parts(model, train[i * batch:(i + 1) * batch], optimizer)
                   for i in range(1, 1 + max(repeat, 5))]
        parts = {name: statistics.median(s[name] for s in samples) for name in samples[0]}
        em = exact_match_at_k([k])[k]
        rows.append({"k": k, "parts": parts, "step": sum(parts.values()), "test_em": em})
        print(rows[-1], flush=True)
    return rows


def exact_match_at_k(ks):
    """The shipped model's test exact match when it reads K passages, for each K."""
    test = load_questions("test")
    return {k: RAGModel.from_pretrained(ROOT / "checkpoints" / "rag_token", n_docs=k)
            .evaluate(test)["em"] for k in ks}


def qa_throughput(repeat, sizes=(1, 8, 32, 128), n=256):
    torch.set_num_threads(1)
    model = RAGModel.from_pretrained(ROOT / "checkpoints" / "rag_token")
    questions = [q["question"] for q in load_questions("test")[:n]]
    rows = []
    for size in sizes:
        seconds = _median_time(lambda: model.generate(questions, batch_size=size), repeat)
        rows.append({"batch_size": size, "questions_per_second": n / seconds})
        print(rows[-1], flush=True)
    return rows


def data_parallel(steps=12, batch=16):
    """Seconds per step (median over the steps after the first) in one process with 2 threads,
    and in two processes with one thread each."""
    one = run_data_parallel("train", world_size=1, steps=steps, batch_size=batch, threads=2)
    two = run_data_parallel("train", world_size=2, steps=steps, batch_size=batch, threads=1)
    return {"batch_size": batch, "steps": steps,
            "one_process_2_threads": statistics.median(one["step_seconds"][1:]),
            "two_processes_1_thread": statistics.median(two["step_seconds"][1:])}


def report(results):
    search = "\n".join(f"| {r['index']} | {r['batch_qps']:,.0f} | {r['single_qps']:,.0f} |"
                       for r in results["sharded_search"])
    names = list(results["step_time"][0]["parts"])
    steps = "\n".join(
        f"| {r['k']} | " + " | ".join(f"{r['parts'][p] * 1000:.0f}" for p in names)
        + f" | {r['step'] * 1000:.0f} | {r['test_em']:.3f} |" for r in results["step_time"])
    qa = "\n".join(f"| {r['batch_size']} | {r['questions_per_second']:.0f} |"
                   for r in results["qa_throughput"])
    dp = results["data_parallel"]
    return "\n".join([
        "## Scaling out (chapter 09)", "",
        f"Measured with `python benchmarks/scaling.py` on {results['machine']}; medians of "
        f"{results['repeat']} runs.", "",
        f"### Sharded search on Ray: {results['n']:,} synthetic vectors of 64 dimensions, flat "
        "(exact) shards, top 10", "",
        "Every sharded search returned exactly the single index's top 10. Batch: 1,000 queries "
        "in one call; single: one query per call.", "",
        "| index | queries/s, batch | queries/s, single |", "| --- | ---: | ---: |", search, "",
        "### One RAG training step (batch 16, one torch thread), milliseconds", "",
        "`checkpoints/rag_token` with the generator training; test exact match of the shipped "
        "model (trained with K = 5) reading K passages"
        + (" (re-measured with `--exact-match-only` after the model was retrained; the times "
           "depend on the architecture, not the weights)" if "exact_match_remeasured_on" in results
           else "") + ".", "",
        "| K | " + " | ".join(names) + " | step | test EM |",
        "| ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: |", steps, "",
        "### Question answering throughput (256 test questions, one torch thread)", "",
        "| batch size | questions/s |", "| ---: | ---: |", qa, "",
        f"### Data parallelism on this machine (batch {dp['batch_size']}, {dp['steps']} steps)", "",
        f"One process with 2 torch threads: {dp['one_process_2_threads'] * 1000:.0f} ms per step; "
        f"two processes with 1 thread each (gloo): {dp['two_processes_1_thread'] * 1000:.0f} ms "
        f"per step. A step's gradients are those of the whole batch either way (chapter 09 "
        "asserts it); on two cores the second process only replaces the second thread."])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="only rewrite RESULTS.md")
    parser.add_argument("--exact-match-only", action="store_true",
                        help="re-measure only the test exact match at each K, for a retrained "
                             "checkpoints/rag_token (the times depend on the architecture, not the "
                             "weights), and rewrite RESULTS.md")
    args = parser.parse_args(argv)
    if args.report or args.exact_match_only:
        results = json.loads(OUT.read_text())
    if args.exact_match_only:
        torch.set_num_threads(1)
        ems = exact_match_at_k([row["k"] for row in results["step_time"]])
        for row in results["step_time"]:
            row["test_em"] = ems[row["k"]]
        results["exact_match_remeasured_on"] = machine()
        OUT.write_text(json.dumps(results, indent=1) + "\n")
    elif not args.report:
        warnings.simplefilter("ignore")
        results = {"machine": machine(), "n": args.n, "repeat": args.repeat,
                   "sharded_search": sharded_search(args.n, args.repeat),
                   "step_time": step_time(args.repeat),
                   "qa_throughput": qa_throughput(args.repeat),
                   "data_parallel": data_parallel()}
        OUT.write_text(json.dumps(results, indent=1) + "\n")
    write_section(RESULTS_MD, report(results), "<!-- scaling:begin -->", "<!-- scaling:end -->")
    print(f"-> {RESULTS_MD}")


if __name__ == "__main__":
    main()
