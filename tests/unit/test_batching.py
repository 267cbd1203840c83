"""MicroBatcher (services/batching.py) and batched retrieval (retrieval/batch.py).

Batcher tests synchronise with threading/asyncio events, never with timed sleeps: a batch
function that blocks until the test releases it makes "a batch is running" a fact, not a
race. `asyncio.sleep(0)` below only yields to let submitted tasks enqueue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from retrieval.batch import (
    RetrievalQuery,
    enable_faiss_blas_for_batches,
    retrieve_batch,
    retrieve_grouped,
)
from retrieval.index import ItemIndex
from retrieval.retriever import Candidates, Retriever
from services.batching import (
    BatcherClosed,
    MicroBatcher,
    Overloaded,
    deadline_from_remaining,
    openblas_coretype_for_cpu,
)
from tests.unit.overlap_spy import OverlapSpy

WAIT = 10.0  # generous upper bound for anything that should happen promptly (not a sleep)


class Recorder:
    """A batch function that records its calls; a batch containing "block" waits until
    `release` is set, so the test controls when the first batch finishes."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        if "block" in items:
            self.started.set()
            self.release.wait(WAIT)
        return [_result(item) for item in items]


def _result(item: Any) -> Any:
    if item == "bad":
        return ValueError("bad item")
    return f"done:{item}"


