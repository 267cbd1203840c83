"""Latency while a new version is swapped in under load: the same concurrent load from the
compiled client without and with `ReloadModel` calls during it (the artifact's LATEST
version reloaded: a full load, warm-up and swap each time).

The service runs as its own process with the admin service on its port. Needs the compiled
load client (`make loadclient`): the figures are its p99, p99.9 and max. Not a test: it
prints figures with their conditions.

    .venv/bin/python -m bench.hot_swap --artifacts artifacts                  # ranking
    .venv/bin/python -m bench.hot_swap --artifacts /tmp/rb/items100000 --service retrieval
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import grpc

from bench.common import LOADCLIENT, compiled_client, start_service, stop_services
from recdata.artifacts import resolve
from recsys.v1 import admin_pb2, admin_pb2_grpc

METHODS = {
    "ranking": "/recsys.v1.RankingService/Rank",
    "retrieval": "/recsys.v1.RetrievalService/Retrieve",
}


def requests_for(service: str, version_dir: Path) -> list:
    if service == "ranking":
        from bench.ranking_serving import rank_requests, workload

        return rank_requests(workload(version_dir, 200, 200))
    from bench.retrieval_serving import histories_of, retrieve_requests

    return retrieve_requests(histories_of(version_dir, 256, seed=2), 200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--service", choices=sorted(METHODS), default="ranking")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--calls", type=int, default=12_000)
    parser.add_argument("--swaps", type=int, default=3)
    args = parser.parse_args()
    if not LOADCLIENT.exists():
        print("bench/loadclient is not built (make loadclient)", file=sys.stderr)
        return 1

    root = Path(args.artifacts)
    version_dir = resolve(root)
    messages = requests_for(args.service, version_dir)
    method = METHODS[args.service]
    port, proc = start_service(
        args.service, root, "--admin-port", "0", "--device", "cpu", timeout=600
    )
    started = {"service": (port, proc)}
    swap_seconds: list[float] = []
    try:
        plain = compiled_client(port, method, messages, args.calls, args.concurrency)
        admin = admin_pb2_grpc.ModelAdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def swap_during_load() -> None:
            for _ in range(args.swaps):
                time.sleep(1.0)  # spread the swaps over the measured load, not timing
                began = time.perf_counter()
                admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=600)
                swap_seconds.append(time.perf_counter() - began)

        swapper = threading.Thread(target=swap_during_load)
        swapper.start()
        swapping = compiled_client(port, method, messages, args.calls, args.concurrency)
        swapper.join()
    finally:
        stop_services(started)
    assert plain is not None and swapping is not None

    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.service} service (its defaults, --device cpu), artifact {version_dir.name}; "
        f"compiled load client, {args.calls} calls at concurrency {args.concurrency} per row; "
        f"{args.swaps} ReloadModel calls during the second row, each "
        f"{', '.join(f'{s:.2f}' for s in swap_seconds)} s"
    )
    print("| load | p50 ms | p99 ms | p99.9 ms | max ms | requests/s | failed calls |")
    print("|---|---|---|---|---|---|---|")
    for name, result in (("steady", plain), (f"{len(swap_seconds)} swaps during it", swapping)):
        print(
            f"| {name} | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} "
            f"| {result['p999_ms']:.2f} | {result['max_ms']:.2f} | {result['rps']:.0f} "
            f"| {result['errors']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
