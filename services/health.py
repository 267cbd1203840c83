"""The standard gRPC health service (grpc.health.v1), with Watch streams that end on drain.

grpc_health's own servicer keeps a Watch stream open until the call is cancelled, so every
watching client (a load balancer, gRPC client-side health checking) held a shutdown for the
whole grace period. Here a Watch ends once the server starts draining, right after telling
its client NOT_SERVING; Check and the statuses are as the protocol defines them.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, ServingStatus] = {}
        self._draining = False
        # Set (and replaced) on every change: a watcher takes the current one before it
        # reads a status, so no change between its read and its wait goes unseen.
        self._changed = asyncio.Event()
        self._watchers = 0
        self._no_watchers = asyncio.Event()
        self._no_watchers.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> None:
        self._watchers += 1
        self._no_watchers.clear()
        try:
            last = None
            while True:
                changed = self._changed
                status = self._status.get(
                    request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                    # The status may have changed (draining begun) while the write was
                    # awaited: read it again before deciding the stream is over.
                    continue
                if self._draining:
                    return  # NOT_SERVING was its last word; the stream ends OK
                await changed.wait()
        finally:
            self._watchers -= 1
            if self._watchers == 0:
                self._no_watchers.set()

    async def set(self, service: str, status: ServingStatus) -> None:
        """The status of `service` ("" = the server as a whole); ignored once draining."""
        if self._draining:
            return
        self._status[service] = status
        self._notify()

    async def enter_graceful_shutdown(self, watchers_timeout_s: float = 2.0) -> None:
        """Every service NOT_SERVING for good; watchers are told and their streams end.
        Returns once they have (at most `watchers_timeout_s`, for a client that does not
        read): their last message must go out before the server stops, or it is lost."""
        if self._draining:
            return
        self._draining = True
        for service in self._status:
            self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._notify()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_watchers.wait(), watchers_timeout_s)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
