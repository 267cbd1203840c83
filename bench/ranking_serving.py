"""Ranking: the in-process scorer vs the real gRPC service, 200 and 500 candidates,
concurrency 1/8/32, micro-batching off and on.

The service runs as its own process (`recserve serve ranking`, as deployed) on loopback;
an asyncio client in this process drives it. Candidates are real retrieval lists (with
their two-tower scores) for real users of the artifact. In-process rows time
`RankingScorer.rank` (features + exported forward + top N: exactly what the service runs per
call) and `rank_many` over a batch (what one micro-batch costs). With the compiled load
client built (`make loadclient`), the batching modes' throughput at the top concurrency is
also compared in alternating rounds from it (every mode's server runs for the whole
candidate count). Not a test: it prints figures with their conditions.

    .venv/bin/python -m bench.ranking_serving --artifacts artifacts   # from the repo root
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc import aio

from bench.common import (
    BATCHING_MODES,
    alternating_throughput,
    drive,
    overhead_at_concurrency_1,
    percentiles,
    print_throughput_comparison,
    start_service,
    stop_services,
)
from ranking.scorer import RankingScorer, RankQuery
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from retrieval.retriever import Retriever
from services.executor import set_compute_threads


def start_ranking(
    version_dir: Path, mode: str, threads: int, workers: int, device: str = "cpu"
) -> tuple:
    flags = [*BATCHING_MODES[mode], "--threads", str(threads), "--workers", str(workers)]
    return start_service("ranking", version_dir, *flags, "--device", device, timeout=180)


def device_name(device: str) -> str:
    if device == "cuda":
        return f"CUDA {torch.cuda.get_device_name()} (torch built with CUDA {torch.version.cuda})"
    return "CPU"


def rank_requests(queries: list[RankQuery]) -> list[ranking_pb2.RankRequest]:
    return [
        ranking_pb2.RankRequest(
            user_id="bench",
            recent_item_ids=q.recent_item_ids.tolist(),
            candidate_item_ids=q.candidate_ids.tolist(),
            candidate_scores=np.asarray(q.candidate_scores, np.float32).tolist(),
            num_items=q.num_items,
        )
        for q in queries
    ]


def workload(version_dir: Path, k: int, users: int) -> list[RankQuery]:
    """One request per user: its recent history and retrieval's top-k for it (scores sent)."""
    store = UserHistoryStore.load(version_dir / "users")
    retriever = Retriever.load(version_dir, device="cpu")
    out = []
    for user in store.user_ids()[:users]:
        history = store.recent_items(user)[-50:]
        cands = retriever.retrieve(history, k, history)
        out.append(RankQuery(history, cands.item_ids, cands.two_tower_scores, 10))
    return out


