"""ModelExecutor: request calls past the bound are refused at once, other work queues;
shutdown lets running work finish without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.batching import Overloaded
from services.executor import ModelExecutor


def test_request_calls_past_the_bound_are_overloaded() -> None:
    async def scenario() -> None:
        executor = ModelExecutor(workers=1, name="test", max_waiting=1)
        release = threading.Event()
        running = asyncio.create_task(executor.run_request(lambda: release.wait(10)))
        waiting = asyncio.create_task(executor.run_request(lambda: "second"))
        await asyncio.sleep(0)  # both have started: one holds the thread, one waits for it
        with pytest.raises(Overloaded):
            await executor.run_request(lambda: "third")
        load = asyncio.create_task(executor.run(lambda: "load"))  # never refused
        release.set()
        assert await running is True
        assert await waiting == "second"
        assert await load == "load"
        assert await executor.run_request(lambda: "after") == "after"  # slots free again
        await executor.shutdown()

    asyncio.run(scenario())


def test_shutdown_waits_for_running_work_without_blocking_the_loop() -> None:
    async def scenario() -> None:
        executor = ModelExecutor(workers=1, name="test")
        release = threading.Event()
        job = asyncio.create_task(executor.run(lambda: release.wait(10)))
        await asyncio.sleep(0)
        closing = asyncio.create_task(executor.shutdown())
        await asyncio.sleep(0)
        assert not closing.done()  # waiting for the job...
        release.set()  # ...while the loop is free to run this
        await closing
        assert await job is True

    asyncio.run(scenario())