def run(test: Callable[[ThreadPoolExecutor], Coroutine[Any, Any, None]]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        asyncio.run(asyncio.wait_for(test(pool), WAIT))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def start_blocking_batch(
    batcher: MicroBatcher[Any, Any], recorder: Recorder
) -> asyncio.Task[Any]:
    """Submit "block" (dispatched at once: the batcher is idle) and wait until it runs."""
    task = asyncio.create_task(batcher.submit("block"))
    await asyncio.to_thread(recorder.started.wait, WAIT)
    assert batcher.running == 1
    return task


def test_idle_batcher_dispatches_a_lone_request_at_once() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        # A max_wait no test could sit out: only "dispatch at once when idle" passes.
        batcher = MicroBatcher(recorder, pool, max_wait_ms=3_600_000)
        assert await batcher.submit("a") == "done:a"
        assert recorder.calls == [["a"]]
        await batcher.close()

    run(body)


class ThreadRecorder(Recorder):
    """Also records which thread computed each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, items: list[Any]) -> list[Any]:
        self.threads.append(threading.get_ident())
        return super().__call__(items)


def test_inline_when_idle_computes_a_lone_request_on_the_loop_thread() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = ThreadRecorder()
        sizes: list[int] = []
        inline: list[str] = []
        batcher = MicroBatcher(
            recorder,
            pool,
            inline_when_idle=True,
            on_batch=sizes.append,
            on_inline=lambda: inline.append("x"),
        )
        assert await batcher.submit("a") == "done:a"
        # The result comes back before the batcher settles (a few loop iterations later);
        # the same task calling again is no sign of concurrency.
        assert not batcher.idle
        assert await batcher.submit("b") == "done:b"
        await until(lambda: batcher.idle)
        assert recorder.calls == [["a"], ["b"]]
        assert recorder.threads == [threading.get_ident()] * 2  # no executor round trip
        assert sizes == [1, 1] and len(inline) == 2
        with pytest.raises(ValueError, match="bad item"):
            await batcher.submit("bad")
        assert await batcher.submit("c") == "done:c"  # a failed inline call leaves it idle
        assert recorder.threads[-1] == threading.get_ident()
        await batcher.close()

    run(body)


def test_calls_arriving_during_an_inline_call_switch_to_batches() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = ThreadRecorder()
        loop_thread = threading.get_ident()
        batcher = MicroBatcher(recorder, pool, inline_when_idle=True, concurrency_hold_ms=3_600_000)
        # "a" runs inline and blocks the loop; "b" is already waiting to run, as a call
        # that arrived meanwhile would be, and reaches submit() during a's settle.
        a = asyncio.create_task(batcher.submit("a"))
        b = asyncio.create_task(batcher.submit("b"))
        assert await asyncio.gather(a, b) == ["done:a", "done:b"]
        assert recorder.calls == [["a"], ["b"]]
        assert recorder.threads[0] == loop_thread
        assert recorder.threads[1] != loop_thread  # concurrency seen: the executor path
        # Within the hold period a lone call still takes the executor path.
        assert await batcher.submit("c") == "done:c"
        assert recorder.threads[2] != loop_thread
        await batcher.close()

    run(body)


def test_a_call_arriving_while_an_inline_call_settles_takes_the_batched_path() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = ThreadRecorder()
        batcher = MicroBatcher(recorder, pool, inline_when_idle=True, concurrency_hold_ms=3_600_000)
        assert await batcher.submit("a") == "done:a"
        # Another task calling before "a" settled: a call that arrived meanwhile.
        assert not batcher.idle
        assert await asyncio.create_task(batcher.submit("b")) == "done:b"
        assert recorder.threads[0] == threading.get_ident()
        assert recorder.threads[1] != threading.get_ident()
        await batcher.close()

    run(body)


def test_close_waits_for_a_call_computed_inline() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        batcher = MicroBatcher(ThreadRecorder(), pool, inline_when_idle=True)
        call = asyncio.create_task(batcher.submit("a"))
        closing = asyncio.create_task(batcher.close())  # runs while "a" settles
        await closing
        assert call.done() and call.result() == "done:a"
        assert batcher.idle  # close() returned only after the settle

    run(body)


def test_an_inline_batch_fn_with_the_wrong_result_count_fails_clearly() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        batcher = MicroBatcher(lambda items: [], pool, inline_when_idle=True)
        with pytest.raises(RuntimeError, match="0 results for 1"):
            await batcher.submit("a")
        await batcher.close()

    run(body)


def test_inline_calls_resume_once_the_hold_period_is_over() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = ThreadRecorder()
        batcher = MicroBatcher(recorder, pool, concurrency_hold_ms=0)
        first = await start_blocking_batch(batcher, recorder)  # off: to the executor
        queued = asyncio.create_task(batcher.submit("x"))  # concurrency seen
        await until(lambda: batcher.queued == 1)
        recorder.release.set()
        assert await asyncio.gather(first, queued) == ["done:block", "done:x"]
        await until(lambda: batcher.running == 0)
        batcher.inline_when_idle = True
        assert await batcher.submit("y") == "done:y"  # idle again, hold over: inline
        assert recorder.threads[-1] == threading.get_ident()
        await batcher.close()

    run(body)


def test_concurrent_submissions_share_one_call() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        sizes: list[int] = []
        batcher = MicroBatcher(recorder, pool, max_batch=32, on_batch=sizes.append)
        first = await start_blocking_batch(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await until(lambda: batcher.queued == 5)
        recorder.release.set()
        assert await asyncio.gather(*tasks) == [f"done:{i}" for i in range(5)]
        assert await first == "done:block"
        assert recorder.calls == [["block"], [0, 1, 2, 3, 4]]
        assert sizes == [1, 5]
        await batcher.close()

    run(body)


def test_batches_respect_max_batch() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool, max_batch=3)
        first = await start_blocking_batch(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(7)]
        await until(lambda: batcher.queued == 7)
        recorder.release.set()
        await asyncio.gather(first, *tasks)
        assert recorder.calls == [["block"], [0, 1, 2], [3, 4, 5], [6]]
        await batcher.close()

    run(body)


def test_one_bad_item_fails_only_itself() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool)
        first = await start_blocking_batch(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(x)) for x in ("a", "bad", "b")]
        await until(lambda: batcher.queued == 3)
        recorder.release.set()
        a, bad, b = await asyncio.gather(*tasks, return_exceptions=True)
        assert (a, b) == ("done:a", "done:b")
        assert isinstance(bad, ValueError)
        assert recorder.calls[1] == ["a", "bad", "b"]  # one call, the error stayed per item
        await first
        await batcher.close()

    run(body)


def test_a_failing_batch_call_fails_every_member() -> None:
    def broken(items: list[Any]) -> list[Any]:
        raise RuntimeError("model exploded")

    async def body(pool: ThreadPoolExecutor) -> None:
        batcher = MicroBatcher(broken, pool)
        with pytest.raises(RuntimeError, match="model exploded"):
            await batcher.submit("a")
        await batcher.close()

    run(body)


def test_full_queue_raises_overloaded_at_once() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool, max_queue=2)
        first = await start_blocking_batch(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await until(lambda: batcher.queued == 2)
        with pytest.raises(Overloaded):
            await batcher.submit("one too many")
        recorder.release.set()
        assert await asyncio.gather(first, *tasks) == ["done:block", "done:0", "done:1"]
        await batcher.close()

    run(body)


def test_near_deadline_is_dispatched_without_waiting_max_wait() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        # Two slots, one busy: a request would normally gather for max_wait (an hour here).
        batcher = MicroBatcher(
            recorder, pool, max_concurrent=2, max_wait_ms=3_600_000, deadline_margin_ms=5
        )
        first = await start_blocking_batch(batcher, recorder)
        deadline = asyncio.get_running_loop().time() + 0.005  # within the margin: due now
        assert await batcher.submit("urgent", deadline=deadline) == "done:urgent"
        assert not first.done()  # it overtook the blocked batch, so it did not wait on it
        recorder.release.set()
        await first
        await batcher.close()

    run(body)


def test_busy_batcher_gathers_until_the_running_batch_ends() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool, max_concurrent=2, max_wait_ms=3_600_000)
        first = await start_blocking_batch(batcher, recorder)
        task = asyncio.create_task(batcher.submit("waits"))
        await until(lambda: batcher.queued == 1)
        for _ in range(100):  # a free slot, but it gathers while a batch is running
            await asyncio.sleep(0)
        assert batcher.queued == 1 and not task.done()
        recorder.release.set()  # the running batch ends: gathering stops, it goes at once
        assert await task == "done:waits"
        await first
        await batcher.close()

    run(body)


def test_cancelled_caller_leaves_the_queue() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool)
        first = await start_blocking_batch(batcher, recorder)
        gone = asyncio.create_task(batcher.submit("gone"))
        kept = asyncio.create_task(batcher.submit("kept"))
        await until(lambda: batcher.queued == 2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.queued == 1
        recorder.release.set()
        assert await kept == "done:kept"
        await first
        assert recorder.calls == [["block"], ["kept"]]
        await batcher.close()

    run(body)


def test_close_drains_waiting_requests_then_refuses_new_ones() -> None:
    async def body(pool: ThreadPoolExecutor) -> None:
        recorder = Recorder()
        batcher = MicroBatcher(recorder, pool)
        first = await start_blocking_batch(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await until(lambda: batcher.queued == 3)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        recorder.release.set()
        await closing
        assert [t.result() for t in tasks] == ["done:0", "done:1", "done:2"]
        assert first.result() == "done:block"
        with pytest.raises(BatcherClosed):
            await batcher.submit("late")

    run(body)


def test_deadline_from_remaining_uses_the_loop_clock() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        assert deadline_from_remaining(None) is None
        before = loop.time()
        deadline = deadline_from_remaining(0.5)
        assert deadline is not None and before + 0.5 <= deadline <= loop.time() + 0.5

    asyncio.run(body())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512vl", "SkylakeX"),
        ("fpu sse2 avx avx2 fma", "Haswell"),
        ("fpu sse2 sse4_2", None),
    ],
)
def test_openblas_coretype_follows_cpu_flags(
    tmp_path: Path, flags: str, expected: str | None
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert openblas_coretype_for_cpu(cpuinfo) == expected
    assert openblas_coretype_for_cpu(tmp_path / "missing") is None


# --- retrieve_batch against the single path, on a trained artifact ------------------------


FAISS_DEFAULT_BLAS_THRESHOLD = faiss.cvar.distance_compute_blas_threshold


@pytest.fixture(autouse=True)
def default_faiss_blas_threshold() -> Any:
    """The threshold is process-wide and a retrieval server started by another test module
    lowers it; these comparisons assume FAISS's default unless a test sets it."""
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = FAISS_DEFAULT_BLAS_THRESHOLD
    yield
    faiss.cvar.distance_compute_blas_threshold = saved


@pytest.fixture(scope="module")
def retriever(artifacts: Path) -> Retriever:
    return Retriever.load(resolve(artifacts), device="cpu")


@pytest.fixture(scope="module")
def queries(artifacts: Path, retriever: Retriever) -> list[RetrievalQuery]:
    """The service's common case (history excluded, k=200) plus every edge the batched
    path must hand over or reproduce exactly."""
    users = UserHistoryStore.load(resolve(artifacts) / "users")
    histories = [users.recent_items(u)[-50:] for u in users.user_ids()[:120]]
    ids = retriever.items.item_ids
    categories = retriever.items.category_names
    unknown = np.array([10**15], np.int64)
    h = histories[0]
    out = [RetrievalQuery(hist, 200, hist) for hist in histories]
    out += [
        RetrievalQuery(h, 1),  # smallest k, no exclusions
        RetrievalQuery(h, 10, np.concatenate([h, unknown])),  # unknown excluded id
        RetrievalQuery(np.concatenate([unknown, h]), 50, h),  # unknown recent id
        RetrievalQuery(h, len(ids) + 100, h),  # more than the catalogue: exhausted
        RetrievalQuery(h, 200, ids[: len(ids) // 2]),  # half the catalogue excluded
        RetrievalQuery(unknown, 20),  # cold start: popular items
        RetrievalQuery(h, 30, h, include_categories=[categories[0]]),
        RetrievalQuery(h, 30, h, exclude_categories=[categories[1]]),
        RetrievalQuery(h, 30, include_categories=["no such category"]),
        RetrievalQuery(np.array(["not an id"]), 10),  # fails alone, in its own slot
    ]
    return out


def _single(retriever: Retriever, q: RetrievalQuery) -> Candidates | Exception:
    try:
        return retriever.retrieve(
            q.recent_item_ids, q.k, q.exclude_item_ids, q.include_categories, q.exclude_categories
        )
    except Exception as exc:
        return exc


def _batched(
    retriever: Retriever, queries: list[RetrievalQuery], size: int, bitwise: bool
) -> list[Candidates | Exception]:
    out: list[Candidates | Exception] = []
    for start in range(0, len(queries), size):
        out += retrieve_batch(retriever, queries[start : start + size], bitwise=bitwise)
    return out


def _identical(a: Candidates | Exception, b: Candidates | Exception) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b)
    return (
        np.array_equal(a.item_ids, b.item_ids)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.two_tower_scores, b.two_tower_scores)
        and (a.cold_start, a.unknown_recent_items, a.exhausted)
        == (b.cold_start, b.unknown_recent_items, b.exhausted)
    )


@pytest.mark.parametrize("size", [7, 32, 200])
def test_retrieve_batch_is_bitwise_the_single_path(
    retriever: Retriever, queries: list[RetrievalQuery], size: int
) -> None:
    """With the single path's own user-tower arithmetic and FAISS's scan path, everything
    (exclusion over-fetch, exact-k cut, co-visitation fusion, flags) matches to the bit."""
    assert retriever.covisitation is not None  # the fusion path is exercised
    single = [_single(retriever, q) for q in queries]
    assert isinstance(single[-1], ValueError)
    batched = _batched(retriever, queries, size, bitwise=True)
    mismatched = [
        i for i, (a, b) in enumerate(zip(batched, single, strict=True)) if not _identical(a, b)
    ]
    assert mismatched == []


def test_only_filtered_and_cold_start_requests_take_the_single_path(
    retriever: Retriever, queries: list[RetrievalQuery], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the test above from passing trivially: everything else was batched."""
    single_path = retriever.retrieve
    served_alone: list[RetrievalQuery] = []

    def counting(*args: Any, **kwargs: Any) -> Candidates:
        served_alone.append(args[0])
        return single_path(*args, **kwargs)

    monkeypatch.setattr(retriever, "retrieve", counting)
    results = retrieve_batch(retriever, queries)
    assert len(served_alone) == 4  # cold start, include, exclude, unknown-only include
    assert isinstance(results[-1], ValueError)
    assert all(isinstance(r, Candidates) for r in results[:-1])


def test_retrieve_batch_with_one_forward_differs_only_by_float_rounding(
    retriever: Retriever, queries: list[RetrievalQuery]
) -> None:
    """One forward for the whole batch rounds the user vector differently in the last bit
    (a (B,.) matmul instead of (1,.)). Results must equal the single path's ids and order
    except where that rounding flips a near-tie: there the bitwise variant must match, which
    pins the difference on the forward and nothing else."""
    single = [_single(retriever, q) for q in queries]
    batched = _batched(retriever, queries, 32, bitwise=False)
    differing = []
    for i, (a, b) in enumerate(zip(batched, single, strict=True)):
        if isinstance(a, Exception) or isinstance(b, Exception):
            assert type(a) is type(b)
            continue
        if not np.array_equal(a.item_ids, b.item_ids):
            differing.append(i)
            continue
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.two_tower_scores, b.two_tower_scores, rtol=0, atol=1e-5)
        assert (a.cold_start, a.unknown_recent_items, a.exhausted) == (
            b.cold_start,
            b.unknown_recent_items,
            b.exhausted,
        )
    for i in differing:
        assert _identical(retrieve_batch(retriever, [queries[i]], bitwise=True)[0], single[i])
    assert len(differing) <= max(1, len(queries) // 20)  # rare: near-ties only


def test_grouped_requests_finish_on_their_own_retriever(
    artifacts: Path, retriever: Retriever, queries: list[RetrievalQuery]
) -> None:
    """A hot reload mid-batch: requests for two loaded versions, interleaved."""
    other = Retriever.load(resolve(artifacts), device="cpu")
    other.covisitation = None  # a visibly different "version": no fusion
    chosen = [retriever if i % 2 else other for i in range(len(queries))]
    results = retrieve_grouped(list(zip(chosen, queries, strict=True)), bitwise=True)
    for r, q, got in zip(chosen, queries, results, strict=True):
        assert _identical(got, _single(r, q))


def test_blas_threshold_keeps_single_queries_on_the_scan(retriever: Retriever) -> None:
    index = retriever.index.index
    query = retriever.index.embeddings[:1]
    before = faiss.cvar.distance_compute_blas_threshold
    expected = index.search(query, 50)
    try:
        assert enable_faiss_blas_for_batches(dim=index.d) == 4 * index.d  # 4+ queries: BLAS
        scores, rows = index.search(query, 50)
        # The scan and sgemm round differently: bit-identical means the scan still served it.
        np.testing.assert_array_equal(scores, expected[0])
        np.testing.assert_array_equal(rows, expected[1])
        with pytest.raises(ValueError):
            enable_faiss_blas_for_batches(min_queries=1)
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def test_a_batch_and_a_single_search_on_a_gpu_placed_index_take_turns(
    retriever: Retriever, queries: list[RetrievalQuery]
) -> None:
    """The batched path searches through the index's lock too: on a GPU index a batch
    and a lone request from the other executor worker must not search at once."""
    base = retriever.index
    spy = OverlapSpy(base.index)
    placed = ItemIndex(
        spy, base.embeddings, base.categories, len(retriever.category_names), on_gpu=True
    )
    on_gpu = retriever.with_index(placed)
    batch, lone = queries[:8], queries[8]
    with ThreadPoolExecutor(2) as pool:
        batched = pool.submit(retrieve_batch, on_gpu, batch)
        single = pool.submit(_single, on_gpu, lone)
        results = [*batched.result(), single.result()]
    assert not spy.overlapped
    for got, q in zip(results, [*batch, lone], strict=True):
        assert not isinstance(got, Exception)
        expected = _single(retriever, q)
        assert set(got.item_ids.tolist()) == set(expected.item_ids.tolist())
