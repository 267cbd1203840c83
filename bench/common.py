"""What every benchmark script shares: free ports, starting a service process and waiting
until it is SERVING, driving calls at a fixed concurrency, and medians."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli import serve_command

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50 ms, p99 ms) of samples in seconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def wait_until_serving(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Polls the health service until SERVING; fails at once if `proc` exits first (its
    log, on stderr, says why) and after `timeout` seconds otherwise."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the service exited ({proc.returncode}) before SERVING")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet, or still loading
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} not SERVING after {timeout:.0f} s")
            time.sleep(0.2)  # polling a process start-up, not timing anything


def start_service(
    name: str, version_dir: Path, *flags: str, port: int | None = None, timeout: float = 300
) -> tuple[int, subprocess.Popen]:
    """`recserve serve <name>` as its own process, quiet logs; returns once SERVING."""
    port = port or free_port()
    cmd = serve_command(name, version_dir, port, -1, "--log-level", "warning", *flags)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        wait_until_serving(port, timeout, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return port, proc


def stop_services(started: dict[str, tuple[int, subprocess.Popen]]) -> None:
    """SIGTERM every service of `started` (as `start_service` returned them) and wait."""
    for _, proc in started.values():
        proc.send_signal(signal.SIGTERM)
    for _, proc in started.values():
        proc.wait(timeout=60)


async def drive(
    call: Callable[[int], Awaitable[object]], requests: int, concurrency: int
) -> tuple[float, float, float]:
    """p50 ms, p99 ms and calls/s of `requests` calls at a fixed concurrency, after 20
    warm-up calls."""
    latencies: list[float] = []
    next_request = 0

    async def worker() -> None:
        nonlocal next_request
        while next_request < requests:
            i = next_request
            next_request += 1
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    for i in range(min(20, requests)):  # warm the channel and the server
        await call(i)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return p50, p99, requests / wall


LOADCLIENT = ROOT / "build" / "loadclient"

# The retrieval and ranking service configurations the serving benchmarks compare: batching
# off, on (the default: lone calls computed on the event loop), and on with every call
# through the executor.
BATCHING_MODES = {
    "off": ["--batching", "off"],
    "on": ["--batching", "on"],
    "on, no inline": ["--batching", "on", "--inline-lone-calls", "off"],
}


def compiled_client(
    port: int,
    method: str,
    messages: Sequence[Message],
    calls: int,
    concurrency: int = 1,
    warmup: int = 50,
    busy_poll: bool = False,
) -> dict[str, float] | None:
    """Latency of `calls` calls of `method` (e.g. "/recsys.v1.RetrievalService/Retrieve")
    from the compiled load client (bench/loadclient, `make loadclient`): p50_ms, p90_ms,
    p99_ms, p999_ms, max_ms, rps, and errors / codes for failed calls. None when the client
    is not built.
    A Python client spends a few hundred microseconds of CPU per call itself, which a
    backend's compiled stub does not. `busy_poll` makes the client spin on its completion
    queue instead of sleeping in it (a diagnostic; concurrency 1 only, the client refuses
    more: it would spin one thread per call in flight)."""
    if not LOADCLIENT.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".bin") as requests_file:
        for message in messages:
            body = message.SerializeToString()
            requests_file.write(struct.pack("<I", len(body)) + body)
        requests_file.flush()
        done = subprocess.run(
            [
                str(LOADCLIENT),
                "--target",
                f"127.0.0.1:{port}",
                "--method",
                method,
                "--requests",
                requests_file.name,
                "--calls",
                str(calls),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
                *(["--busy-poll"] if busy_poll else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"loadclient failed ({done.returncode}): {done.stderr or done.stdout}")
    return json.loads(done.stdout)


def blocking_client(
    port: int, method: str, messages: Sequence[Message], calls: int, response_type: type
) -> float:
    """p50 ms of `calls` sequential calls from grpcio's blocking (non-asyncio) client."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        for message in messages[:5]:
            call(message, timeout=30)
        times = []
        for i in range(calls):
            started = time.perf_counter()
            call(messages[i % len(messages)], timeout=30)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def overhead_at_concurrency_1(
    local_call: Callable[[int], object],
    port: int,
    method: str,
    messages: Sequence[Message],
    response_type: type,
    rounds: int = 15,
    calls: int = 100,
) -> dict[str, float | str]:
    """Service p50 minus in-process p50 at concurrency 1, measured in alternating blocks
    (in-process, then the service) so that both see the same machine: on a shared VM the
    speed drifts by tens of percent within minutes, more than the difference measured.
    Per round the p50 of `calls` calls each; returned are the medians over rounds, and
    the median of the per-round differences ("overhead_ms"). The service is called from
    the compiled load client when it is built (see `compiled_client`), else from grpcio's
    blocking client.

    A third block per round calls in-process with the CPU left idle before each call for
    as long as a service call spends outside the model (the last round's difference): a
    diagnostic of how much slower the same call runs when it is not back to back (cold
    caches after an idle vCPU), reported as "paced_in_process_ms" and
    "overhead_vs_paced_ms"."""
    if rounds < 2:
        raise ValueError("rounds must be >= 2 (the paced block starts in the second)")
    compiled = LOADCLIENT.exists()
    local_p50s, paced_p50s, service_p50s = [], [], []
    gap = 0.0
    for _ in range(rounds):
        local_p50s.append(in_process_p50(local_call, calls, 0.0))
        paced_p50s.append(in_process_p50(local_call, calls, gap))
        if compiled:
            result = compiled_client(port, method, messages, calls, warmup=5)
            assert result is not None
            if result["errors"]:
                raise RuntimeError(f"{result['errors']} of {calls} calls failed: {result}")
            service_p50s.append(result["p50_ms"])
        else:
            service_p50s.append(blocking_client(port, method, messages, calls, response_type))
        gap = max(0.0, service_p50s[-1] - local_p50s[-1]) / 1e3
    differences = [s - i for s, i in zip(service_p50s, local_p50s, strict=True)]
    # The first round's paced block had no gap yet: compare from the second on.
    vs_paced = [s - i for s, i in zip(service_p50s[1:], paced_p50s[1:], strict=True)]
    return {
        "client": "compiled (bench/loadclient)" if compiled else "grpcio blocking",
        "in_process_ms": statistics.median(local_p50s),
        "service_ms": statistics.median(service_p50s),
        "overhead_ms": statistics.median(differences),
        "paced_in_process_ms": statistics.median(paced_p50s[1:]),
        "overhead_vs_paced_ms": statistics.median(vs_paced),
    }


