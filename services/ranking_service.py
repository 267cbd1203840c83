"""RankingService: a thin adapter over ranking.RankingScorer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc import aio

from ranking.scorer import RankingScorer, UnknownCandidates
from recdata.artifacts import read_manifest, require_component, resolve_version
from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from services import validation
from services.errors import InvalidArgument, NotFound, NotReady, grpc_errors
from services.executor import ModelExecutor
from services.metrics import STAGE_LATENCY

SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name


@dataclass
class RankingConfig:
    artifacts: Path
    max_candidates: int = 2000
    max_recent_items: int = 500
    workers: int = 2


class RankingApp(ranking_pb2_grpc.RankingServiceServicer):
    name = "ranking"

    def __init__(self, config: RankingConfig) -> None:
        self.config = config
        self.loaded: tuple[RankingScorer, str] | None = None  # swapped as one reference
        self._executor = ModelExecutor(config.workers, "ranking")
        self._timing = STAGE_LATENCY.labels("ranking", "forward")

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "ranking")
        scorer = await self._executor.run(lambda: RankingScorer.load(version_dir))
        ids = scorer.items.item_ids
        await self._executor.run(lambda: scorer.rank(ids[:10], ids[:200], None, 10))
        self.loaded = (scorer, manifest["version"])
        return manifest["version"]

    async def close(self) -> None:
        self._executor.shutdown()

    @grpc_errors
    async def Rank(
        self, request: ranking_pb2.RankRequest, context: aio.ServicerContext
    ) -> ranking_pb2.RankResponse:
        if self.loaded is None:
            raise NotReady("ranking model is still loading")
        scorer, version = self.loaded
        cfg = self.config
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
        if request.num_items < 0:
            raise InvalidArgument("num_items", f"must be >= 0, got {request.num_items}")
        if len(np.unique(candidates)) != len(candidates):
            raise InvalidArgument("candidate_item_ids", "contains duplicate ids")
        started = time.perf_counter()
        try:
            ranked = await self._executor.run(
                lambda: scorer.rank(recent, candidates, scores, request.num_items)
            )
        except UnknownCandidates as exc:
            raise NotFound(f"candidate_item_ids: {exc}") from exc
        self._timing.observe(time.perf_counter() - started)
        return ranking_pb2.RankResponse(
            item_ids=ranked.item_ids.tolist(),
            scores=ranked.scores.tolist(),
            model_version=version,
        )
