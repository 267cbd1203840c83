"""The concurrency-1 floor of a Python gRPC server on this machine: the ranking service
against bare servers that do nothing but the same scorer call, on grpc.aio and on grpc's
threaded (sync) server, in alternating rounds with the in-process call.

A bare server here has no validation, metrics, batcher, health or reflection: it parses
the request, calls `RankingScorer.rank` and answers. Its overhead over the in-process call
is what any Python gRPC service pays on this machine before doing anything of its own;
the difference to `recserve serve ranking` is what ours adds. Needs the compiled load
client (`make loadclient`). Not a test: it prints figures with their conditions.

    .venv/bin/python -m bench.bare_server --artifacts artifacts
    .venv/bin/python -m bench.bare_server --serve-bare aio <version dir> <port>  # one server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from bench.common import (
    LOADCLIENT,
    compiled_client,
    free_port,
    in_process_p50,
    start_service,
    stop_services,
)
from bench.ranking_serving import rank_requests, workload
from ranking.scorer import RankingScorer
from recdata.artifacts import resolve
from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from services.executor import set_compute_threads

METHOD = "/recsys.v1.RankingService/Rank"


def serve_bare(stack: str, version_dir: Path, port: int) -> None:
    """A Rank server on `stack` ("aio" or "sync") whose handler only calls the scorer;
    prints "ready" once it listens."""
    set_compute_threads(1)
    scorer = RankingScorer.load(version_dir, device="cpu")
    ids = scorer.items.item_ids
    scorer.rank(ids[:10], ids[:200], None, 10)  # warm-up, as the service does

    def rank(request: ranking_pb2.RankRequest) -> ranking_pb2.RankResponse:
        scores = request.candidate_scores
        ranked = scorer.rank(
            np.asarray(request.recent_item_ids, np.int64),
            np.asarray(request.candidate_item_ids, np.int64),
            np.asarray(scores, np.float32) if len(scores) else None,
            request.num_items,
        )
        return ranking_pb2.RankResponse(
            item_ids=ranked.item_ids.tolist(), scores=ranked.scores.tolist()
        )

    class Threaded(ranking_pb2_grpc.RankingServiceServicer):
        def Rank(self, request, context):
            return rank(request)

    class Async(ranking_pb2_grpc.RankingServiceServicer):
        async def Rank(self, request, context):
            return rank(request)  # on the loop thread, like an inline lone call

    if stack == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(Threaded(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return

    async def run() -> None:
        server = grpc.aio.server()
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(Async(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(run())


def start_bare(stack: str, version_dir: Path) -> tuple[int, subprocess.Popen]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.bare_server", "--serve-bare", stack]
    proc = subprocess.Popen(
        [*cmd, str(version_dir), str(port)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"bare {stack} server did not start")
    return port, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--serve-bare", nargs=3, metavar=("STACK", "VERSION_DIR", "PORT"))
    args = parser.parse_args()
    if args.serve_bare:
        stack, version_dir, port = args.serve_bare
        serve_bare(stack, Path(version_dir), int(port))
        return 0
    if not LOADCLIENT.exists():
        print("bench/loadclient is not built (make loadclient)", file=sys.stderr)
        return 1

    set_compute_threads(1)
    version_dir = resolve(Path(args.artifacts))
    queries = workload(version_dir, args.candidates, 200)
    messages = rank_requests(queries)
    scorer = RankingScorer.load(version_dir, device="cpu")

    def local_call(i: int) -> object:
        q = queries[i % len(queries)]
        return scorer.rank(q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items)

    servers: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        servers["bare grpc.aio"] = start_bare("aio", version_dir)
        servers["bare grpc sync (2 threads)"] = start_bare("sync", version_dir)
        servers["recserve serve ranking"] = start_service("ranking", version_dir, "--device", "cpu")
        for port, _ in servers.values():
            compiled_client(port, METHOD, messages, 300, warmup=20)
        in_process_p50(local_call, 50)
        local: list[float] = []
        remote: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            local.append(in_process_p50(local_call, 100))
            for name, (port, _) in servers.items():
                result = compiled_client(port, METHOD, messages, 100, warmup=5)
                assert result is not None
                remote[name].append(result["p50_ms"])
    finally:
        stop_services(servers)

    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"grpcio {grpc.__version__}, ranking artifact {version_dir.name}, "
        f"{args.candidates} candidates, 1 torch thread; compiled load client, concurrency 1; "
        f"{args.rounds} alternating rounds of 100 in-process and 100 calls per server"
    )
    print(f"in-process rank() p50 {statistics.median(local):.2f} ms")
    print("| server | p50 ms | overhead over in-process ms (median of per-round differences) |")
    print("|---|---|---|")
    for name, p50s in remote.items():
        overhead = statistics.median(s - i for s, i in zip(p50s, local, strict=True))
        print(f"| {name} | {statistics.median(p50s):.2f} | {overhead:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
