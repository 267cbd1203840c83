"""The gateway answers (degraded) inside the client's deadline when a stage hangs, and a
server never starts on a port another one holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from recsys.v1 import gateway_pb2, gateway_pb2_grpc, tagging_pb2, tagging_pb2_grpc
from services.gateway_service import GatewayApp, GatewayConfig
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.runtime import ModelServer, ServerOptions
from tests.integration.cluster import Cluster


class HangingTagging(tagging_pb2_grpc.TaggingServiceServicer):
    """A real tagging server that never answers before the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def GetItemTags(
        self, request: tagging_pb2.GetItemTagsRequest, context: grpc.ServicerContext
    ) -> tagging_pb2.GetItemTagsResponse:
        self.release.wait(timeout=30)
        return tagging_pb2.GetItemTagsResponse()


@pytest.fixture
def hanging_tagging() -> Iterator[int]:
    servicer = HangingTagging()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tagging_pb2_grpc.add_TaggingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    servicer.release.set()
    server.stop(0)


def test_hanging_tagging_degrades_within_the_client_deadline(
    artifacts: Path, hanging_tagging: int
) -> None:
    cluster = Cluster()
    try:
        cluster.start("retrieval", RetrievalApp(RetrievalConfig(artifacts)))
        cluster.start("ranking", RankingApp(RankingConfig(artifacts)))
        cluster.start(
            "gateway",
            GatewayApp(
                GatewayConfig(
                    artifacts,
                    cluster.address("retrieval"),
                    cluster.address("ranking"),
                    f"127.0.0.1:{hanging_tagging}",
                )
            ),
        )
        with grpc.insecure_channel(cluster.address("gateway")) as channel:
            stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
            started = time.monotonic()
            response = stub.Recommend(
                gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=1.0
            )
            elapsed = time.monotonic() - started
        assert response.tagging_degraded and not response.ranking_degraded
        assert len(response.items) == 5
        assert elapsed < 1.0
    finally:
        cluster.close()


def test_a_taken_port_is_an_error_not_a_shared_port(artifacts: Path) -> None:
    cluster = Cluster()
    try:
        port = cluster.start("ranking", RankingApp(RankingConfig(artifacts)))
        second = ModelServer(RankingApp(RankingConfig(artifacts)), ServerOptions(port=port))
        with pytest.raises(OSError, match="could not bind"):
            cluster.run(second.start())
    finally:
        cluster.close()
