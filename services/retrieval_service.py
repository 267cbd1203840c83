"""RetrievalService: a thin adapter over retrieval.Retriever."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc import aio

from recdata.artifacts import read_manifest, require_component, resolve_version
from recdata.items import ItemTable, price_buckets
from recsys.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.batch import RetrievalQuery, enable_faiss_blas_for_batches, retrieve_grouped
from retrieval.index_quality import (
    IndexBelowRecallFloor,
    check_recall_floor,
    recall_floor_message,
)
from retrieval.live_catalogue import (
    DEFAULT_MAX_LIVE_ITEMS,
    CatalogueFull,
    ItemContent,
    delete_items,
    upsert_items,
)
from retrieval.retriever import Retriever
from services import validation
from services.batching import MicroBatcher, deadline_from_remaining
from services.catalog import CatalogEntry, DeleteResult, UpsertResult
from services.errors import FailedPrecondition, LimitReached, NotReady, grpc_errors
from services.executor import ModelExecutor
from services.logs import log_fields
from services.metrics import BATCH_SIZE, INLINE_CALLS, STAGE_LATENCY

logger = logging.getLogger(__name__)

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name


@dataclass
class RetrievalConfig:
    artifacts: Path
    default_k: int = 200
    max_k: int = 1000
    max_recent_items: int = 500
    max_excluded_items: int = 10_000
    device: str = "auto"  # auto | cpu | gpu (FAISS index placement)
    gpu_shard: bool = False  # several GPUs: split the items across them (else replicate)
    batching: bool = True  # gather concurrent calls into one forward + one FAISS search
    # With batching on: a call arriving while the service is idle runs on the loop thread,
    # skipping the executor round trip (services/batching.py, docs/benchmarks.md).
    inline_lone_calls: bool = True
    batch_max: int = 32
    batch_wait_ms: float = 2.0
    # Past this many calls waiting (for a batch, or with batching off for a model thread):
    # RESOURCE_EXHAUSTED at once.
    batch_queue: int = 256
    recall_floor: float = 0.9  # refuse an approximate index measured below this recall@K
    force_index: bool = False  # serve it anyway (logged as a warning)
    workers: int = 2
    max_live_items: int = DEFAULT_MAX_LIVE_ITEMS  # items upserted since training


class RetrievalApp(retrieval_pb2_grpc.RetrievalServiceServicer):
    name = "retrieval"

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        # (model, version) swapped as one reference: a request reads it once and finishes on
        # that version even if a reload swaps in another meanwhile.
        self.loaded: tuple[Retriever, str] | None = None
        # Live catalogue changes since start-up, newest state per id (None = deleted) with
        # the version serving when it was made: a reload re-applies them to the new
        # version. One writer at a time.
        self._changes: dict[int, tuple[ItemContent | None, str]] = {}
        self._catalog_lock = asyncio.Lock()
        self.catalog_backend = self
        self._executor = ModelExecutor(config.workers, "retrieval", config.batch_queue)
        self._timing = STAGE_LATENCY.labels("retrieval", "search")
        # Batches form only while another batch is running (a lone call never waits), so
        # latency at low load is the single path's and throughput grows under load.
        self._batcher: MicroBatcher | None = None
        if config.batching:
            self._batcher = MicroBatcher(
                retrieve_grouped,
                self._executor.pool,
                max_batch=config.batch_max,
                max_wait_ms=config.batch_wait_ms,
                max_queue=config.batch_queue,
                max_concurrent=config.workers,
                on_batch=BATCH_SIZE.labels("retrieval").observe,
                inline_when_idle=config.inline_lone_calls,
                on_inline=INLINE_CALLS.labels("retrieval").inc,
            )

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "retrieval")
        self._check_index(manifest)
        retriever = await self._executor.run(
            lambda: Retriever.load(
                version_dir, device=self.config.device, gpu_shard=self.config.gpu_shard
            )
        )
        # Warm-up: the first forward pass and search allocate; keep that off real requests.
        probe = retriever.items.item_ids[:5]
        await self._executor.run(lambda: retriever.retrieve(probe, self.config.default_k))
        if self._batcher is not None:
            # Batched queries take FAISS's matrix-multiply path (single ones keep the scan).
            enable_faiss_blas_for_batches(dim=retriever.index.embeddings.shape[1])
            batch = [RetrievalQuery(probe[: i + 1], self.config.default_k) for i in range(4)]
            await self._executor.run(lambda: retrieve_grouped([(retriever, q) for q in batch]))
        async with self._catalog_lock:  # no change can slip between replay and swap
            changes = self._changes
            if changes:
                snapshot = dict(changes)  # a cancelled load releases the lock mid-replay
                retriever, changes = await self._executor.run(
                    lambda: self._replay(retriever, manifest["version"], snapshot)
                )
            # Both or neither: a load cancelled before this line (the caller's deadline)
            # leaves the serving version and the remembered changes as they were.
            self.loaded = (retriever, manifest["version"])
            self._changes = changes
        return manifest["version"]

    def _replay(
        self,
        retriever: Retriever,
        version: str,
        changes: dict[int, tuple[ItemContent | None, str]],
    ) -> tuple[Retriever, dict[int, tuple[ItemContent | None, str]]]:
        """`retriever` (of `version`) with the remembered changes applied, and the changes
        to remember: all of them. A change is skipped — which frees live capacity after a
        retrain — when the new version is newer than the one the change was made on (version
        names start with their UTC build time) *and* already holds it: the deleted id absent,
        the upserted item present with the same title, category, brand and price bucket (all
        the item tower reads). It is still remembered: a rollback to an older version, which
        does not hold it, gets it re-applied (a delete forgotten here would bring an
        out-of-stock item back). Every other change is re-applied."""
        newer = [i for i, (_, made_on) in changes.items() if version > made_on]
        held = set(_held(retriever.items, [(i, changes[i][0]) for i in newer]))
        pending = {i: change for i, change in changes.items() if i not in held}
        upserts = [c for c, _ in pending.values() if c is not None]
        deletes = [i for i, (c, _) in pending.items() if c is None]
        if upserts:
            retriever, _ = upsert_items(retriever, upserts, self.config.max_live_items)
        if deletes:
            retriever, _ = delete_items(retriever, deletes)
        logger.info(
            "live catalogue re-applied",
            extra=log_fields(upserted=len(upserts), deleted=len(deletes), held=len(held)),
        )
        return retriever, changes

    async def upsert_items(self, entries: list[CatalogEntry]) -> UpsertResult:
        contents = [ItemContent(e.item_id, e.title, e.category, e.brand, e.price) for e in entries]
        async with self._catalog_lock:
            retriever, version = self._current()
            try:
                updated, outcome = await self._executor.run(
                    lambda: upsert_items(retriever, contents, self.config.max_live_items)
                )
            except CatalogueFull as exc:
                raise LimitReached(str(exc)) from exc
            self.loaded = (updated, version)  # the next request sees the new items
            self._changes.update((c.item_id, (c, version)) for c in contents)
        return UpsertResult(outcome.inserted, outcome.updated, outcome.live_items, version)

    async def delete_items(self, item_ids: list[int]) -> DeleteResult:
        async with self._catalog_lock:
            retriever, version = self._current()
            updated, outcome = await self._executor.run(lambda: delete_items(retriever, item_ids))
            self.loaded = (updated, version)
            missing = set(outcome.not_found)  # never served: nothing to remember
            self._changes.update((i, (None, version)) for i in item_ids if i not in missing)
        return DeleteResult(outcome.deleted, outcome.not_found, version)

    def _current(self) -> tuple[Retriever, str]:
        if self.loaded is None:
            raise NotReady("retrieval model is still loading")
        return self.loaded

    def _check_index(self, manifest: dict) -> None:
        quality = manifest.get("index", {})
        if "recall" not in quality:
            raise FailedPrecondition(
                f"version {manifest.get('version')} records no index recall; retrain it"
            )
        try:
            check_recall_floor(quality, self.config.recall_floor, self.config.force_index)
        except IndexBelowRecallFloor as exc:
            raise FailedPrecondition(f"{exc} (--force-index)") from exc
        if quality["recall"] < self.config.recall_floor:
            logger.warning(
                "serving an index below the recall floor (forced)",
                extra=log_fields(message=recall_floor_message(quality, self.config.recall_floor)),
            )

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        await self._executor.shutdown()

    @grpc_errors
    async def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: aio.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        if self.loaded is None:
            raise NotReady("retrieval model is still loading")
        retriever, version = self.loaded
        cfg = self.config
        k = validation.count(request.k, "k", cfg.default_k, cfg.max_k)
        validation.user_id(request.user_id, required=False)  # unused here; checked as everywhere
        recent = validation.item_ids(
            request.recent_item_ids, "recent_item_ids", cfg.max_recent_items
        )
        excluded = validation.item_ids(
            request.filter.exclude_item_ids, "filter.exclude_item_ids", cfg.max_excluded_items
        )
        include = validation.categories(
            request.filter.include_categories, "filter.include_categories"
        )
        exclude = validation.categories(
            request.filter.exclude_categories, "filter.exclude_categories"
        )
        started = time.perf_counter()
        if self._batcher is not None:
            result = await self._batcher.submit(
                (retriever, RetrievalQuery(recent, k, excluded, include, exclude)),
                deadline_from_remaining(context.time_remaining()),
            )
        else:
            result = await self._executor.run_request(
                lambda: retriever.retrieve(recent, k, excluded, include, exclude)
            )
        self._timing.observe(time.perf_counter() - started)
        return retrieval_pb2.RetrieveResponse(
            item_ids=result.item_ids.tolist(),
            scores=np.asarray(result.scores, np.float32).tolist(),
            model_version=version,
            cold_start=result.cold_start,
            unknown_recent_items=result.unknown_recent_items,
            exhausted=result.exhausted,
            two_tower_scores=np.asarray(result.two_tower_scores, np.float32).tolist(),
        )


def _held(items: ItemTable, changes: list[tuple[int, ItemContent | None]]) -> list[int]:
    """The ids among `changes` that a version's own catalogue already reflects: a delete
    (None) when the id is absent, an upsert when the item is there with the same content.
    One vectorised look-up for all of them (a reload may replay up to --max-live-items)."""
    if not changes:
        return []
    ids = np.array([i for i, _ in changes], np.int64)
    rows, known = items.rows_of(ids)
    prices = np.array([c.price if c is not None else 0.0 for _, c in changes], np.float64)
    buckets = price_buckets(prices, items.price_edges)
    held = []
    for (item_id, content), row, present, bucket in zip(
        changes, rows.tolist(), known.tolist(), buckets.tolist(), strict=True
    ):
        if content is None:
            same = not present
        else:
            same = (
                present
                and items.titles[row] == content.title
                and items.category_names[items.categories[row]] == content.category
                and items.brand_names[items.brands[row]] == content.brand
                and int(items.price_buckets[row]) == bucket
            )
        if same:
            held.append(item_id)
    return held
