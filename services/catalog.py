"""CatalogService: live catalogue upserts and deletes, validated here, applied by the app.

Served next to ModelAdminService (same port placement). Each app — retrieval, ranking,
tagging, gateway — implements `CatalogBackend`; this module owns the wire format and the
input checks so every service answers bad input the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from grpc import aio

from recsys.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2
from services import validation
from services.errors import InvalidArgument, NotReady, grpc_errors

SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name

MAX_ITEMS_PER_CALL = 1000
MAX_TEXT_LENGTH = 2000
MAX_DELETE_IDS = 10_000
MAX_TAGS_PER_ITEM = 100


@dataclass(frozen=True)
class CatalogEntry:
    item_id: int
    title: str
    description: str
    category: str
    brand: str
    price: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    live_items: int
    model_version: str
    # Tagging only: (item_id, [(tag, confidence), ...]) in request order.
    tags: list[tuple[int, list[tuple[str, float]]]] = field(default_factory=list)


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    not_found: list[int]
    model_version: str


class CatalogBackend(Protocol):
    async def upsert_items(self, entries: list[CatalogEntry]) -> UpsertResult: ...

    async def delete_items(self, item_ids: list[int]) -> DeleteResult: ...


def entries_from_request(request: catalog_pb2.UpsertItemsRequest) -> list[CatalogEntry]:
    """Every field checked, errors naming the item by position: all or nothing."""
    if not request.items:
        raise InvalidArgument("items", "must not be empty")
    if len(request.items) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument(
            "items", f"at most {MAX_ITEMS_PER_CALL} per call, got {len(request.items)}"
        )
    entries: list[CatalogEntry] = []
    seen: set[int] = set()
    for i, item in enumerate(request.items):
        where = f"items[{i}]"
        if item.item_id <= 0:
            raise InvalidArgument(f"{where}.item_id", f"must be positive, got {item.item_id}")
        if item.item_id in seen:
            raise InvalidArgument(f"{where}.item_id", f"{item.item_id} appears twice")
        seen.add(item.item_id)
        title = item.title.strip()
        if not title:
            raise InvalidArgument(f"{where}.title", "must not be empty")
        for name in ("title", "description", "brand"):
            text = getattr(item, name)
            if len(text) > MAX_TEXT_LENGTH:
                raise InvalidArgument(f"{where}.{name}", f"at most {MAX_TEXT_LENGTH} characters")
        validation.categories([item.category], f"{where}.category")
        if not math.isfinite(item.price) or item.price < 0:
            raise InvalidArgument(
                f"{where}.price", f"must be a finite number >= 0, got {item.price}"
            )
        validation.categories(list(item.tags), f"{where}.tags", MAX_TAGS_PER_ITEM, "tag")
        entries.append(
            CatalogEntry(
                item.item_id,
                title,
                item.description,
                item.category,
                item.brand,
                item.price,
                tuple(item.tags),
            )
        )
    return entries


class CatalogAdmin(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, backend: CatalogBackend, ready: Callable[[], bool]) -> None:
        """`ready()` says whether the app has a model loaded (changes need one)."""
        self._backend = backend
        self._ready = ready

    def register(self, server: aio.Server) -> None:
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(self, server)

    def _check_ready(self) -> None:
        if not self._ready():
            raise NotReady("the model is still loading")

    @grpc_errors
    async def UpsertItems(
        self, request: catalog_pb2.UpsertItemsRequest, context: aio.ServicerContext
    ) -> catalog_pb2.UpsertItemsResponse:
        entries = entries_from_request(request)
        self._check_ready()
        result = await self._backend.upsert_items(entries)
        return catalog_pb2.UpsertItemsResponse(
            inserted=result.inserted,
            updated=result.updated,
            live_items=result.live_items,
            model_version=result.model_version,
            tags=[
                catalog_pb2.ItemTagList(
                    item_id=item_id,
                    tags=[common_pb2.Tag(name=n, confidence=c) for n, c in tags],
                )
                for item_id, tags in result.tags
            ],
        )

    @grpc_errors
    async def DeleteItems(
        self, request: catalog_pb2.DeleteItemsRequest, context: aio.ServicerContext
    ) -> catalog_pb2.DeleteItemsResponse:
        if not request.item_ids:
            raise InvalidArgument("item_ids", "must not be empty")
        ids = np.unique(validation.item_ids(request.item_ids, "item_ids", MAX_DELETE_IDS))
        self._check_ready()
        result = await self._backend.delete_items(ids.tolist())
        return catalog_pb2.DeleteItemsResponse(
            deleted=result.deleted,
            not_found_item_ids=result.not_found,
            model_version=result.model_version,
        )
