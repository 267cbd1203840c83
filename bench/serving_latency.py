"""Latency and throughput of each stage: in-process call vs. the real gRPC service.

Starts the four services as separate processes on loopback (as `make demo` does), drives
them with an asyncio client at several concurrencies, and prints p50/p99/throughput next to
the same work done in-process. Not a test: it prints figures with their conditions.

    .venv/bin/python -m bench.serving_latency --artifacts artifacts
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import numpy as np
from grpc import aio

from bench.common import ROOT, drive, free_port, wait_until_serving
from ranking.scorer import RankingScorer
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from recsys.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from retrieval.retriever import Retriever
from services.cli import serve_command
from services.executor import set_compute_threads


def start_services(
    version_dir: Path, batching: str
) -> tuple[dict[str, int], list[subprocess.Popen]]:
    ports = {name: free_port() for name in ("retrieval", "ranking", "tagging", "gateway")}
    procs = []
    for name, port in ports.items():
        flags = ["--batching", batching] if name == "retrieval" else []
        if name == "gateway":
            flags = [
                "--retrieval-addr",
                f"127.0.0.1:{ports['retrieval']}",
                "--ranking-addr",
                f"127.0.0.1:{ports['ranking']}",
                "--tagging-addr",
                f"127.0.0.1:{ports['tagging']}",
            ]
        cmd = serve_command(name, version_dir, port, -1, "--log-level", "warning", *flags)
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
    for port in ports.values():
        wait_until_serving(port, timeout=120)
    return ports, procs


def in_process(
    version_dir: Path, histories: list[np.ndarray], k: int, repeats: int
) -> dict[str, float]:
    retriever = Retriever.load(version_dir, device="cpu")
    scorer = RankingScorer.load(version_dir)
    times_r, times_k = [], []
    for i in range(repeats):
        h = histories[i % len(histories)]
        started = time.perf_counter()
        cands = retriever.retrieve(h, k, h)
        times_r.append(time.perf_counter() - started)
        started = time.perf_counter()
        scorer.rank(h, cands.item_ids, cands.two_tower_scores, 10)
        times_k.append(time.perf_counter() - started)
    return {"retrieve": statistics.median(times_r) * 1e3, "rank": statistics.median(times_k) * 1e3}


async def service_runs(
    ports: dict[str, int],
    histories: list[np.ndarray],
    k: int,
    requests: int,
    concurrencies: list[int],
    candidates: list[np.ndarray],
) -> list[tuple]:
    rows = []
    async with (
        aio.insecure_channel(f"127.0.0.1:{ports['retrieval']}") as rch,
        aio.insecure_channel(f"127.0.0.1:{ports['ranking']}") as kch,
        aio.insecure_channel(f"127.0.0.1:{ports['gateway']}") as gch,
    ):
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(rch)
        ranking = ranking_pb2_grpc.RankingServiceStub(kch)
        gateway = gateway_pb2_grpc.RecommendationServiceStub(gch)

        def retrieve(i: int) -> Awaitable[object]:
            h = histories[i % len(histories)].tolist()
            return retrieval.Retrieve(
                retrieval_pb2.RetrieveRequest(user_id="bench", recent_item_ids=h, k=k), timeout=10
            )

        def rank(i: int) -> Awaitable[object]:
            return ranking.Rank(
                ranking_pb2.RankRequest(
                    user_id="bench",
                    recent_item_ids=histories[i % len(histories)].tolist(),
                    candidate_item_ids=candidates[i % len(candidates)].tolist(),
                    num_items=10,
                ),
                timeout=10,
            )

        def recommend(i: int) -> Awaitable[object]:
            return gateway.Recommend(
                gateway_pb2.RecommendRequest(user_id=f"u{i % 2000:06d}", num_items=10), timeout=10
            )

        for name, call in (
            (f"Retrieve k={k}", retrieve),
            (f"Rank {k} cands", rank),
            ("Recommend N=10", recommend),
        ):
            for c in concurrencies:
                p50, p99, rps = await drive(call, requests, c)
                rows.append((name, c, p50, p99, rps))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument(
        "--batching",
        nargs="+",
        default=["off", "on"],
        choices=["on", "off"],
        help="retrieval micro-batching modes to compare, one service start each",
    )
    args = parser.parse_args()

    version_dir = resolve(args.artifacts)
    set_compute_threads(1)
    users = UserHistoryStore.load(version_dir / "users")
    histories = [users.recent_items(u)[-50:] for u in users.user_ids()[:500]]
    retriever = Retriever.load(version_dir, device="cpu")
    candidates = [retriever.retrieve(h, args.k, h).item_ids for h in histories[:50]]
    local = in_process(version_dir, histories, args.k, args.requests)

    rows = []
    for mode in args.batching:
        ports, procs = start_services(version_dir, mode)
        try:
            measured = asyncio.run(
                service_runs(ports, histories, args.k, args.requests, args.concurrency, candidates)
            )
            rows += [(f"{name} (retrieval batching {mode})", *rest) for name, *rest in measured]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)

    print(
        f"# conditions: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, torch/FAISS threads 1, "
        f"{args.requests} requests per cell after 20 warm-up calls, services and client on "
        f"one machine over loopback; artifact {version_dir.name}"
    )
    print(
        f"in-process medians: retrieve k={args.k} {local['retrieve']:.2f} ms, "
        f"rank {args.k} candidates {local['rank']:.2f} ms"
    )
    print("| call | concurrency | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|")
    for name, c, p50, p99, rps in rows:
        print(f"| {name} | {c} | {p50:.2f} | {p99:.2f} | {rps:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
