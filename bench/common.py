"""What every benchmark script shares: free ports, starting a service process and waiting
until it is SERVING, driving calls at a fixed concurrency, and medians."""

from __future__ import annotations

import asyncio
import json
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


def wait_until_serving(port: int, timeout: float) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
        )
        for update in stream:
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                stream.cancel()
                break


def start_service(
    name: str, version_dir: Path, *flags: str, port: int | None = None, timeout: float = 300
) -> tuple[int, subprocess.Popen]:
    """`recserve serve <name>` as its own process, quiet logs; returns once SERVING."""
    port = port or free_port()
    cmd = serve_command(name, version_dir, port, -1, "--log-level", "warning", *flags)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    wait_until_serving(port, timeout)
    return port, proc


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
) -> dict[str, float] | None:
    """Latency of `calls` calls of `method` (e.g. "/recsys.v1.RetrievalService/Retrieve")
    from the compiled load client (bench/loadclient, `make loadclient`): p50_ms, p90_ms,
    p99_ms, rps, and errors / codes for failed calls. None when the client is not built.
    A Python client spends a few hundred microseconds of CPU per call itself, which a
    backend's compiled stub does not."""
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
    blocking client."""
    compiled = LOADCLIENT.exists()
    local_p50s, service_p50s = [], []
    for _ in range(rounds):
        times = []
        for i in range(calls):
            started = time.perf_counter()
            local_call(i)
            times.append(time.perf_counter() - started)
        local_p50s.append(statistics.median(times) * 1e3)
        if compiled:
            result = compiled_client(port, method, messages, calls, warmup=5)
            assert result is not None
            if result["errors"]:
                raise RuntimeError(f"{result['errors']} of {calls} calls failed: {result}")
            service_p50s.append(result["p50_ms"])
        else:
            service_p50s.append(blocking_client(port, method, messages, calls, response_type))
    differences = [s - i for s, i in zip(service_p50s, local_p50s, strict=True)]
    return {
        "client": "compiled (bench/loadclient)" if compiled else "grpcio blocking",
        "in_process_ms": statistics.median(local_p50s),
        "service_ms": statistics.median(service_p50s),
        "overhead_ms": statistics.median(differences),
    }