def in_process_p50(
    local_call: Callable[[int], object], calls: int, idle_before: float = 0.0
) -> float:
    """p50 ms of `calls` calls of `local_call(i)`, the CPU left idle `idle_before` seconds
    before each one (0: back to back)."""
    times = []
    for i in range(calls):
        if idle_before:
            time.sleep(idle_before)  # leaves the CPU idle, as between a client's calls
        started = time.perf_counter()
        local_call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def alternating_throughput(
    ports: dict[str, int],
    method: str,
    messages: Sequence[Message],
    concurrency: int = 32,
    calls: int = 1500,
    rounds: int = 5,
) -> dict[str, dict[str, float]] | None:
    """Requests/s of each running service (one per mode in `ports`) at `concurrency`, from
    the compiled load client, in `rounds` alternating rounds of `calls` calls (all modes
    see the same machine, as in `overhead_at_concurrency_1`). Per mode: medians over rounds
    of rps, p50_ms and p99_ms, plus "rps_rounds" (a list). None when the client is not
    built: a Python client spends more CPU per call than a batched service does, on the
    same cores, and would blur the comparison."""
    if not LOADCLIENT.exists():
        return None
    per_mode: dict[str, list[dict[str, float]]] = {mode: [] for mode in ports}
    modes = list(ports)
    for round_number in range(rounds):
        # A different mode goes first each round: no mode always follows the same one.
        shift = round_number % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            port = ports[mode]
            result = compiled_client(port, method, messages, calls, concurrency, warmup=50)
            assert result is not None
            if result["errors"]:
                raise RuntimeError(f"{mode}: {result['errors']} of {calls} calls failed: {result}")
            per_mode[mode].append(result)
    return {
        mode: {
            "rps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "rps_rounds": [r["rps"] for r in results],
        }
        for mode, results in per_mode.items()
    }


def print_throughput_comparison(
    results: dict[str, dict[str, float]] | None, concurrency: int, label: str = ""
) -> None:
    """The table of `alternating_throughput`, and batching on / off per round."""
    if results is None:
        print(f"{label}alternating throughput rounds skipped: bench/loadclient is not built")
        return
    rounds = len(next(iter(results.values()))["rps_rounds"])
    print(
        f"\n{label}concurrency {concurrency}, compiled load client, {rounds} alternating rounds "
        "(medians):"
    )
    print("| batching | requests/s | p50 ms | p99 ms | requests/s per round |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        per_round = ", ".join(f"{x:.0f}" for x in r["rps_rounds"])
        print(f"| {mode} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {per_round} |")
    if {"on", "off"} <= set(results):
        ratios = [
            on / off
            for on, off in zip(
                results["on"]["rps_rounds"], results["off"]["rps_rounds"], strict=True
            )
        ]
        print(
            f"batching on / off per round: {', '.join(f'{x:.2f}' for x in ratios)}x; median "
            f"{statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x (the target, at "
            "concurrency 32: >= 1.5x)"
        )
