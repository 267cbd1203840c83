"""RankingService: a thin adapter over ranking.RankingScorer.

With batching on, concurrent Rank calls are gathered by a `MicroBatcher` (services/batching.py)
and scored by one forward pass (`ranking.scorer.rank_grouped`): a lone call never waits, a
batch grows only while another one runs, up to `batch_max` calls, `batch_wait_ms` or the
earliest member's deadline; past `batch_queue` waiting calls a request gets
RESOURCE_EXHAUSTED at once. Results equal the unbatched ones (tests/unit/test_ranking_batch.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc import aio

from ranking.live_items import RankingItem
from ranking.scorer import (
    IncompatibleRanker,
    RankingScorer,
    RankQuery,
    UnknownCandidates,
    rank_grouped,
)
from recdata.artifacts import read_manifest, require_component, resolve_version
from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from services import validation
from services.batching import MicroBatcher, deadline_from_remaining
from services.catalog import CatalogEntry, DeleteResult, UpsertResult
from services.errors import FailedPrecondition, InvalidArgument, NotFound, NotReady, grpc_errors
from services.executor import ModelExecutor
from services.metrics import BATCH_SIZE, INLINE_CALLS, STAGE_LATENCY

SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name
# Two-tower scores are inner products of unit vectors; the slack covers float32 rounding.
MAX_ABS_TWO_TOWER_SCORE = 1.001


@dataclass
class RankingConfig:
    artifacts: Path
    max_candidates: int = 2000
    max_recent_items: int = 500
    device: str = "auto"  # auto | cpu | cuda (auto: CUDA when torch sees a GPU)
    # On by default, chosen by measurement (docs/benchmarks.md, "Ranking"): one forward over
    # several requests amortises the per-call feature and forward overheads (~1.4x CPU per
    # call at 200 candidates), and a lone call is dispatched at once.
    batching: bool = True
    # With batching on: a call arriving while the service is idle runs on the loop thread,
    # skipping the executor round trip (services/batching.py, docs/benchmarks.md).
    inline_lone_calls: bool = True
    batch_max: int = 32
    batch_wait_ms: float = 2.0
    # Past this many calls waiting (for a batch, or with batching off for a model thread):
    # RESOURCE_EXHAUSTED at once.
    batch_queue: int = 256
    workers: int = 2

    @classmethod
    def from_args(cls, artifacts: Path, args: argparse.Namespace) -> RankingConfig:
        """From `recserve serve ranking` flags (services/cli.py)."""
        return cls(
            artifacts,
            device=args.device,
            batching=args.batching == "on",
            inline_lone_calls=args.inline_lone_calls == "on",
            batch_max=args.batch_max,
            batch_wait_ms=args.batch_wait_ms,
            workers=args.workers,
        )


class RankingApp(ranking_pb2_grpc.RankingServiceServicer):
    name = "ranking"

    def __init__(self, config: RankingConfig) -> None:
        self.config = config
        self.loaded: tuple[RankingScorer, str] | None = None  # swapped as one reference
        # Items added or changed through CatalogService since start-up (feature rows),
        # re-applied on reload; one writer at a time.
        self._live: dict[int, RankingItem] = {}
        self._catalog_lock = asyncio.Lock()
        self.catalog_backend = self
        self._executor = ModelExecutor(config.workers, "ranking", config.batch_queue)
        self._timing = STAGE_LATENCY.labels("ranking", "forward")
        self._batcher: MicroBatcher | None = None
        if config.batching:
            self._batcher = MicroBatcher(
                rank_grouped,
                self._executor.pool,
                max_batch=config.batch_max,
                max_wait_ms=config.batch_wait_ms,
                max_queue=config.batch_queue,
                max_concurrent=config.workers,
                on_batch=BATCH_SIZE.labels("ranking").observe,
                inline_when_idle=config.inline_lone_calls,
                on_inline=INLINE_CALLS.labels("ranking").inc,
            )

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "ranking")
        try:
            scorer = await self._executor.run(
                lambda: RankingScorer.load(version_dir, device=self.config.device)
            )
        except IncompatibleRanker as exc:  # an operator's mistake: FAILED_PRECONDITION
            raise FailedPrecondition(str(exc)) from exc
        # Warm-up: the first forward passes allocate; keep that off real requests. Two
        # sizes, so a batched forward's larger buffers are warm too.
        ids = scorer.items.item_ids
        await self._executor.run(lambda: scorer.rank(ids[:10], ids[:200], None, 10))
        warm = [RankQuery(ids[: i + 1], ids[:200], None, 10) for i in range(4)]
        await self._executor.run(lambda: scorer.rank_many(warm))
        async with self._catalog_lock:  # no change can slip between re-apply and swap
            if self._live:
                live = list(self._live.values())
                scorer, _ = await self._executor.run(lambda: scorer.with_items(live))
            self.loaded = (scorer, manifest["version"])
        return manifest["version"]

    async def upsert_items(self, entries: list[CatalogEntry]) -> UpsertResult:
        """Feature rows for new or changed items, so Rank scores them like any other."""
        new = [
            RankingItem(e.item_id, e.title, e.category, e.brand, e.price, e.tags) for e in entries
        ]
        async with self._catalog_lock:
            if self.loaded is None:
                raise NotReady("ranking model is still loading")
            scorer, version = self.loaded
            updated_scorer, updated = await self._executor.run(lambda: scorer.with_items(new))
            self.loaded = (updated_scorer, version)
            self._live.update((item.item_id, item) for item in new)
        return UpsertResult(len(new) - updated, updated, len(self._live), version)

    async def delete_items(self, item_ids: list[int]) -> DeleteResult:
        """Ranking keeps the rows (retrieval stops returning deleted items; a client that
        still sends one gets it scored, not an error); it reports which ids it knows."""
        if self.loaded is None:
            raise NotReady("ranking model is still loading")
        scorer, version = self.loaded
        _, known = scorer.items.rows_of(np.asarray(item_ids, np.int64))
        missing = [i for i, k in zip(item_ids, known, strict=True) if not k]
        return DeleteResult(len(item_ids) - len(missing), missing, version)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        await self._executor.shutdown()

    @grpc_errors
    async def Rank(
        self, request: ranking_pb2.RankRequest, context: aio.ServicerContext
    ) -> ranking_pb2.RankResponse:
        if self.loaded is None:
            raise NotReady("ranking model is still loading")
        scorer, version = self.loaded
        query = self._query(request)
        started = time.perf_counter()
        try:
            if self._batcher is not None:
                ranked = await self._batcher.submit(
                    (scorer, query), deadline_from_remaining(context.time_remaining())
                )
            else:
                ranked = await self._executor.run_request(
                    lambda: scorer.rank(
                        query.recent_item_ids,
                        query.candidate_ids,
                        query.candidate_scores,
                        query.num_items,
                    )
                )
        except UnknownCandidates as exc:
            raise NotFound(f"candidate_item_ids: {exc}") from exc
        self._timing.observe(time.perf_counter() - started)
        return ranking_pb2.RankResponse(
            item_ids=ranked.item_ids.tolist(),
            scores=ranked.scores.tolist(),
            model_version=version,
        )

    def _query(self, request: ranking_pb2.RankRequest) -> RankQuery:
        """The request validated into scorer arguments (INVALID_ARGUMENT naming the field)."""
        cfg = self.config
        validation.user_id(request.user_id, required=False)  # unused here; checked as everywhere
        candidates = validation.item_ids(
            request.candidate_item_ids, "candidate_item_ids", cfg.max_candidates
        )
        recent = validation.item_ids(
            request.recent_item_ids, "recent_item_ids", cfg.max_recent_items
        )
        scores = None
        if len(request.candidate_scores):
            if len(request.candidate_scores) != len(candidates):
                raise InvalidArgument(
                    "candidate_scores",
                    f"has {len(request.candidate_scores)} values for {len(candidates)} "
                    "candidate_item_ids (send one per candidate, or none)",
                )
            scores = np.asarray(request.candidate_scores, dtype=np.float32)
            if not np.isfinite(scores).all():
                raise InvalidArgument("candidate_scores", "must be finite numbers")
            # Inner products of unit vectors: anything else is not what the ranker was
            # trained on, and far outside it the ranker's logits overflow.
            if np.abs(scores).max() > MAX_ABS_TWO_TOWER_SCORE:
                raise InvalidArgument(
                    "candidate_scores",
                    "must be two-tower scores in [-1, 1] (RetrieveResponse.two_tower_scores)",
                )
        if request.num_items < 0:
            raise InvalidArgument("num_items", f"must be >= 0, got {request.num_items}")
        if validation.has_duplicates(candidates):
            raise InvalidArgument("candidate_item_ids", "contains duplicate ids")
        return RankQuery(recent, candidates, scores, request.num_items)
