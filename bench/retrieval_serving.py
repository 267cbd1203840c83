"""Retrieval at catalogue scale: the real gRPC service vs. the same search in-process, on
100k- and 1M-item catalogues, batching on and off, concurrency 1/8/32; plus what live
catalogue changes cost (upsert / delete latency, search latency with a live segment).

For each size it trains a real two-tower model on a synthetic catalogue (few users, one
epoch: serving cost depends on the catalogue, not on model quality), writes a
retrieval-only artifact with an exact (flat) index, starts `recserve serve retrieval` as its
own process (one per batching mode, all up at once), and drives it with an asyncio client
on the same machine; with the compiled load client built (`make loadclient`) it also
measures the concurrency-1 overhead from it and compares the modes' throughput at the top
concurrency in alternating rounds. Not a test: it prints medians with their conditions.

    .venv/bin/python -m bench.retrieval_serving                  # 100k and 1M, ~20 min
    .venv/bin/python -m bench.retrieval_serving --items 100000   # one size
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

from services.batching import openblas_coretype_for_cpu

# Before FAISS loads (as `recserve` does): fast sgemm kernels for the in-process batches.
os.environ.setdefault("OPENBLAS_CORETYPE", openblas_coretype_for_cpu() or "")

import numpy as np
from grpc import aio

from bench.common import (
    BATCHING_MODES,
    alternating_throughput,
    drive,
    median_ms,
    overhead_at_concurrency_1,
    print_throughput_comparison,
    start_service,
    stop_services,
)
from recdata.artifacts import publish, resolve, write_manifest
from recdata.items import ItemTable
from recdata.split import leave_last_out, popularity_counts, user_sequences
from recdata.synthetic import generate
from recsys.v1 import retrieval_pb2_grpc
from recsys.v1.common_pb2 import ItemFilter
from recsys.v1.retrieval_pb2 import RetrieveRequest, RetrieveResponse
from retrieval.batch import RetrievalQuery, enable_faiss_blas_for_batches, retrieve_batch
from retrieval.covisitation import CoVisitation
from retrieval.index import IndexConfig
from retrieval.index_quality import build_and_assess
from retrieval.live_catalogue import ItemContent, delete_items, upsert_items
from retrieval.retriever import Retriever, save_retrieval
from retrieval.train import TwoTowerTrainConfig, item_embeddings, train_two_tower, user_embeddings
from services.executor import set_compute_threads


def build_artifact(root: Path, num_items: int, users: int, seed: int) -> Path:
    """A retrieval-only version directory over `num_items` synthetic items."""
    dataset = generate(num_items=num_items, num_users=users, seed=seed)
    items = ItemTable.from_frame(dataset.items)
    split = leave_last_out(user_sequences(dataset.interactions, items))
    items.popularity = popularity_counts(split.train, len(items))
    model = train_two_tower(split.train, items, TwoTowerTrainConfig(epochs=1))
    embeddings = item_embeddings(model, items)
    queries = user_embeddings(model, list(split.train.sequences[:500]), items)
    index, quality = build_and_assess(embeddings, queries, 200, IndexConfig("flat"))
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-bench{num_items}"
    directory = root / version
    items.save(directory / "items")
    covisitation = CoVisitation.fit(split.train, len(items))
    save_retrieval(directory / "retrieval", model, embeddings, index, "flat", covisitation)
    write_manifest(
        directory,
        {
            "version": version,
            "dataset": dataset.name,
            "components": ["items", "retrieval"],
            "index": quality.to_dict(),
        },
    )
    publish(root, version)
    return directory


def histories_of(version_dir: Path, count: int, seed: int) -> list[np.ndarray]:
    items = ItemTable.load(version_dir / "items")
    rng = np.random.default_rng(seed)
    popular = np.argsort(-items.popularity)[:5000]  # real users' histories lean popular
    return [items.item_ids[rng.choice(popular, 20, replace=False)] for _ in range(count)]


def in_process(retriever: Retriever, histories: list[np.ndarray], k: int) -> dict[str, float]:
    """Median ms per request: one at a time (the c=1 baseline) and in batches of 8 and 32
    through retrieve_batch (what the service's micro-batcher runs)."""
    singles = [
        median_ms(lambda h=h: retriever.retrieve(h, k, h), 5) for h in histories[:20]
    ]  # several users: the cost depends a little on the history
    out = {"single": statistics.median(singles)}
    for b in (8, 32):
        queries = [RetrievalQuery(h, k, h) for h in histories[:b]]
        out[f"batch{b}"] = median_ms(lambda q=queries: retrieve_batch(retriever, q), 15) / b
    return out


def live_costs(retriever: Retriever, k: int, histories: list[np.ndarray]) -> dict[str, float]:
    """What the catalogue RPCs cost in-process: upsert 100 / delete 100 items (median of
    5), and a search with 10,000 live items and 10,000 deleted ones."""
    items = retriever.items
    rng = np.random.default_rng(0)

    def contents(start: int, n: int) -> list[ItemContent]:
        rows = rng.choice(len(items), n, replace=False)
        return [
            ItemContent(
                10**9 + start + i,
                items.titles[r],
                items.category_names[items.categories[r]],
                items.brand_names[items.brands[r]],
                10.0,
            )
            for i, r in enumerate(rows)
        ]

    batch = contents(0, 100)
    upsert_ms = median_ms(lambda: upsert_items(retriever, batch), 5)
    victims = items.item_ids[rng.choice(len(items), 100, replace=False)].tolist()
    delete_ms = median_ms(lambda: delete_items(retriever, victims), 5)
    live, _ = upsert_items(retriever, contents(1000, 10_000))
    live, _ = delete_items(live, items.item_ids[rng.choice(len(items), 10_000, replace=False)])
    searches = [median_ms(lambda h=h: live.retrieve(h, k, h), 5) for h in histories[:20]]
    return {
        "upsert100_ms": upsert_ms,
        "delete100_ms": delete_ms,
        "search_with_live_ms": statistics.median(searches),
    }


async def service_run(
    port: int, histories: list[np.ndarray], k: int, requests: int, concurrencies: list[int]
) -> list[tuple[int, float, float, float]]:
    rows = []
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        requests_pb = retrieve_requests(histories, k)

        def call(i: int) -> Awaitable[object]:
            return stub.Retrieve(requests_pb[i % len(requests_pb)], timeout=30)

        for c in concurrencies:
            rows.append((c, *await drive(call, requests, c)))
    return rows


def retrieve_requests(histories: list[np.ndarray], k: int) -> list[RetrieveRequest]:
    """What the gateway sends: the history, k, and the history excluded (as in-process)."""
    return [
        RetrieveRequest(
            user_id="bench",
            recent_item_ids=h.tolist(),
            k=k,
            filter=ItemFilter(exclude_item_ids=h.tolist()),
        )
        for h in histories
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep artifacts here (reused if present)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "gpu"],
        help="where the FAISS index lives, in-process and in the service alike",
    )
    args = parser.parse_args()

    set_compute_threads(1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recserve-bench-"))
    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch/FAISS threads 1 in the benchmark process, "
        f"service with its defaults (2 executor workers); client and service on one machine "
        f"over loopback; k={args.k}; flat (exact) index, 64-d; histories of 20 items, "
        f"excluded; {args.requests} requests per cell after 20 warm-up calls; index on "
        f"{args.device.upper()}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}",
        flush=True,
    )
    for num_items in args.items:
        started = time.perf_counter()
        root = workdir / f"items{num_items}"
        if (root / "LATEST").exists():  # --workdir of an earlier run: reuse its artifact
            version_dir = resolve(root)
            print(f"\n## {num_items:,} items (artifact {version_dir.name}, reused)")
        else:
            version_dir = build_artifact(root, num_items, args.users, 1)
            built = time.perf_counter() - started
            print(f"\n## {num_items:,} items (artifact built in {built:.0f} s)")
        histories = histories_of(version_dir, 256, seed=2)
        retriever = Retriever.load(version_dir, device=args.device)
        enable_faiss_blas_for_batches(dim=retriever.index.dim)
        local = in_process(retriever, histories, args.k)
        live = live_costs(retriever, args.k, histories)
        print(
            f"in-process ms per request: single {local['single']:.2f}, in batches of 8 "
            f"{local['batch8']:.2f}, of 32 {local['batch32']:.2f}"
        )
        print(
            f"live catalogue (in-process): upsert 100 items {live['upsert100_ms']:.1f} ms, "
            f"delete 100 {live['delete100_ms']:.1f} ms; search with 10k live + 10k deleted "
            f"items {live['search_with_live_ms']:.2f} ms (vs {local['single']:.2f})"
        )

        def local_call(i: int, retriever: Retriever = retriever, h: list = histories) -> object:
            return retriever.retrieve(h[i % len(h)], args.k, h[i % len(h)])

        overheads = {}
        print("| batching | concurrency | p50 ms | p99 ms | requests/s |")
        print("|---|---|---|---|---|")
        # Every mode's server up at once, so that the throughput rounds can alternate.
        started: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            for mode, flags in BATCHING_MODES.items():
                started[mode] = start_service(
                    "retrieval", version_dir, *flags, "--device", args.device, timeout=600
                )
            for mode, (port, _) in started.items():
                overheads[mode] = overhead_at_concurrency_1(
                    local_call,
                    port,
                    "/recsys.v1.RetrievalService/Retrieve",
                    retrieve_requests(histories, args.k),
                    RetrieveResponse,
                )
                rows = asyncio.run(
                    service_run(port, histories, args.k, args.requests, args.concurrency)
                )
                for c, p50, p99, rps in rows:
                    print(f"| {mode} | {c} | {p50:.2f} | {p99:.2f} | {rps:.0f} |")
                sys.stdout.flush()
            compared = alternating_throughput(
                {mode: port for mode, (port, _) in started.items()},
                "/recsys.v1.RetrievalService/Retrieve",
                retrieve_requests(histories, args.k),
                concurrency=max(args.concurrency),
            )
        finally:
            stop_services(started)
        print(
            "\nconcurrency 1, alternating blocks of in-process and service calls "
            f"({next(iter(overheads.values()))['client']} client):"
        )
        print(
            "| batching | in-process p50 ms | service p50 ms | overhead ms (target <= 0.5) "
            "| in-process paced p50 ms | overhead vs paced ms |"
        )
        print("|---|---|---|---|---|---|")
        for mode, o in overheads.items():
            print(
                f"| {mode} | {o['in_process_ms']:.2f} | {o['service_ms']:.2f} "
                f"| {o['overhead_ms']:+.2f} | {o['paced_in_process_ms']:.2f} "
                f"| {o['overhead_vs_paced_ms']:+.2f} |"
            )
        print(
            "(paced: in-process calls with the CPU left idle before each one for as long as a "
            "service call spends outside the model, as between a concurrency-1 client's calls)"
        )
        print_throughput_comparison(compared, max(args.concurrency))
        sys.stdout.flush()
        del retriever
    return 0


if __name__ == "__main__":
    sys.exit(main())
