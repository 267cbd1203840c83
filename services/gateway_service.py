"""RecommendationService: retrieval → ranking → tags, with deadlines split across stages.

The gateway holds no model. It looks up the user's history once, passes it in every
downstream request, and degrades instead of failing: ranking down → retrieval order,
tagging down → no tags; only a retrieval failure fails the request (UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc import aio

from recdata.artifacts import read_manifest, require_component, resolve_version
from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recsys.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from services import validation
from services.catalog import CatalogEntry, DeleteResult, UpsertResult
from services.errors import NotReady, grpc_errors
from services.logs import log_fields
from services.metrics import DEGRADED, STAGE_LATENCY
from services.tracing import Tracing

logger = logging.getLogger(__name__)

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name

# Client-side balancing over every address a DNS name resolves to (headless Services).
_CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


@dataclass
class GatewayConfig:
    artifacts: Path
    retrieval_addr: str
    ranking_addr: str
    tagging_addr: str
    candidates: int = 200  # K asked of retrieval
    max_items: int = 100
    max_recent_items: int = 200
    max_excluded_items: int = 5000
    history_length: int = 50  # recent items passed to the models
    interest_items: int = 10  # recent items whose tags describe the user's interests
    default_deadline_s: float = 1.0  # when the client sets none
    # Of the remaining time. Retrieval is the one stage the gateway cannot do without, so it
    # may use most of it; the rest is for ranking (or skipping it) and tags.
    retrieval_share: float = 0.8
    ranking_share: float = 0.6  # of what remains after retrieval
    tags_per_item: int = 3

    def __post_init__(self) -> None:
        if self.default_deadline_s <= 0:
            raise ValueError(f"default deadline must be > 0 s, got {self.default_deadline_s}")
        if self.candidates < 1 or self.max_items < 1:
            raise ValueError("candidates and max_items must be >= 1")
        if not (0 < self.retrieval_share < 1 and 0 < self.ranking_share < 1):
            raise ValueError("stage shares must be within (0, 1)")


@dataclass(frozen=True)
class GatewayData:
    items: ItemTable
    users: UserHistoryStore
    version: str


@dataclass
class Stages:
    timings: list[gateway_pb2.StageTiming]

    def add(self, stage: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        STAGE_LATENCY.labels("gateway", stage).observe(elapsed)
        self.timings.append(gateway_pb2.StageTiming(stage=stage, milliseconds=elapsed * 1e3))


class GatewayApp(gateway_pb2_grpc.RecommendationServiceServicer):
    name = "gateway"

    def __init__(self, config: GatewayConfig, tracing: Tracing | None = None) -> None:
        """`tracing`: pass the trace of each Recommend on to the three stages."""
        self.config = config
        self.loaded: GatewayData | None = None
        self._channels: list[aio.Channel] = []
        self._interceptors = tracing.client_interceptors() if tracing is not None else None
        # Display data (title, category) of items added or changed through CatalogService
        # since start-up; replaced, never mutated, so a request reads one consistent map.
        self.live_items: dict[int, tuple[str, str]] = {}
        self.catalog_backend = self

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        gateway_pb2_grpc.add_RecommendationServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "users")
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(None, ItemTable.load, version_dir / "items")
        users = await loop.run_in_executor(None, UserHistoryStore.load, version_dir / "users")
        if not self._channels:
            cfg = self.config
            self._channels = [
                aio.insecure_channel(a, options=_CHANNEL_OPTIONS, interceptors=self._interceptors)
                for a in (cfg.retrieval_addr, cfg.ranking_addr, cfg.tagging_addr)
            ]
            self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channels[0])
            self.ranking = ranking_pb2_grpc.RankingServiceStub(self._channels[1])
            self.tagging = tagging_pb2_grpc.TaggingServiceStub(self._channels[2])
        # Catalogue display data + user histories, swapped as one reference.
        self.loaded = GatewayData(items, users, manifest["version"])
        return manifest["version"]

    async def upsert_items(self, entries: list[CatalogEntry]) -> UpsertResult:
        """The gateway keeps what it shows for an item: its title and category. (Retrieval,
        ranking and tagging take the same call for what they need.)"""
        data = self._data()
        ids = np.array([e.item_id for e in entries], np.int64)
        _, in_base = data.items.rows_of(ids)
        known = [bool(b) or int(i) in self.live_items for i, b in zip(ids, in_base, strict=True)]
        self.live_items = {**self.live_items, **{e.item_id: (e.title, e.category) for e in entries}}
        updated = sum(known)
        return UpsertResult(len(entries) - updated, updated, len(self.live_items), data.version)

    async def delete_items(self, item_ids: list[int]) -> DeleteResult:
        """Nothing to stop serving here (retrieval no longer returns the items); forget
        their display data."""
        data = self._data()
        _, in_base = data.items.rows_of(np.array(item_ids, np.int64))
        live = dict(self.live_items)
        found = [
            live.pop(i, None) is not None or bool(b) for i, b in zip(item_ids, in_base, strict=True)
        ]
        self.live_items = live
        missing = [i for i, f in zip(item_ids, found, strict=True) if not f]
        return DeleteResult(len(item_ids) - len(missing), missing, data.version)

    def _data(self) -> GatewayData:
        if self.loaded is None:
            raise NotReady("gateway is still loading")
        return self.loaded

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def _history(
        self,
        data: GatewayData,
        live_items: dict[int, tuple[str, str]],
        user_id: str,
        recent: np.ndarray,
    ) -> np.ndarray:
        stored = data.users.recent_items(user_id)
        if len(recent):
            # Session ids the catalogue does not know are ignored downstream anyway; dropped
            # here, so that they cannot push the user's stored history out of the window.
            _, known = data.items.rows_of(recent)
            if not known.all() and live_items:
                unknown = np.flatnonzero(~known)
                known[unknown] = [int(i) in live_items for i in recent[unknown]]
            recent = recent[known]
        merged = np.concatenate([stored, recent]) if len(recent) else stored
        return merged[-self.config.history_length :]

    @grpc_errors
    async def Recommend(
        self, request: gateway_pb2.RecommendRequest, context: aio.ServicerContext
    ) -> gateway_pb2.RecommendResponse:
        data = self.loaded
        if data is None:
            raise NotReady("gateway is still loading")
        live_items = self.live_items  # one catalogue state for the whole request
        cfg = self.config
        user = validation.user_id(request.user_id)
        num_items = validation.positive_count(request.num_items, "num_items", cfg.max_items)
        recent = validation.item_ids(
            request.recent_item_ids, "recent_item_ids", cfg.max_recent_items
        )
        excluded = validation.item_ids(
            request.exclude_item_ids, "exclude_item_ids", cfg.max_excluded_items
        )
        include = validation.categories(request.include_categories, "include_categories")
        exclude_cats = validation.categories(request.exclude_categories, "exclude_categories")

        remaining = context.time_remaining()
        budget = cfg.default_deadline_s if remaining is None else remaining
        # Keep a margin for building the reply, so a stage that times out still leaves time to
        # answer (degraded) before the client's own deadline.
        deadline = time.monotonic() + budget - min(0.05, 0.1 * budget)
        stages = Stages([])
        history = self._history(data, live_items, user, recent)
        if not request.allow_seen_items:
            excluded = np.union1d(excluded, data.users.seen_items(user))
            excluded = np.union1d(excluded, recent)

        # 1. Retrieval: the one stage we cannot do without.
        started = time.perf_counter()
        try:
            candidates = await self.retrieval.Retrieve(
                retrieval_pb2.RetrieveRequest(
                    user_id=user,
                    recent_item_ids=history.tolist(),
                    k=max(cfg.candidates, num_items),
                    filter=common_pb2.ItemFilter(
                        exclude_item_ids=excluded.tolist(),
                        include_categories=include,
                        exclude_categories=exclude_cats,
                    ),
                ),
                timeout=max(0.001, (deadline - time.monotonic()) * cfg.retrieval_share),
            )
        except aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # The gateway validated the user's fields; a refusal here is its own settings
                # (e.g. --candidates above retrieval's --max-k), not the caller's mistake.
                logger.error(
                    "retrieval rejected the gateway's request",
                    extra=log_fields(details=err.details()),
                )
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"gateway misconfigured: retrieval rejected its request: {err.details()}",
                )
            logger.warning(
                "retrieval failed", extra=log_fields(code=err.code().name, details=err.details())
            )
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # Shedding load: passed on as such (UNAVAILABLE invites an immediate retry).
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"retrieval stage overloaded: {err.details()}",
                )
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # Out of time, not out of service: UNAVAILABLE would tell the client to retry
                # elsewhere; a larger deadline is what helps.
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"retrieval stage ran out of its share of the deadline ({err.details()})",
                )
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"retrieval stage unavailable ({err.code().name}): {err.details()}",
            )
        stages.add("retrieval", started)
        versions = {"retrieval": candidates.model_version, "gateway": data.version}
        ids = np.asarray(candidates.item_ids, np.int64)
        scores = np.asarray(candidates.scores, np.float32)

        # 2. Ranking, skipped for cold-start users (nothing to personalise on).
        ranking_degraded = False
        if candidates.cold_start or len(ids) == 0:
            top_ids, top_scores = ids[:num_items], scores[:num_items]
        else:
            started = time.perf_counter()
            try:
                ranked = await self.ranking.Rank(
                    ranking_pb2.RankRequest(
                        user_id=user,
                        recent_item_ids=history.tolist(),
                        candidate_item_ids=candidates.item_ids,
                        candidate_scores=candidates.two_tower_scores,
                        num_items=num_items,
                    ),
                    timeout=max(0.001, (deadline - time.monotonic()) * cfg.ranking_share),
                )
                top_ids = np.asarray(ranked.item_ids, np.int64)
                top_scores = np.asarray(ranked.scores, np.float32)
                versions["ranking"] = ranked.model_version
            except aio.AioRpcError as err:
                ranking_degraded = True
                DEGRADED.labels("gateway", "ranking").inc()
                logger.warning(
                    "ranking failed; serving retrieval order",
                    extra=log_fields(code=err.code().name, details=err.details()),
                )
                top_ids, top_scores = ids[:num_items], scores[:num_items]
            stages.add("ranking", started)

        # 3. Tags for the results and for the user's recent items (their interests).
        started = time.perf_counter()
        interest_ids = history[-cfg.interest_items :]
        item_tags: dict[int, list[common_pb2.Tag]] = {}
        tagging_degraded = False
        try:
            tagged = await self.tagging.GetItemTags(
                tagging_pb2.GetItemTagsRequest(
                    item_ids=np.union1d(top_ids, interest_ids).tolist(), max_tags=cfg.tags_per_item
                ),
                timeout=max(0.001, deadline - time.monotonic()),
            )
            item_tags = {t.item_id: list(t.tags) for t in tagged.items}
            versions["tagging"] = tagged.model_version
        except aio.AioRpcError as err:
            tagging_degraded = True
            DEGRADED.labels("gateway", "tagging").inc()
            logger.warning(
                "tagging failed; serving items without tags",
                extra=log_fields(code=err.code().name, details=err.details()),
            )
        stages.add("tagging", started)

        return gateway_pb2.RecommendResponse(
            items=_items(data.items, live_items, top_ids, top_scores, item_tags),
            model_versions=versions,
            ranking_degraded=ranking_degraded,
            tagging_degraded=tagging_degraded,
            cold_start=candidates.cold_start,
            exhausted=candidates.exhausted and len(top_ids) < num_items,
            timings=stages.timings,
            user_interest_tags=_interests(interest_ids, item_tags),
        )


def _items(
    items: ItemTable,
    live_items: dict[int, tuple[str, str]],
    ids: np.ndarray,
    scores: np.ndarray,
    tags: dict[int, list[common_pb2.Tag]],
) -> list[gateway_pb2.RecommendedItem]:
    rows, known = items.rows_of(ids)
    out = []
    for item_id, score, row, ok in zip(ids.tolist(), scores.tolist(), rows, known, strict=True):
        title, category = "", ""
        if item_id in live_items:  # added or changed since training: its newest content
            title, category = live_items[item_id]
        elif ok:
            title, category = items.titles[row], items.category_names[items.categories[row]]
        out.append(
            gateway_pb2.RecommendedItem(
                item_id=item_id,
                score=score,
                title=title,
                category=category,
                tags=tags.get(item_id, []),
                external_id=(items.external_ids[row] if ok and items.external_ids else ""),
            )
        )
    return out


def _interests(
    ids: np.ndarray, tags: dict[int, list[common_pb2.Tag]], limit: int = 5
) -> list[common_pb2.Tag]:
    """Tags most common among the user's recent items, confidence = share of those items."""
    counts: Counter[str] = Counter()
    for item_id in ids.tolist():
        for tag in tags.get(item_id, []):
            counts[tag.name] += 1
    n = max(len(ids), 1)
    return [common_pb2.Tag(name=name, confidence=c / n) for name, c in counts.most_common(limit)]
