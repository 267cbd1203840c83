"""What tracing costs a service: the ranking service with tracing off and on (every call
sampled, spans exported over OTLP/gRPC to a receiver in this process), side by side.

Two `recserve serve ranking` processes on the same artifact, one with `--otlp-endpoint`;
the compiled load client (`make loadclient`) measures concurrency-1 p50 in alternating
rounds, then concurrency-32 throughput in alternating rounds. The receiver counts the spans
it gets, so the "on" figures include real export work. Not a test: it prints figures with
their conditions.

    .venv/bin/python -m bench.tracing_overhead --artifacts <ranking artifact root>
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.common import (
    LOADCLIENT,
    alternating_throughput,
    compiled_client,
    start_service,
    stop_services,
)
from bench.ranking_serving import rank_requests, workload
from recdata.artifacts import resolve

METHOD = "/recsys.v1.RankingService/Rank"


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts what it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request, context):
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=200, help="per concurrency-1 block")
    args = parser.parse_args()
    if not LOADCLIENT.exists():
        print("bench/loadclient is not built (make loadclient)", file=sys.stderr)
        return 1
    version_dir = resolve(Path(args.artifacts))
    messages = rank_requests(workload(version_dir, args.candidates, 200))

    counter = SpanCounter()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, receiver)
    receiver_port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    started: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        started["off"] = start_service("ranking", version_dir, "--device", "cpu")
        started["on"] = start_service(
            "ranking",
            version_dir,
            "--device",
            "cpu",
            "--otlp-endpoint",
            f"http://127.0.0.1:{receiver_port}",
        )
        ports = {mode: port for mode, (port, _) in started.items()}
        p50s: dict[str, list[float]] = {mode: [] for mode in ports}
        for round_number in range(args.rounds):
            order = list(ports) if round_number % 2 == 0 else list(ports)[::-1]
            for mode in order:
                result = compiled_client(ports[mode], METHOD, messages, args.calls, warmup=10)
                assert result is not None and not result["errors"], result
                p50s[mode].append(result["p50_ms"])
        throughput = alternating_throughput(ports, METHOD, messages)
        assert throughput is not None
    finally:
        stop_services(started)  # SIGTERM: the "on" service flushes its last spans
        receiver.stop(0)

    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"grpcio {grpc.__version__}, ranking artifact {version_dir.name}, {args.candidates} "
        "candidates, service defaults (batching on, 2 workers, 1 torch thread); tracing on = "
        "every call sampled, BatchSpanProcessor, OTLP/gRPC to a receiver in the benchmark "
        "process (same 2 cores); compiled load client"
    )
    differences = [on - off for on, off in zip(p50s["on"], p50s["off"], strict=True)]
    print(f"\nconcurrency 1, {args.rounds} alternating rounds of {args.calls} calls:")
    print("| tracing | p50 ms (median of rounds) |")
    print("|---|---|")
    for mode, values in p50s.items():
        print(f"| {mode} | {statistics.median(values):.3f} |")
    print(
        f"on − off per round: median {statistics.median(differences):+.3f} ms "
        f"(range {min(differences):+.3f} to {max(differences):+.3f})"
    )
    print("\nconcurrency 32, 5 alternating rounds of 1,500 calls:")
    print("| tracing | requests/s | p50 ms | p99 ms | requests/s per round |")
    print("|---|---|---|---|---|")
    for mode, r in throughput.items():
        per_round = ", ".join(f"{x:.0f}" for x in r["rps_rounds"])
        print(f"| {mode} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {per_round} |")
    ratios = [
        on / off
        for on, off in zip(
            throughput["on"]["rps_rounds"], throughput["off"]["rps_rounds"], strict=True
        )
    ]
    print(f"on / off throughput per round: median {statistics.median(ratios):.3f}")
    print(f"spans received: {counter.spans}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
