"""RetrievalService: a thin adapter over retrieval.Retriever."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc import aio

from recdata.artifacts import read_manifest, require_component, resolve
from recsys.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.retriever import Retriever
from services import validation
from services.errors import NotReady, grpc_errors
from services.executor import ModelExecutor
from services.metrics import STAGE_LATENCY

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name


@dataclass
class RetrievalConfig:
    artifacts: Path
    default_k: int = 200
    max_k: int = 1000
    max_recent_items: int = 500
    max_excluded_items: int = 10_000
    device: str = "auto"  # auto | cpu | gpu (FAISS index placement)
    workers: int = 2


class RetrievalApp(retrieval_pb2_grpc.RetrievalServiceServicer):
    name = "retrieval"

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self.retriever: Retriever | None = None
        self.version = ""
        self._executor = ModelExecutor(config.workers, "retrieval")
        self._timing = STAGE_LATENCY.labels("retrieval", "search")

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(self, server)

    async def load(self) -> str:
        version_dir = resolve(self.config.artifacts)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "retrieval")
        retriever = await self._executor.run(
            lambda: Retriever.load(version_dir, device=self.config.device)
        )
        # Warm-up: the first forward pass and search allocate; keep that off real requests.
        probe = retriever.items.item_ids[:5]
        await self._executor.run(lambda: retriever.retrieve(probe, self.config.default_k))
        self.retriever, self.version = retriever, manifest["version"]
        return self.version

    async def close(self) -> None:
        self._executor.shutdown()

    @grpc_errors
    async def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: aio.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        retriever = self.retriever
        if retriever is None:
            raise NotReady("retrieval model is still loading")
        cfg = self.config
        k = validation.count(request.k, "k", cfg.default_k, cfg.max_k)
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
        result = await self._executor.run(
            lambda: retriever.retrieve(recent, k, excluded, include, exclude)
        )
        self._timing.observe(time.perf_counter() - started)
        return retrieval_pb2.RetrieveResponse(
            item_ids=result.item_ids.tolist(),
            scores=np.asarray(result.scores, np.float32).tolist(),
            model_version=self.version,
            cold_start=result.cold_start,
            unknown_recent_items=result.unknown_recent_items,
            exhausted=result.exhausted,
            two_tower_scores=np.asarray(result.two_tower_scores, np.float32).tolist(),
        )
