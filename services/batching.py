"""Micro-batching: concurrent requests served by one model call.

A FAISS search over a large catalogue is memory-bound per query, and a batch on FAISS's BLAS
path reads the catalogue once for all of its queries (../shared/design.md, section 6), so gathering
concurrent retrieval requests multiplies throughput on the same cores. `MicroBatcher` does
the gathering for any `batch_fn(list[Req]) -> list[Resp]`.

Dispatch policy (when a gathered batch goes to the executor):
  * never while all `max_concurrent` batch slots are busy: the batch keeps growing there
    (up to `max_batch`; later requests wait for the next batch), and handing it to the
    executor earlier would only queue it inside the executor;
  * at once when nothing is running (the batcher is idle): a lone request pays no gathering
    delay, and under load batches form by themselves while earlier batches run;
  * while another batch is running and a slot is free (max_concurrent > 1), it waits for
    company until the first of: `max_batch` requests, `max_wait_ms` after its oldest
    request arrived, the earliest member deadline minus `deadline_margin_ms`, or the running
    batches finishing (an idle CPU is not worth waiting on).
So `max_wait_ms` is only ever spent when a core is already busy, and never past a member's
deadline.

Lone requests (`inline_when_idle`): when nothing is running or waiting and no concurrency
was seen in the last `concurrency_hold_ms`, a request is computed on the event-loop thread
itself instead of the executor. The executor round trip (two thread wake-ups, 0.1-0.6 ms
on the development VM, docs/benchmarks.md) is most of a lone call's service overhead.
The loop is blocked for that one model call. Calls that arrived meanwhile show up within
a loop iteration or two after it (grpc.aio gives each received call a new task), so the
batcher stays busy for those iterations after handing the caller its result: seeing such
a call (a task that did not exist before the inline call; the caller's own task calling
again does not count) is evidence of concurrency, and every call then takes the batched
executor path for the hold period, so under load batching works as without this option
(checked by tests/integration/test_ranking_batching.py, where 48 calls arrive at once;
sequential calls stay inline there too).

Load shedding: at most `max_queue` requests wait (not counting those already in a running
batch); past that `submit` raises `Overloaded` at once, which the service maps to
RESOURCE_EXHAUSTED, instead of letting the queue (and everyone's latency) grow unbounded.

Not thread-safe: one batcher belongs to the event loop that first submits to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Overloaded(Exception):
    """The batcher's queue is full; the caller should shed the request (RESOURCE_EXHAUSTED)."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new requests (UNAVAILABLE)."""


# Loop iterations an inline call leaves, after its model call, for calls that arrived
# while it blocked the loop to show up (as new tasks, or in submit()).
_SETTLE_ITERATIONS = 2


@dataclass(eq=False)
class _Waiting(Generic[Req, Resp]):
    item: Req
    deadline: float | None  # absolute, loop.time() clock
    arrived: float
    future: asyncio.Future[Resp] = field(repr=False)


