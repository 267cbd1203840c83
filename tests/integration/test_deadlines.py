"""The gateway answers (degraded) inside the client's deadline when a stage hangs, splits
the deadline so that a hanging stage leaves time for the next, and a server never starts on
a port another one holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from recsys.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from services.gateway_service import GatewayApp, GatewayConfig
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.runtime import ModelServer, ServerOptions
from services.tagging_service import TaggingApp, TaggingConfig
from tests.integration.cluster import Cluster, HeldStage, stage_serving


class HangingTagging(HeldStage, tagging_pb2_grpc.TaggingServiceServicer):
    """A real tagging server that never answers before the test releases it."""

    def GetItemTags(
        self, request: tagging_pb2.GetItemTagsRequest, context: grpc.ServicerContext
    ) -> tagging_pb2.GetItemTagsResponse:
        self.hold()
        return tagging_pb2.GetItemTagsResponse()


class HangingRanking(HeldStage, ranking_pb2_grpc.RankingServiceServicer):
    """A real ranking server that never answers before the test releases it."""

    def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankResponse:
        self.hold()
        return ranking_pb2.RankResponse(model_version="hanging")


@pytest.fixture(scope="module")
def stages(artifacts: Path) -> Iterator[Cluster]:
    """Real retrieval, ranking and tagging servers; each test adds its own gateway."""
    cluster = Cluster()
    try:
        cluster.start("retrieval", RetrievalApp(RetrievalConfig(artifacts)))
        cluster.start("ranking", RankingApp(RankingConfig(artifacts)))
        cluster.start("tagging", TaggingApp(TaggingConfig(artifacts)))
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def hanging_tagging() -> Iterator[HangingTagging]:
    servicer = HangingTagging()
    with stage_serving(servicer, tagging_pb2_grpc.add_TaggingServiceServicer_to_server):
        yield servicer


@pytest.fixture
def hanging_ranking() -> Iterator[HangingRanking]:
    servicer = HangingRanking()
    with stage_serving(servicer, ranking_pb2_grpc.add_RankingServiceServicer_to_server):
        yield servicer


@contextmanager
def gateway_on(
    stages: Cluster, artifacts: Path, **addresses_and_settings: object
) -> Iterator[gateway_pb2_grpc.RecommendationServiceStub]:
    """A gateway on the shared stages; `ranking_addr=` / `tagging_addr=` replace a stage."""
    settings = {
        "retrieval_addr": stages.address("retrieval"),
        "ranking_addr": stages.address("ranking"),
        "tagging_addr": stages.address("tagging"),
        **addresses_and_settings,
    }
    stages.start("gateway", GatewayApp(GatewayConfig(artifacts, **settings)))
    try:
        with grpc.insecure_channel(stages.address("gateway")) as channel:
            yield gateway_pb2_grpc.RecommendationServiceStub(channel)
    finally:
        stages.stop("gateway")


def test_hanging_tagging_degrades_within_the_client_deadline(
    stages: Cluster, artifacts: Path, hanging_tagging: HangingTagging
) -> None:
    with gateway_on(stages, artifacts, tagging_addr=hanging_tagging.address) as stub:
        started = time.monotonic()
        response = stub.Recommend(
            gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=1.0
        )
        elapsed = time.monotonic() - started
    assert hanging_tagging.received.is_set()
    assert response.tagging_degraded and not response.ranking_degraded
    assert len(response.items) == 5
    assert elapsed < 1.0


def test_hanging_ranking_leaves_tagging_its_share_of_the_deadline(
    stages: Cluster, artifacts: Path, hanging_ranking: HangingRanking
) -> None:
    """Ranking gets a share (0.6) of the time left, not all of it: when it hangs, the
    answer is in retrieval order, still inside the client's deadline, and tagged."""
    with gateway_on(stages, artifacts, ranking_addr=hanging_ranking.address) as stub:
        response = stub.Recommend(
            gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=1.0
        )
    assert hanging_ranking.received.is_set()  # ranking was called and held
    assert response.ranking_degraded
    assert "ranking" not in response.model_versions
    assert len(response.items) == 5
    assert not response.tagging_degraded  # tagging had time left after ranking's share
    assert any(item.tags for item in response.items)
    assert [t.stage for t in response.timings] == ["retrieval", "ranking", "tagging"]


def test_without_a_client_deadline_the_default_deadline_bounds_the_stages(
    stages: Cluster, artifacts: Path, hanging_tagging: HangingTagging
) -> None:
    """A client that sets no deadline still gets a (degraded) answer: the gateway's
    --default-deadline bounds each stage call."""
    with gateway_on(
        stages, artifacts, tagging_addr=hanging_tagging.address, default_deadline_s=0.3
    ) as stub:
        started = time.monotonic()
        call = stub.Recommend.future(gateway_pb2.RecommendRequest(user_id="u000001", num_items=5))
        try:
            # Not a timing wait: the answer comes at ~0.3 s; without a bound on the tagging
            # call it would come only when the test releases the hanging server.
            response = call.result(timeout=10)
        finally:
            call.cancel()
        elapsed = time.monotonic() - started
    assert hanging_tagging.received.is_set()
    assert response.tagging_degraded
    assert len(response.items) == 5
    # The 0.3 s default, not some other bound (the built-in default is 1 s).
    assert elapsed < 0.9


def test_a_taken_port_is_an_error_not_a_shared_port(stages: Cluster, artifacts: Path) -> None:
    port = stages.servers["ranking"].port

    async def start_second() -> None:
        # Built on the cluster's loop: aio.server needs a running event loop.
        second = ModelServer(RankingApp(RankingConfig(artifacts)), ServerOptions(port=port))
        await second.start()

    with pytest.raises(OSError, match="could not bind"):
        stages.run(start_second())
