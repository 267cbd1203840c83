"""TaggingService: a thin adapter over tagging.Tagger and the catalogue tags.

GenerateTags goes through a MicroBatcher (``batching``): concurrent calls are served by one
model call per tagger, which pays most for the MiniLM encoder (one padded forward over many
texts instead of many small ones); a batch forms only while another one runs, waits at most
``batch_wait_ms`` and never past a member's deadline, and a call with many products skips
it. GetItemTags reads the catalogue tags from memory.

Items added to the catalogue after training: `upsert_items` generates their tags once and
caches them in the live catalogue, so GetItemTags returns them from then on;
`delete_items` removes items. The catalogue-admin RPC calls these two methods. The items
and deletions are remembered, and re-applied (re-tagged by the new model) when a reload
swaps in another artifact version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from grpc import aio

from recdata.artifacts import read_manifest, require_component, resolve_version
from recsys.v1 import common_pb2, tagging_pb2, tagging_pb2_grpc
from services import validation
from services.batching import MicroBatcher, Overloaded, deadline_from_remaining
from services.catalog import MAX_DELETE_IDS, CatalogEntry, DeleteResult, UpsertResult
from services.errors import FailedPrecondition, InvalidArgument, NotReady, grpc_errors
from services.executor import ModelExecutor
from services.metrics import BATCH_SIZE, STAGE_LATENCY
from tagging.batch import TagQuery, tag_grouped
from tagging.catalog_tags import STORED_TAGS, CatalogTags, LiveCatalogTags, TagPairs
from tagging.tagger import Tagger
from tagging.text import product_text

SERVICE_NAME = tagging_pb2.DESCRIPTOR.services_by_name["TaggingService"].full_name


@dataclass
class TaggingConfig:
    artifacts: Path
    default_max_tags: int = 5
    max_tags: int = 50
    max_batch: int = 256
    max_text_chars: int = 4096
    max_lookup_ids: int = 5000
    max_upsert_items: int = 1024
    workers: int = 2
    batching: bool = True  # gather concurrent GenerateTags calls into one model call
    batch_max: int = 32  # calls per batch
    # A call with more products than this is a batch already: it skips the batcher, so one
    # big call cannot hold up the small calls gathered with it (<= 32 x 8 texts per batch).
    batch_item_limit: int = 8
    batch_wait_ms: float = 2.0
    batch_queue: int = 256  # past this many waiting calls: RESOURCE_EXHAUSTED at once
    # Products of the big calls (above batch_item_limit) queued for the model threads at
    # once; past it RESOURCE_EXHAUSTED at once, so a flood of big calls cannot queue seconds
    # of work ahead of the small ones (1024: about 0.6 s on 2 threads of this machine).
    max_direct_texts: int = 1024


class ProductItem(Protocol):
    """What `upsert_items` reads from each item: a dataclass or a protobuf message."""

    @property
    def item_id(self) -> int: ...

    @property
    def title(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def category(self) -> str: ...


@dataclass(frozen=True)
class CatalogItem:
    item_id: int
    title: str
    description: str = ""
    category: str = ""


def _tags(pairs: TagPairs) -> list[common_pb2.Tag]:
    return [common_pb2.Tag(name=name, confidence=conf) for name, conf in pairs]


class TaggingApp(tagging_pb2_grpc.TaggingServiceServicer):
    name = "tagging"

    def __init__(self, config: TaggingConfig) -> None:
        self.config = config
        self.loaded: tuple[Tagger, LiveCatalogTags, str] | None = None  # swapped as one
        self._executor = ModelExecutor(config.workers, "tagging")
        self._timing = STAGE_LATENCY.labels("tagging", "generate")
        # Catalogue changes since training, re-applied on reload; the lock orders upserts,
        # deletes and the swap of a reload so none of them is lost in between.
        self._upserted: dict[int, CatalogItem] = {}
        self._deleted: set[int] = set()
        self._catalog_lock = asyncio.Lock()
        self.catalog_backend = TaggingCatalog(self)
        self._direct_texts = 0  # products of big calls queued or running (see max_direct_texts)
        self._batcher: MicroBatcher | None = None
        if config.batching:
            self._batcher = MicroBatcher(
                tag_grouped,
                self._executor.pool,
                max_batch=config.batch_max,
                max_wait_ms=config.batch_wait_ms,
                max_queue=config.batch_queue,
                max_concurrent=config.workers,
                on_batch=BATCH_SIZE.labels("tagging").observe,
            )

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        tagging_pb2_grpc.add_TaggingServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "tagging")
        try:
            tagger = await self._executor.run(lambda: Tagger.load(version_dir / "tagging"))
        except RuntimeError as exc:  # e.g. the MiniLM package missing or a different build
            raise FailedPrecondition(f"tag model of {manifest['version']}: {exc}") from exc
        base = await self._executor.run(lambda: CatalogTags.load(version_dir / "tagging"))
        catalog = LiveCatalogTags(base)
        await self._executor.run(lambda: tagger.predict(["warm up the tag model"]))
        if self._batcher is not None:
            warm = [(tagger, TagQuery(["warm up", "the batched path"]))] * 2
            await self._executor.run(lambda: tag_grouped(warm))
        async with self._catalog_lock:
            await self._reapply(tagger, catalog)
            self.loaded = (tagger, catalog, manifest["version"])
        return manifest["version"]

    async def _reapply(self, tagger: Tagger, catalog: LiveCatalogTags) -> None:
        """Bring a freshly loaded catalogue up to date with changes made since training."""
        if self._deleted:
            catalog.delete(np.fromiter(self._deleted, np.int64))
        if self._upserted:
            items = list(self._upserted.values())
            await self._tag_into(tagger, catalog, items)

    async def _tag_into(
        self, tagger: Tagger, catalog: LiveCatalogTags, items: Sequence[CatalogItem]
    ) -> np.ndarray:
        ids = np.array([i.item_id for i in items], np.int64)
        texts = [product_text(i.title, i.description, i.category) for i in items]

        def tag() -> None:
            catalog.upsert_probabilities(ids, tagger.predict_proba(texts), tagger.thresholds)

        await self._executor.run(tag)
        return ids

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        await self._executor.shutdown()

    def _ready(self) -> tuple[Tagger, LiveCatalogTags, str]:
        if self.loaded is None:
            raise NotReady("tagging model is still loading")
        return self.loaded

    def _checked_text(self, field: str, title: str, description: str, category: str) -> str:
        limit = self.config.max_text_chars
        for name, value in (("title", title), ("description", description), ("category", category)):
            if len(value) > limit:
                raise InvalidArgument(f"{field}.{name}", f"at most {limit} characters")
        if not (title.strip() or description.strip()):
            raise InvalidArgument(field, "needs a title or a description")
        return product_text(title, description, category)

    # --- catalogue changes (called by the catalogue-admin RPC) ---------------------------

    async def upsert_items(self, items: Sequence[ProductItem]) -> list[TagPairs]:
        """Tag new or changed catalogue items once and serve those tags from GetItemTags.

        Returns each item's stored tags (at most 8, confidence desc, each at or above its
        calibrated threshold), in request order. Raises InvalidArgument naming the field
        (empty or oversized batch, non-positive or repeated ids, text too long, neither
        title nor description) and NotReady before the model is loaded."""
        self._ready()
        cfg = self.config
        if not items:
            raise InvalidArgument("items", "must contain at least one item")
        if len(items) > cfg.max_upsert_items:
            raise InvalidArgument(
                "items", f"at most {cfg.max_upsert_items} per call, got {len(items)}"
            )
        checked: list[CatalogItem] = []
        seen: set[int] = set()
        for i, item in enumerate(items):
            item_id = int(item.item_id)
            if item_id <= 0:
                raise InvalidArgument(f"items[{i}].item_id", f"must be positive, got {item_id}")
            if item_id in seen:
                raise InvalidArgument(f"items[{i}].item_id", f"{item_id} appears twice")
            seen.add(item_id)
            self._checked_text(f"items[{i}]", item.title, item.description, item.category)
            checked.append(CatalogItem(item_id, item.title, item.description, item.category))
        # Shielded (the wait for the lock included): tagging changes the served catalogue in
        # place, so the bookkeeping that a reload re-applies must follow even if the caller
        # gives up (its deadline); the change is applied and remembered, never only one.
        return await asyncio.shield(self._upsert_checked(checked))

    async def _upsert_checked(self, checked: list[CatalogItem]) -> list[TagPairs]:
        async with self._catalog_lock:
            tagger, catalog, _ = self._ready()  # the version current now, not at the call
            ids = await self._tag_into(tagger, catalog, checked)
            for item in checked:
                self._upserted[item.item_id] = item
                self._deleted.discard(item.item_id)
            tags, _known = catalog.lookup(ids, STORED_TAGS)
        return tags

    async def delete_items(self, item_ids: Sequence[int]) -> list[int]:
        """Remove items from the served catalogue tags; returns the ids that were there
        (unknown ids are ignored). InvalidArgument for non-positive ids or too many."""
        self._ready()
        ids = validation.item_ids(item_ids, "item_ids", MAX_DELETE_IDS)
        async with self._catalog_lock:
            _, catalog, _ = self._ready()
            removed = catalog.delete(ids)
            for item_id in removed.tolist():
                self._upserted.pop(item_id, None)
                self._deleted.add(item_id)
        return removed.tolist()

    # --- RPCs ----------------------------------------------------------------------------

    @grpc_errors
    async def GenerateTags(
        self, request: tagging_pb2.GenerateTagsRequest, context: aio.ServicerContext
    ) -> tagging_pb2.GenerateTagsResponse:
        tagger, _, version = self._ready()
        cfg = self.config
        if not request.items:
            raise InvalidArgument("items", "must contain at least one product")
        if len(request.items) > cfg.max_batch:
            raise InvalidArgument(
                "items", f"at most {cfg.max_batch} per call, got {len(request.items)}"
            )
        max_tags = validation.count(
            request.max_tags, "max_tags", cfg.default_max_tags, cfg.max_tags
        )
        if not 0.0 <= request.min_confidence <= 1.0:  # NaN fails this too
            raise InvalidArgument("min_confidence", "must be within [0, 1]")
        texts = [
            self._checked_text(f"items[{i}]", item.title, item.description, item.category)
            for i, item in enumerate(request.items)
        ]
        query = TagQuery(texts, max_tags, request.min_confidence or None)
        started = time.perf_counter()
        if self._batcher is not None and len(texts) <= cfg.batch_item_limit:
            predictions = await self._batcher.submit(
                (tagger, query), deadline_from_remaining(context.time_remaining())
            )
        else:
            if self._direct_texts and self._direct_texts + len(texts) > cfg.max_direct_texts:
                raise Overloaded(
                    f"{self._direct_texts} products of other calls already queued "
                    f"(limit {cfg.max_direct_texts}); retry later or send smaller calls"
                )
            self._direct_texts += len(texts)
            try:
                predictions = await self._executor.run(lambda: tag_grouped([(tagger, query)])[0])
            finally:
                self._direct_texts -= len(texts)
            if isinstance(predictions, Exception):
                raise predictions
        self._timing.observe(time.perf_counter() - started)
        return tagging_pb2.GenerateTagsResponse(
            results=[tagging_pb2.TagList(tags=_tags(p)) for p in predictions],
            model_version=version,
        )

    @grpc_errors
    async def GetItemTags(
        self, request: tagging_pb2.GetItemTagsRequest, context: aio.ServicerContext
    ) -> tagging_pb2.GetItemTagsResponse:
        _, catalog, version = self._ready()
        cfg = self.config
        ids = validation.item_ids(request.item_ids, "item_ids", cfg.max_lookup_ids)
        max_tags = validation.count(
            request.max_tags, "max_tags", cfg.default_max_tags, cfg.max_tags
        )
        tags, known = catalog.lookup(ids, max_tags)
        return tagging_pb2.GetItemTagsResponse(
            items=[
                tagging_pb2.ItemTags(item_id=int(i), tags=_tags(t))
                for i, t in zip(ids[known], tags, strict=True)
            ],
            unknown_item_ids=ids[~known].tolist(),
            model_version=version,
        )

    @grpc_errors
    async def ListTags(
        self, request: tagging_pb2.ListTagsRequest, context: aio.ServicerContext
    ) -> tagging_pb2.ListTagsResponse:
        tagger, _, version = self._ready()
        return tagging_pb2.ListTagsResponse(tags=tagger.tag_names, model_version=version)


class TaggingCatalog:
    """CatalogService for the tagging server: each new or changed product is tagged once
    and its tags served from memory by GetItemTags (TaggingApp.upsert_items)."""

    def __init__(self, app: TaggingApp) -> None:
        self._app = app

    async def upsert_items(self, entries: list[CatalogEntry]) -> UpsertResult:
        _, catalog, _ = self._app._ready()
        ids = np.array([e.item_id for e in entries], np.int64)
        _, known = catalog.lookup(ids, 1)
        items = [CatalogItem(e.item_id, e.title, e.description, e.category) for e in entries]
        tags = await self._app.upsert_items(items)
        _, _, version = self._app._ready()
        updated = int(np.count_nonzero(known))
        return UpsertResult(
            len(entries) - updated,
            updated,
            len(self._app._upserted),
            version,
            [(e.item_id, list(t)) for e, t in zip(entries, tags, strict=True)],
        )

    async def delete_items(self, item_ids: list[int]) -> DeleteResult:
        removed = set(await self._app.delete_items(item_ids))
        _, _, version = self._app._ready()
        missing = [i for i in item_ids if i not in removed]
        return DeleteResult(len(item_ids) - len(missing), missing, version)