def in_process(scorer: RankingScorer, queries: list[RankQuery], repeats: int) -> dict:
    """Sequential single calls (p50/p99, calls/s) and rank_many over batches of 8 and 32.
    CPU time per call (thread_time) is reported next to wall time: on a shared machine the
    wall clock also counts time this thread waited for a core."""
    for q in queries[:20]:
        scorer.rank(q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items)
    times, cpu = [], []
    for i in range(repeats):
        q = queries[i % len(queries)]
        started, started_cpu = time.perf_counter(), time.thread_time()
        scorer.rank(q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items)
        cpu.append(time.thread_time() - started_cpu)
        times.append(time.perf_counter() - started)
    p50, p99 = percentiles(times)
    out = {"p50": p50, "p99": p99, "rps": len(times) / sum(times)}
    out["cpu_ms"] = statistics.median(cpu) * 1e3
    for size in (8, 32):
        batch_cpu = []
        for i in range(max(5, repeats // size)):
            batch = [queries[(i * size + j) % len(queries)] for j in range(size)]
            started_cpu = time.thread_time()
            scorer.rank_many(batch)
            batch_cpu.append(time.thread_time() - started_cpu)
        out[f"batch{size}_cpu_ms_per_call"] = statistics.median(batch_cpu) * 1e3 / size
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def service_rows(
    port: int, pid: int, queries: list[RankQuery], requests: int, concurrencies: list[int]
) -> list[tuple[int, float, float, float, float]]:
    """(concurrency, p50 ms, p99 ms, requests/s, server CPU ms per call) per cell."""
    messages = rank_requests(queries)
    rows = []
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)

        def rank(i: int) -> Awaitable[object]:
            return stub.Rank(messages[i % len(messages)], timeout=30)

        for c in concurrencies:
            cpu_before = process_cpu_seconds(pid)
            p50, p99, rps = await drive(rank, requests, c)
            calls = requests + min(20, requests)  # drive() warms up with 20 calls first
            cpu_ms = (process_cpu_seconds(pid) - cpu_before) * 1e3 / calls
            rows.append((c, p50, p99, rps, cpu_ms))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--candidates", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--batching", nargs="+", default=list(BATCHING_MODES), choices=list(BATCHING_MODES)
    )
    parser.add_argument("--requests", type=int, default=600, help="per service cell")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--workers", type=int, default=2, help="service model threads")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the ranker runs, in-process and in the service alike",
    )
    args = parser.parse_args()

    version_dir = resolve(args.artifacts)
    set_compute_threads(args.threads)
    load_before = os.getloadavg()
    scorer = RankingScorer.load(version_dir, device=args.device)
    local, service, overheads, compared = {}, {}, {}, {}
    for k in args.candidates:
        queries = workload(version_dir, k, 200)
        local[k] = in_process(scorer, queries, args.requests)

        def local_call(i: int, queries: list[RankQuery] = queries) -> object:
            q = queries[i % len(queries)]
            return scorer.rank(q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items)

        # Every mode's server up at once, so that the throughput rounds can alternate.
        started: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            for mode in args.batching:
                started[mode] = start_ranking(
                    version_dir, mode, args.threads, args.workers, args.device
                )
            for mode, (port, proc) in started.items():
                overheads[(k, mode)] = overhead_at_concurrency_1(
                    local_call,
                    port,
                    "/recsys.v1.RankingService/Rank",
                    rank_requests(queries),
                    ranking_pb2.RankResponse,
                )
                service[(k, mode)] = asyncio.run(
                    service_rows(port, proc.pid, queries, args.requests, args.concurrency)
                )
            compared[k] = alternating_throughput(
                {mode: port for mode, (port, _) in started.items()},
                "/recsys.v1.RankingService/Rank",
                rank_requests(queries),
                concurrency=max(args.concurrency),
            )
        finally:
            stop_services(started)
    load_after = os.getloadavg()

    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, grpcio "
        f"{grpc.__version__}, torch threads {args.threads} (client and server), service "
        f"--workers {args.workers}, {device_name(args.device)} (exported ranker, fp32); "
        f"{args.requests} requests per "
        f"service cell after 20 warm-up calls; client and server on one machine over "
        f"loopback; load average {load_before[0]:.1f} before / {load_after[0]:.1f} after; "
        f"artifact {version_dir.name}"
    )
    print("| candidates | path | concurrency | p50 ms | p99 ms | requests/s | server CPU ms/call |")
    print("|---|---|---|---|---|---|---|")
    for k in args.candidates:
        m = local[k]
        print(
            f"| {k} | in-process rank() | 1 | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:.0f} "
            f"| {m['cpu_ms']:.2f} |"
        )
        for mode in args.batching:
            for c, p50, p99, rps, cpu in service[(k, mode)]:
                print(
                    f"| {k} | service, batching {mode} | {c} | {p50:.2f} | {p99:.2f} | {rps:.0f} "
                    f"| {cpu:.2f} |"
                )
    print()
    print("| candidates | in-process CPU ms per call: alone | in a batch of 8 | in a batch of 32 |")
    print("|---|---|---|---|")
    for k in args.candidates:
        m = local[k]
        print(
            f"| {k} | {m['cpu_ms']:.2f} | {m['batch8_cpu_ms_per_call']:.2f} "
            f"| {m['batch32_cpu_ms_per_call']:.2f} |"
        )
    print()
    client = next(iter(overheads.values()))["client"]
    print(f"concurrency 1, alternating blocks of in-process and service calls ({client} client):")
    print(
        "| candidates | batching | in-process p50 ms | service p50 ms "
        "| overhead ms (target <= 0.5) | in-process paced p50 ms | overhead vs paced ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for (k, mode), o in overheads.items():
        print(
            f"| {k} | {mode} | {o['in_process_ms']:.2f} | {o['service_ms']:.2f} "
            f"| {o['overhead_ms']:+.2f} | {o['paced_in_process_ms']:.2f} "
            f"| {o['overhead_vs_paced_ms']:+.2f} |"
        )
    print(
        "(paced: in-process calls with the CPU left idle before each one for as long as a "
        "service call spends outside the model, as between a concurrency-1 client's calls)"
    )
    print()
    top = max(args.concurrency)
    for k in args.candidates:
        peak = {mode: service[(k, mode)][-1][3] for mode in args.batching}
        if {"on", "off"} <= set(peak):
            print(
                f"{k} candidates: throughput at concurrency {top} from the asyncio client above, "
                f"batching on / off = {peak['on'] / peak['off']:.2f}x"
            )
    for k in args.candidates:
        print_throughput_comparison(compared[k], top, f"{k} candidates: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
