"""Real servers on ephemeral loopback ports, driven from synchronous tests.

The servers run on an asyncio loop in a background thread (as they would in their own
process); tests talk to them through the generated stubs over real sockets.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc

from services.gateway_service import GatewayApp, GatewayConfig
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.runtime import ModelServer, ServerOptions, ServiceApp
from services.tagging_service import TaggingApp, TaggingConfig
from services.tracing import Tracing

T = TypeVar("T")


class HeldStage:
    """The waiting part of a real stand-in stage server (a servicer subclass adds the RPC):
    a call sets `received`, then waits until the test sets `release`, so a request is held
    in flight for exactly as long as the test needs, without sleeping."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.release = threading.Event()
        self.address = ""  # "host:port", once the test has it listening

    def hold(self) -> None:
        self.received.set()
        self.release.wait(timeout=30)


@contextmanager
def stage_serving(stage: HeldStage, register: Callable[[Any, grpc.Server], None]) -> Iterator[str]:
    """`stage` (a HeldStage servicer) on a real gRPC server on an ephemeral loopback port,
    registered with `register` (the generated add_…Servicer_to_server); yields its address
    and releases any held call before stopping."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    register(stage, server)
    stage.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield stage.address
    finally:
        stage.release.set()
        server.stop(0)


@contextmanager
def channels_to(cluster: Cluster) -> Iterator[dict[str, grpc.Channel]]:
    """One channel per server of `cluster`, closed when the block ends."""
    opened = {name: grpc.insecure_channel(cluster.address(name)) for name in cluster.servers}
    try:
        yield opened
    finally:
        for channel in opened.values():
            channel.close()


@contextmanager
def thread_held(pool: ThreadPoolExecutor) -> Iterator[None]:
    """One thread of `pool` busy until the block ends: with a pool of one (a service's
    model threads, `workers=1`) every model call waits, deterministically, for the block."""
    release = threading.Event()
    held = pool.submit(release.wait, 60)
    try:
        yield
    finally:
        release.set()
        held.result(timeout=10)


class Cluster:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.servers: dict[str, ModelServer] = {}

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(
        self,
        name: str,
        app: ServiceApp,
        metrics_port: int = -1,
        admin_port: int = -1,
        tracing: Tracing | None = None,
    ) -> int:
        async def _start() -> int:
            server = ModelServer(
                app,
                ServerOptions(
                    port=0,
                    metrics_port=metrics_port,
                    grace_seconds=5.0,
                    admin_port=admin_port,
                    tracing=tracing,
                ),
            )
            port = await server.start()
            self.servers[name] = server
            return port

        return self.run(_start())

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.servers[name].port}"

    def stop(self, name: str, grace: float = 0.0) -> None:
        self.run(self.servers.pop(name).stop(grace))

    def close(self) -> None:
        for name in list(self.servers):
            self.stop(name)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def start_all(
    artifacts: Path,
    gateway_metrics_port: int = -1,
    admin_port: int = -1,
    tracing: Callable[[str], Tracing | None] = lambda service: None,
) -> Cluster:
    """The four services; `admin_port` 0 puts the operator RPCs on each main port;
    `tracing(service)` gives each its tracing (default: off)."""
    cluster = Cluster()
    for name, app in (
        ("retrieval", RetrievalApp(RetrievalConfig(artifacts))),
        ("ranking", RankingApp(RankingConfig(artifacts))),
        ("tagging", TaggingApp(TaggingConfig(artifacts))),
    ):
        cluster.start(name, app, admin_port=admin_port, tracing=tracing(name))
    gateway_tracing = tracing("gateway")
    cluster.start(
        "gateway",
        GatewayApp(
            GatewayConfig(
                artifacts,
                cluster.address("retrieval"),
                cluster.address("ranking"),
                cluster.address("tagging"),
                max_items=50,
            ),
            gateway_tracing,
        ),
        metrics_port=gateway_metrics_port,
        admin_port=admin_port,
        tracing=gateway_tracing,
    )
    return cluster