class MicroBatcher(Generic[Req, Resp]):
    def __init__(
        self,
        batch_fn: Callable[[list[Req]], Sequence[Resp | BaseException]],
        executor: Executor,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        max_concurrent: int = 1,
        deadline_margin_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
        inline_when_idle: bool = False,
        concurrency_hold_ms: float = 100.0,
        on_inline: Callable[[], None] | None = None,
    ) -> None:
        """`batch_fn` runs in `executor` (torch and FAISS release the GIL) and returns one
        result per item, in order; an exception *instance* in a slot fails that item only.
        `max_concurrent` batches run at once (match the executor's workers). `on_batch` is
        called with each batch's size when it is dispatched (a metrics hook).
        `inline_when_idle` computes lone requests on the loop thread (module docstring);
        `on_inline` is called for each of them (a metrics hook)."""
        if max_batch < 1 or max_queue < 1 or max_concurrent < 1:
            raise ValueError("max_batch, max_queue and max_concurrent must be >= 1")
        if max_wait_ms < 0 or deadline_margin_ms < 0:
            raise ValueError("max_wait_ms and deadline_margin_ms must be >= 0")
        self._batch_fn = batch_fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_concurrent = max_concurrent
        self._max_wait = max_wait_ms / 1e3
        self._margin = deadline_margin_ms / 1e3
        self._on_batch = on_batch
        self._on_inline = on_inline
        self._waiting: deque[_Waiting[Req, Resp]] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        self.inline_when_idle = inline_when_idle
        self._concurrency_hold = concurrency_hold_ms / 1e3
        self._inline_active = False  # computing inline, or settling after it
        self._inline_idle = asyncio.Event()  # clear while an inline call runs (close waits)
        self._inline_idle.set()
        # The settling inline call: its task, the tasks that existed before it, and a
        # token that ends the pending settle callbacks when the settle ends early.
        self._inline_task: asyncio.Task | None = None
        self._tasks_before: set[asyncio.Task] = set()
        self._settle_token = 0
        self._batched_until = 0.0  # loop time before which lone requests still batch

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (not yet dispatched)."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing computing, settling after an inline call, or waiting."""
        return not (self._inline_active or self._running or self._waiting)

    @property
    def running(self) -> int:
        """Batches being computed now."""
        return len(self._running)

    async def submit(self, item: Req, deadline: float | None = None) -> Resp:
        """The result for `item`, computed in some batch. `deadline` is absolute on the
        event loop's clock (`loop.time() + context.time_remaining()` in a gRPC handler).

        Raises `Overloaded` at once when `max_queue` requests are already waiting,
        `BatcherClosed` after close(), or the item's own exception. Cancelling the caller
        (e.g. gRPC cancelled the call) removes a still-waiting item from the queue."""
        if self._closing:
            raise BatcherClosed("batcher is closed")
        if len(self._waiting) >= self.max_queue:
            raise Overloaded(f"{len(self._waiting)} requests already waiting for a batch")
        loop = asyncio.get_running_loop()
        if self._inline_active and asyncio.current_task() is self._inline_task:
            # The settling call's own task calling again (only in-process callers do: a
            # gRPC call has a task of its own): nothing arrived meanwhile on its account.
            self._end_settle()
        now = loop.time()
        if not self.idle:
            self._batched_until = now + self._concurrency_hold
        elif self.inline_when_idle and now >= self._batched_until:
            return await self._run_inline(item)
        self._ensure_dispatcher()
        entry = _Waiting(item, deadline, loop.time(), loop.create_future())
        self._waiting.append(entry)
        self._changed.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            # Still waiting: take it out so it neither counts against max_queue nor costs
            # a slot in a batch. Already dispatched: its result is simply dropped.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            entry.future.cancel()
            raise

    async def _run_inline(self, item: Req) -> Resp:
        """`item` alone, computed on the loop thread (see the module docstring)."""
        self._inline_active = True
        self._inline_idle.clear()
        self._inline_task = asyncio.current_task()
        self._tasks_before = asyncio.all_tasks()
        try:
            with contextlib.suppress(Exception):  # metrics must never break serving
                if self._on_batch is not None:
                    self._on_batch(1)
            with contextlib.suppress(Exception):
                if self._on_inline is not None:
                    self._on_inline()
            results = self._batch_fn([item])
            if len(results) != 1:
                raise RuntimeError(f"batch_fn returned {len(results)} results for 1")
            result = results[0]
        finally:
            # The caller gets its result now; the batcher stays busy for a few more loop
            # iterations so that calls which arrived while the loop was blocked see it busy.
            loop = asyncio.get_running_loop()
            loop.call_soon(self._settle, self._settle_token, _SETTLE_ITERATIONS - 1)
        if isinstance(result, BaseException):
            raise result
        return result

    def _settle(self, token: int, iterations_left: int) -> None:
        """Ends an inline call, `_SETTLE_ITERATIONS` loop iterations after its model call
        (unless it ended early: `token` is stale then)."""
        if token != self._settle_token:
            return
        if iterations_left > 0:
            asyncio.get_running_loop().call_soon(self._settle, token, iterations_left - 1)
            return
        self._end_settle()

    def _end_settle(self) -> None:
        """Calls that arrived while the loop was blocked: grpc.aio hands each to a new task
        within an iteration or two. Seeing one (or a call reaching submit() meanwhile) is
        the evidence of concurrency that switches to batches."""
        self._settle_token += 1
        if asyncio.all_tasks() - self._tasks_before:
            self._batched_until = asyncio.get_running_loop().time() + self._concurrency_hold
        self._inline_active = False
        self._inline_task = None
        self._tasks_before = set()
        self._inline_idle.set()

    async def close(self) -> None:
        """Stop taking requests, dispatch everything still waiting, wait for every batch
        (and for a call being computed inline)."""
        self._closing = True
        self._changed.set()
        await self._inline_idle.wait()
        if self._dispatcher is not None:
            await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # --- dispatcher ----------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_loop())

    async def _dispatch_loop(self) -> None:
        try:
            while self._waiting or not self._closing:
                if not self._waiting or len(self._running) >= self.max_concurrent:
                    await self._wait_for_change(None)
                    continue
                delay = self._gather_delay()
                if delay > 0:
                    await self._wait_for_change(delay)
                    continue
                self._launch(self._take_batch())
        except Exception as exc:  # a bug here must not leave callers waiting forever
            logger.exception("micro-batch dispatcher failed")
            self._fail_waiting(exc)
            raise

    async def _wait_for_change(self, timeout: float | None) -> None:
        # Clearing right before waiting is safe: state only changes while this task is
        # suspended, and the loop re-checks all conditions after every wake-up.
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def _gather_delay(self) -> float:
        """Seconds to keep gathering before dispatching (0: now). See the module docstring."""
        if not self._running or self._closing or len(self._waiting) >= self.max_batch:
            return 0.0
        dispatch_at = self._waiting[0].arrived + self._max_wait
        for entry in itertools.islice(self._waiting, self.max_batch):
            if entry.deadline is not None:
                dispatch_at = min(dispatch_at, entry.deadline - self._margin)
        return max(0.0, dispatch_at - asyncio.get_running_loop().time())

    def _take_batch(self) -> list[_Waiting[Req, Resp]]:
        batch = []
        while self._waiting and len(batch) < self.max_batch:
            entry = self._waiting.popleft()
            if not entry.future.done():  # skip any caller that gave up meanwhile
                batch.append(entry)
        return batch

    def _launch(self, batch: list[_Waiting[Req, Resp]]) -> None:
        if not batch:
            return
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch))
            except Exception:  # metrics must never break serving
                logger.exception("on_batch hook failed")
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._running.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._changed.set()

    async def _run_batch(self, batch: list[_Waiting[Req, Resp]]) -> None:
        items = [entry.item for entry in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._batch_fn, items)
            if len(results) != len(batch):
                raise RuntimeError(f"batch_fn returned {len(results)} results for {len(batch)}")
        except Exception as exc:  # the whole call failed: every member sees why
            for entry in batch:
                _deliver(entry.future, exc)
            return
        for entry, result in zip(batch, results, strict=True):
            _deliver(entry.future, result)

    def _fail_waiting(self, exc: Exception) -> None:
        while self._waiting:
            _deliver(self._waiting.popleft().future, exc)


def _deliver(future: asyncio.Future[Resp], result: Resp | BaseException) -> None:
    if future.done():  # the caller was cancelled after dispatch
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def deadline_from_remaining(remaining: float | None) -> float | None:
    """A gRPC handler's `context.time_remaining()` as the absolute deadline `submit` takes
    (None: the client set none). Call it inside the running event loop."""
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def openblas_coretype_for_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The OPENBLAS_CORETYPE that gives this CPU fast sgemm kernels (None: leave OpenBLAS to
    detect). The OpenBLAS 0.3.15 in the faiss-cpu wheel mistakes CPUs newer than itself
    (AMD Zen 5 here) for old SSE ones, which cuts the gain of batched FAISS searches by
    3x (retrieval/batch.py). Read before faiss is imported: OpenBLAS reads the variable
    once, when it loads. Standard library only, so it can run before that import."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None
