"""The health service's Watch: every status change reaches the watcher, drain included."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from services.health import HealthService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _SlowWriteContext:
    """A Watch stream whose writes complete only when the test says so, the window in
    which a drain used to slip past the watcher unreported."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.write_started = asyncio.Event()
        self.release_write = asyncio.Event()

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        self.sent.append(response.status)
        self.write_started.set()
        await self.release_write.wait()


def test_a_drain_begun_while_a_status_is_being_written_is_still_reported() -> None:
    async def scenario() -> list[int]:
        health = HealthService()
        await health.set("", SERVING)
        context = _SlowWriteContext()
        watch = asyncio.create_task(
            health.Watch(health_pb2.HealthCheckRequest(service=""), context)
        )
        await context.write_started.wait()  # SERVING is on its way out
        draining = asyncio.create_task(health.enter_graceful_shutdown(watchers_timeout_s=5))
        await asyncio.sleep(0)  # the drain starts while the write is still pending
        context.write_started.clear()
        context.release_write.set()
        await asyncio.wait_for(watch, 5)
        await asyncio.wait_for(draining, 5)
        return context.sent

    assert asyncio.run(scenario()) == [SERVING, NOT_SERVING]


def test_check_reports_not_serving_once_draining_and_ignores_later_sets() -> None:
    async def scenario() -> int:
        health = HealthService()
        await health.set("", SERVING)
        await health.enter_graceful_shutdown(watchers_timeout_s=0)
        await health.set("", SERVING)  # a late load finishing during the drain
        # Check needs no context for a known service.
        response = await health.Check(health_pb2.HealthCheckRequest(service=""), None)
        return response.status

    assert asyncio.run(scenario()) == NOT_SERVING
