"""What every benchmark script shares: free ports, starting a service process and waiting
until it is SERVING, driving calls at a fixed concurrency, and medians."""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
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
