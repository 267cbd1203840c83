"""The concurrency-1 service overhead (service p50 minus in-process p50) under the guest
kernel's CPU idle settings, on a KVM/Firecracker guest whose cpuidle driver is haltpoll.

At concurrency 1 every call finds the server's and the client's vCPUs idle, and on a VM an
idle vCPU halts (an exit to the host); waking it for the request and again for the reply
costs tens to hundreds of microseconds, which the in-process call never pays. The guest
can poll instead of halting for a while (`haltpoll.guest_halt_poll_ns`, 200 µs by the
kernel's default, adaptive) or always while a process holds `/dev/cpu_dma_latency` at 0
(what tuned's latency-performance profile does). This script measures the ranking and
retrieval services under each setting in alternating rounds (the order rotates per round),
and puts the machine's setting back afterwards.

Needs root, the haltpoll cpuidle driver, the compiled load client (`make loadclient`) and
artifacts (the ranking bench's and the retrieval bench's). Not a test: it prints figures.

    sudo .venv/bin/python -m bench.idle_states --ranking-artifacts artifacts \
        --retrieval-artifacts /tmp/rb/items100000 /tmp/rb/items1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from services.batching import openblas_coretype_for_cpu

# Before FAISS loads (as `recserve` does).
os.environ.setdefault("OPENBLAS_CORETYPE", openblas_coretype_for_cpu() or "")

from google.protobuf.message import Message

from bench.common import (
    LOADCLIENT,
    compiled_client,
    in_process_p50,
    start_service,
    stop_services,
)
from bench.ranking_serving import rank_requests, workload
from bench.retrieval_serving import histories_of, retrieve_requests
from ranking.scorer import RankingScorer
from recdata.artifacts import resolve
from retrieval.batch import enable_faiss_blas_for_batches
from retrieval.retriever import Retriever
from services.executor import set_compute_threads

HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
CPU_DMA_LATENCY = "/dev/cpu_dma_latency"
KERNEL_DEFAULT_HALT_POLL_NS = 200_000

SETTINGS = ("halt", "halt-poll 200 us", "poll")


@contextmanager
def idle_setting(name: str, original_halt_poll_ns: str) -> Iterator[None]:
    """The guest's idle behaviour for the duration of the block:
    "halt": no polling before a vCPU halts (guest_halt_poll_ns 0);
    "halt-poll 200 us": the kernel's default adaptive polling window;
    "poll": never halt while /dev/cpu_dma_latency is held open at 0 µs."""
    halt_poll_ns = 0 if name == "halt" else KERNEL_DEFAULT_HALT_POLL_NS
    HALT_POLL_NS.write_text(str(halt_poll_ns))
    latency_fd = None
    if name == "poll":
        latency_fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
        os.write(latency_fd, struct.pack("i", 0))  # in effect as long as the fd is open
    try:
        yield
    finally:
        if latency_fd is not None:
            os.close(latency_fd)
        HALT_POLL_NS.write_text(original_halt_poll_ns)


def check_machine() -> str:
    """The original guest_halt_poll_ns; exits with the reason when this machine cannot run
    the comparison."""
    if not LOADCLIENT.exists():
        sys.exit("needs the compiled load client: make loadclient")
    if not HALT_POLL_NS.exists() or CPUIDLE_DRIVER.read_text().strip() != "haltpoll":
        sys.exit("needs a guest kernel with the haltpoll cpuidle driver")
    if os.geteuid() != 0:
        sys.exit("needs root (writes guest_halt_poll_ns, holds /dev/cpu_dma_latency)")
    return HALT_POLL_NS.read_text().strip()


def compare(
    label: str,
    local_call: Callable[[int], object],
    port: int,
    method: str,
    messages: Sequence[Message],
    rounds: int,
    calls: int,
    original_halt_poll_ns: str,
) -> None:
    """Per round and setting: in-process p50, then the service's p50 from the compiled
    client; prints medians and the median (range) of the per-round differences."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    for round_no in range(rounds):
        order = SETTINGS[round_no % len(SETTINGS) :] + SETTINGS[: round_no % len(SETTINGS)]
        for name in order:
            with idle_setting(name, original_halt_poll_ns):
                local = in_process_p50(local_call, calls)
                served = compiled_client(port, method, messages, calls, warmup=5)
            assert served is not None
            if served["errors"]:
                raise RuntimeError(f"{served['errors']} of {calls} calls failed: {served}")
            results[name].append((local, served["p50_ms"]))
    for name, pairs in results.items():
        differences = [s - i for i, s in pairs]
        print(
            f"| {label} | {name} | {statistics.median(i for i, _ in pairs):.2f} | "
            f"{statistics.median(s for _, s in pairs):.2f} | "
            f"{statistics.median(differences):+.2f} "
            f"({min(differences):+.2f} to {max(differences):+.2f}) |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranking-artifacts", type=Path)
    parser.add_argument("--candidates", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--retrieval-artifacts", type=Path, nargs="*", default=[])
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=100, help="per block")
    args = parser.parse_args()
    original = check_machine()
    set_compute_threads(1)
    print(
        f"# conditions: {platform.machine()}, {os.cpu_count()} cores, cpuidle driver "
        f"haltpoll (guest_halt_poll_ns {original} as found); services with their default "
        f"flags, 1 compute thread; compiled load client, concurrency 1; {args.rounds} "
        f"rounds of {args.calls} in-process and {args.calls} service calls per setting, "
        "settings in rotating order"
    )
    print("| workload | idle setting | in-process p50 ms | service p50 ms | overhead ms |")
    print("|---|---|---|---|---|")
    if args.ranking_artifacts:
        version_dir = resolve(args.ranking_artifacts)
        scorer = RankingScorer.load(version_dir, device="cpu")
        started: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            started["ranking"] = start_service("ranking", version_dir)
            port = started["ranking"][0]
            for k in args.candidates:
                queries = workload(version_dir, k, 200)

                def rank_call(i: int, queries: list = queries) -> object:
                    q = queries[i % len(queries)]
                    return scorer.rank(
                        q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items
                    )

                compare(
                    f"ranking, {k} candidates",
                    rank_call,
                    port,
                    "/recsys.v1.RankingService/Rank",
                    rank_requests(queries),
                    args.rounds,
                    args.calls,
                    original,
                )
        finally:
            stop_services(started)
    for root in args.retrieval_artifacts:
        version_dir = resolve(root)
        retriever = Retriever.load(version_dir, device="cpu")
        enable_faiss_blas_for_batches(dim=retriever.index.dim)
        histories = histories_of(version_dir, 256, seed=2)

        def retrieve_call(i: int, r: Retriever = retriever, h: list = histories) -> object:
            return r.retrieve(h[i % len(h)], args.k, h[i % len(h)])

        started = {}
        try:
            started["retrieval"] = start_service("retrieval", version_dir, timeout=600)
            compare(
                f"retrieval, {len(retriever.items.item_ids):,} items, k={args.k}",
                retrieve_call,
                started["retrieval"][0],
                "/recsys.v1.RetrievalService/Retrieve",
                retrieve_requests(histories, args.k),
                args.rounds,
                args.calls,
                original,
            )
        finally:
            stop_services(started)
        del retriever


if __name__ == "__main__":
    main()
