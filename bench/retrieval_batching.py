"""What batching retrieval queries buys on this CPU: FAISS exact search, one query at a time
vs. batches of 8/32/128, with FAISS's default BLAS threshold and with the batch setting of
`retrieval.batch.enable_faiss_blas_for_batches` (here with min_queries=2, so that the batch-2
row shows why the default is 4), on random catalogues of 100k and 1M
unit vectors (64-d, flat inner-product index, 1 FAISS thread).

The OpenBLAS kernel set is fixed when the library loads, so each OPENBLAS_CORETYPE value
runs in its own child process. Not a test: it prints medians with their conditions.

    .venv/bin/python -m bench.retrieval_batching     # ~40 s on 2 cores, peak RSS 0.8 GB
    .venv/bin/python -m bench.retrieval_batching --artifacts artifacts   # + end to end
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import median_ms

ROOT = Path(__file__).resolve().parents[1]
DIM = 64
DEFAULT_THRESHOLD = 128_000  # faiss 1.15's distance_compute_blas_threshold


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def measure_catalogue(items: int, batches: list[int], k: int, repeats: int) -> list[dict]:
    """Median ms per search call for each (threshold, batch) cell on one catalogue."""
    import faiss

    from retrieval.batch import enable_faiss_blas_for_batches

    index = faiss.IndexFlatIP(DIM)
    index.add(unit_vectors(items, seed=items))
    queries = unit_vectors(max(batches), seed=1)
    rows = []
    settings = [("default", DEFAULT_THRESHOLD), ("batches on BLAS", 2 * DIM), ("20", 20)]
    for name, threshold in settings:
        faiss.cvar.distance_compute_blas_threshold = threshold
        if name == "batches on BLAS":
            assert enable_faiss_blas_for_batches(2, DIM) == threshold
        # Threshold 20 only matters for one query (it sends that to sgemm too).
        for b in [1] if threshold == 20 else batches:
            q = np.ascontiguousarray(queries[:b])
            index.search(q, k)  # warm: page in, allocate
            ms = median_ms(lambda q=q: index.search(q, k), repeats)
            rows.append({"items": items, "threshold": name, "batch": b, "ms": ms})
    faiss.cvar.distance_compute_blas_threshold = DEFAULT_THRESHOLD
    return rows


def end_to_end(artifacts: str, k: int, repeats: int) -> list[dict]:
    """Retriever.retrieve one by one vs retrieve_batch on a trained artifact (the service's
    case: history excluded)."""
    import faiss

    from recdata.artifacts import resolve
    from recdata.feature_store import UserHistoryStore
    from retrieval.batch import RetrievalQuery, enable_faiss_blas_for_batches, retrieve_batch
    from retrieval.retriever import Retriever

    version = resolve(Path(artifacts))
    retriever = Retriever.load(version, device="cpu")
    users = UserHistoryStore.load(version / "users")
    histories = [users.recent_items(u)[-50:] for u in users.user_ids()[:128]]
    rows = []
    for name, blas in (("default", False), ("batches on BLAS", True)):
        faiss.cvar.distance_compute_blas_threshold = DEFAULT_THRESHOLD
        if blas:
            enable_faiss_blas_for_batches(dim=retriever.index.embeddings.shape[1])
        for b in (1, 8, 32, 128):
            qs = [RetrievalQuery(h, k, h) for h in histories[:b]]
            one = median_ms(
                lambda qs=qs: [
                    retriever.retrieve(q.recent_item_ids, q.k, q.exclude_item_ids) for q in qs
                ],
                repeats,
            )
            batched = median_ms(lambda qs=qs: retrieve_batch(retriever, qs), repeats)
            rows.append(
                {
                    "items": len(retriever.items),
                    "threshold": name,
                    "batch": b,
                    "one_by_one_ms": one,
                    "batched_ms": batched,
                }
            )
    faiss.cvar.distance_compute_blas_threshold = DEFAULT_THRESHOLD
    return rows


def child(args: argparse.Namespace) -> None:
    """One process, one OpenBLAS kernel set: print JSON lines."""
    import faiss
    import torch

    from retrieval.batch import openblas_core

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    info = {"core": openblas_core(), "faiss": faiss.__version__}
    print(json.dumps({"info": info}), flush=True)
    for items in args.items:
        repeats = args.repeats if items <= 200_000 else max(3, args.repeats // 3)
        for row in measure_catalogue(items, args.batch, args.k, repeats):
            print(json.dumps({"faiss": row}), flush=True)
    if args.artifacts:
        for row in end_to_end(args.artifacts, args.k, args.repeats):
            print(json.dumps({"e2e": row}), flush=True)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"rss_gb": rss_gb}), flush=True)


def run_child(coretype: str, argv: list[str]) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype != "default":
        env["OPENBLAS_CORETYPE"] = coretype
    cmd = [sys.executable, "-m", "bench.retrieval_batching", "--child", *argv]
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def report(coretype: str, lines: list[dict], k: int) -> None:
    info = next(line["info"] for line in lines if "info" in line)
    rss = next(line["rss_gb"] for line in lines if "rss_gb" in line)
    faiss_rows = [line["faiss"] for line in lines if "faiss" in line]
    print(
        f"\n## OPENBLAS_CORETYPE={coretype} (OpenBLAS kernels: {info['core']}), "
        f"faiss {info['faiss']}, peak RSS {rss:.2f} GB"
    )
    print("| items | BLAS threshold | batch | ms per call | ms per query | queries/s | vs single |")
    print("|---|---|---|---|---|---|---|")
    single = {
        r["items"]: r["ms"] for r in faiss_rows if r["batch"] == 1 and r["threshold"] == "default"
    }
    for r in faiss_rows:
        per_query = r["ms"] / r["batch"]
        label = {"default": "128000 (default)", "batches on BLAS": "2x64 = 128", "20": "20"}[
            r["threshold"]
        ]
        print(
            f"| {r['items']:,} | {label} | {r['batch']} | {r['ms']:.2f} | {per_query:.3f} | "
            f"{1e3 / per_query:,.0f} | {single[r['items']] / per_query:.1f}x |"
        )
    e2e = [line["e2e"] for line in lines if "e2e" in line]
    if e2e:
        print(f"\nend to end on the artifact ({e2e[0]['items']:,} items, k={k}, history excluded)")
        print("| BLAS threshold | requests | retrieve() loop ms | retrieve_batch ms | speed-up |")
        print("|---|---|---|---|---|")
        for r in e2e:
            print(
                f"| {r['threshold']} | {r['batch']} | {r['one_by_one_ms']:.2f} | "
                f"{r['batched_ms']:.2f} | {r['one_by_one_ms'] / r['batched_ms']:.1f}x |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 32, 128])
    parser.add_argument("--k", type=int, default=250, help="k + excluded history (serving)")
    parser.add_argument("--repeats", type=int, default=15, help="per cell (1M: a third)")
    parser.add_argument("--coretypes", nargs="+", default=["default", "SkylakeX"])
    parser.add_argument("--artifacts", default=None, help="also time retrieve_batch end to end")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    argv = sys.argv[1:]
    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, 1 FAISS/OpenMP/BLAS thread, random unit "
        f"vectors d={DIM}, IndexFlatIP, k={args.k}, median of {args.repeats} calls per cell "
        f"(1M items: {max(3, args.repeats // 3)}) after one warm-up call"
    )
    for coretype in args.coretypes:
        started = time.perf_counter()
        lines = run_child(coretype, argv)
        report(coretype, lines, args.k)
        print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
