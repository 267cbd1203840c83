"""TaggingService: a thin adapter over tagging.Tagger and the precomputed catalogue tags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from recdata.artifacts import read_manifest, require_component, resolve_version
from recsys.v1 import common_pb2, tagging_pb2, tagging_pb2_grpc
from services import validation
from services.errors import InvalidArgument, NotReady, grpc_errors
from services.executor import ModelExecutor
from tagging.catalog_tags import CatalogTags
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
    workers: int = 2


def _tags(pairs: list[tuple[str, float]]) -> list[common_pb2.Tag]:
    return [common_pb2.Tag(name=name, confidence=conf) for name, conf in pairs]


class TaggingApp(tagging_pb2_grpc.TaggingServiceServicer):
    name = "tagging"

    def __init__(self, config: TaggingConfig) -> None:
        self.config = config
        self.loaded: tuple[Tagger, CatalogTags, str] | None = None  # swapped as one reference
        self._executor = ModelExecutor(config.workers, "tagging")

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME]

    def register(self, server: aio.Server) -> None:
        tagging_pb2_grpc.add_TaggingServiceServicer_to_server(self, server)

    async def load(self, version: str | None = None) -> str:
        version_dir = resolve_version(self.config.artifacts, version)
        manifest = read_manifest(version_dir)
        require_component(version_dir, manifest, "tagging")
        tagger = await self._executor.run(lambda: Tagger.load(version_dir / "tagging"))
        catalog = await self._executor.run(lambda: CatalogTags.load(version_dir / "tagging"))
        await self._executor.run(lambda: tagger.predict(["warm up the tag model"]))
        self.loaded = (tagger, catalog, manifest["version"])
        return manifest["version"]

    async def close(self) -> None:
        self._executor.shutdown()

    def _ready(self) -> tuple[Tagger, CatalogTags, str]:
        if self.loaded is None:
            raise NotReady("tagging model is still loading")
        return self.loaded

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
        if not 0.0 <= request.min_confidence <= 1.0:
            raise InvalidArgument("min_confidence", "must be within [0, 1]")
        texts = []
        for i, item in enumerate(request.items):
            for field in ("title", "description", "category"):
                if len(getattr(item, field)) > cfg.max_text_chars:
                    raise InvalidArgument(
                        f"items[{i}].{field}", f"at most {cfg.max_text_chars} characters"
                    )
            if not (item.title.strip() or item.description.strip()):
                raise InvalidArgument(f"items[{i}]", "needs a title or a description")
            texts.append(product_text(item.title, item.description, item.category))
        min_conf = request.min_confidence or None
        predictions = await self._executor.run(
            lambda: tagger.predict(texts, max_tags=max_tags, min_confidence=min_conf)
        )
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
