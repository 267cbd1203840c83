"""The one server runtime every recserve service runs on.

It owns what is the same for all four: the `grpc.aio` server, the standard health service
(NOT_SERVING until the model is loaded and warmed, NOT_SERVING again while draining), server
reflection, the metrics interceptor and /metrics endpoint, and graceful shutdown on SIGTERM.
A service plugs in as a `ServiceApp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, Protocol

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.admin import SERVICE_NAME as ADMIN_SERVICE
from services.admin import ModelAdmin
from services.catalog import SERVICE_NAME as CATALOG_SERVICE
from services.catalog import CatalogAdmin
from services.health import HealthService
from services.logs import log_fields
from services.metrics import (
    MODEL_INFO,
    MetricsInterceptor,
    start_metrics_http,
    stop_metrics_http,
)
from services.reflection import enable_reflection
from services.tracing import Tracing

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# The same limits on the traffic and the admin port: an upsert one port accepts, the other
# accepts too.
MESSAGE_LIMITS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class ServiceApp(Protocol):
    """A model server: registers its servicers, then loads and warms its model."""

    name: str  # short name for logs and metrics: "retrieval", "gateway", ...

    @property
    def service_names(self) -> list[str]:
        """Fully qualified gRPC service names, for health and reflection."""
        ...

    def register(self, server: aio.Server) -> None: ...

    # Apps that take live catalogue changes set `catalog_backend` (a CatalogBackend); the
    # runtime serves CatalogService for it wherever it serves ModelAdminService.

    async def load(self, version: str | None = None) -> str:
        """Load and warm a version (None = LATEST) off the serving path, then swap it in
        with one reference assignment; return the version now serving. On failure the
        previous version keeps serving."""
        ...

    async def close(self) -> None: ...


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = an ephemeral port (tests)
    metrics_port: int = -1  # negative = no /metrics endpoint
    grace_seconds: float = 10.0
    # Seconds between turning NOT_SERVING and refusing new calls on SIGTERM, so that load
    # balancers polling health stop sending traffic first (0: refuse at once).
    drain_delay_seconds: float = 0.0
    # Operator RPCs (ModelAdminService, CatalogService): -1 off, 0 on the main port, >0 on
    # their own port.
    admin_port: int = -1
    # Share the port with other processes of this service (SO_REUSEPORT). Off by default:
    # with it on, a second server on a taken port starts silently and steals traffic.
    reuse_port: bool = False
    # Calls handled at once; past it gRPC answers RESOURCE_EXHAUSTED instead of queueing.
    max_concurrent_rpcs: int = 1000
    # Spans for every call (services/tracing.py); None = tracing off.
    tracing: Tracing | None = None


class ModelServer:
    """Runs one ServiceApp: start → load → SERVING → (stop) NOT_SERVING → drain → closed."""

    def __init__(self, app: ServiceApp, options: ServerOptions) -> None:
        self.app = app
        self.options = options
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.model_version: str | None = None
        self._health = HealthService()
        self._server = aio.server(
            interceptors=[MetricsInterceptor(app.name, options.tracing)],
            options=[*MESSAGE_LIMITS, ("grpc.so_reuseport", 1 if options.reuse_port else 0)],
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )
        self._metrics_httpd: Any = None
        self._stopped = asyncio.Event()
        self._skip_delay = asyncio.Event()
        self._stopping = False
        self._reload_lock = asyncio.Lock()
        self.admin_port: int | None = None
        self._admin_server: aio.Server | None = None

    async def start(self, load: bool = True) -> int:
        """Bind, start answering health (NOT_SERVING), then load the model and turn SERVING."""
        app = self.app
        app.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [*app.service_names, health.SERVICE_NAME]
        if self.options.admin_port == 0:
            names += self._register_admin(self._server)
        enable_reflection(self._server, names)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

        address = f"{self.options.host}:{self.options.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises on a taken port
            raise OSError(f"could not bind {address}: {exc}") from exc
        await self._server.start()
        try:
            self._metrics_httpd = start_metrics_http(self.options.metrics_port, self.options.host)
            if self._metrics_httpd is not None:
                self.metrics_port = int(self._metrics_httpd.server_address[1])
            if self.options.admin_port > 0:
                await self._start_admin_server()
            elif self.options.admin_port == 0:
                self.admin_port = self.port
            logger.info(
                "listening",
                extra=log_fields(
                    port=self.port, metrics_port=self.metrics_port, host=self.options.host
                ),
            )
            if load:
                await self.load()
        except BaseException:
            # A server that cannot load its model must not linger half-alive.
            await self._abort_start()
            raise
        return self.port

    async def _abort_start(self) -> None:
        await self._server.stop(0)
        if self._admin_server is not None:
            await self._admin_server.stop(0)
        stop_metrics_http(self._metrics_httpd)
        await self.app.close()
        if self.options.tracing is not None:
            await self.options.tracing.shutdown()

    async def load(self) -> None:
        started = time.perf_counter()
        async with self._reload_lock:  # a ReloadModel during start-up waits for this
            self.model_version = await self.app.load()
        MODEL_INFO.labels(self.app.name, self.model_version).set(1)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "serving",
            extra=log_fields(
                version=self.model_version,
                load_seconds=round(time.perf_counter() - started, 3),
            ),
        )

    async def _start_admin_server(self) -> None:
        """Operator RPCs on their own port, so they can be firewalled apart from traffic."""
        admin = aio.server(
            interceptors=[MetricsInterceptor(self.app.name + "-admin", self.options.tracing)],
            options=MESSAGE_LIMITS,
        )
        enable_reflection(admin, self._register_admin(admin))
        address = f"{self.options.host}:{self.options.admin_port}"
        self.admin_port = admin.add_insecure_port(address)
        await admin.start()
        self._admin_server = admin

    def _register_admin(self, server: aio.Server) -> list[str]:
        """Register the operator services on `server`; their names (for reflection)."""
        ModelAdmin(self).register(server)
        names = [ADMIN_SERVICE]
        backend = getattr(self.app, "catalog_backend", None)
        if backend is not None:
            CatalogAdmin(backend, lambda: self.model_version is not None).register(server)
            names.append(CATALOG_SERVICE)
        return names

    async def reload(self, version: str | None) -> tuple[str, str, float]:
        """Hot swap: (previous version, new version, load seconds). Serialised; health
        stays SERVING; in-flight requests finish on the version they started with."""
        async with self._reload_lock:
            previous = self.model_version or ""
            started = time.perf_counter()
            current = await self.app.load(version)
            seconds = time.perf_counter() - started
            self.model_version = current
            if previous and previous != current:
                MODEL_INFO.remove(self.app.name, previous)
            MODEL_INFO.labels(self.app.name, current).set(1)
            logger.info(
                "reloaded",
                extra=log_fields(
                    previous=previous, version=current, load_seconds=round(seconds, 3)
                ),
            )
            return previous, current, seconds

    async def stop(self, grace: float | None = None, drain_delay: float | None = None) -> None:
        """Drain: health NOT_SERVING (health watchers told and let go), go on serving for
        the drain delay while load balancers take the replica out, then refuse new calls,
        let in-flight calls finish within the grace period, close."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.options.grace_seconds if grace is None else grace
        delay = self.options.drain_delay_seconds if drain_delay is None else drain_delay
        logger.info("draining", extra=log_fields(grace_seconds=grace, drain_delay_seconds=delay))
        await self._health.enter_graceful_shutdown()
        if delay > 0:  # still answering, NOT_SERVING to health checks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._skip_delay.wait(), delay)
        if self._admin_server is not None:
            await self._admin_server.stop(0)
        await self._server.stop(grace)
        stop_metrics_http(self._metrics_httpd)
        await self.app.close()
        if self.options.tracing is not None:
            await self.options.tracing.shutdown()  # the last spans, after the drain
        logger.info("stopped")
        self._stopped.set()

    def skip_drain_delay(self) -> None:
        """End the drain delay now (a second SIGTERM or Ctrl-C)."""
        self._skip_delay.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def _set_health(self, status: int) -> None:
        for name in ("", *self.app.service_names):
            await self._health.set(name, status)


async def serve_until_signal(server: ModelServer) -> None:
    """Start and serve until SIGTERM/SIGINT, then drain and return."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    start_task = asyncio.create_task(server.start())
    stop_task = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait({start_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if start_task in done:
        start_task.result()  # surface load errors: the process must exit non-zero
        await stop_task
    else:
        start_task.cancel()
    logger.info("signal received")
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second one ends the drain delay
        loop.add_signal_handler(sig, server.skip_drain_delay)
    await server.stop()
