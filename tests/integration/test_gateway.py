"""The end-to-end path through real servers: health, reflection, Recommend, validation,
degradation when a stage is down."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recsys.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway_service import GatewayApp, GatewayConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from tests.integration.cluster import Cluster, start_all, thread_held

ALL_SERVICES = {
    "recsys.v1.RecommendationService",
    "recsys.v1.RetrievalService",
    "recsys.v1.RankingService",
    "recsys.v1.TaggingService",
}


@pytest.fixture(scope="module")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    c = start_all(artifacts, gateway_metrics_port=0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> Iterator[gateway_pb2_grpc.RecommendationServiceStub]:
    with grpc.insecure_channel(cluster.address("gateway")) as channel:
        yield gateway_pb2_grpc.RecommendationServiceStub(channel)


def recommend(
    stub: gateway_pb2_grpc.RecommendationServiceStub, **fields: object
) -> gateway_pb2.RecommendResponse:
    return stub.Recommend(gateway_pb2.RecommendRequest(**fields), timeout=10)


def test_every_server_reports_serving(cluster: Cluster) -> None:
    for name, server in cluster.servers.items():
        with grpc.insecure_channel(cluster.address(name)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert overall.status == health_pb2.HealthCheckResponse.SERVING, name
            for service in server.app.service_names:
                named = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert named.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_services_and_resolves_method_symbols(cluster: Cluster) -> None:
    listed: set[str] = set()
    for name in cluster.servers:
        with grpc.insecure_channel(cluster.address(name)) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = set(db.get_services())
            assert "grpc.health.v1.Health" in services
            listed |= services
            pool = descriptor_pool.DescriptorPool(db)
            for service in services & ALL_SERVICES:
                descriptor = pool.FindServiceByName(service)
                for method in descriptor.methods:
                    # What ghz asks for: the file containing a *method* symbol.
                    proto = db.FindFileContainingSymbol(method.full_name)
                    assert proto.package == "recsys.v1"
    assert listed >= ALL_SERVICES


def test_recommend_returns_exactly_n_unique_catalogue_items(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, artifacts: Path
) -> None:
    items = ItemTable.load(artifacts / "items")
    users = UserHistoryStore.load(artifacts / "users")
    user = users.user_ids()[0]
    seen = set(users.seen_items(user).tolist())
    excluded = items.item_ids[:50].tolist()
    response = recommend(gateway, user_id=user, num_items=20, exclude_item_ids=excluded)
    ids = [item.item_id for item in response.items]
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert set(ids) <= set(items.item_ids.tolist())
    assert not set(ids) & set(excluded)
    assert not set(ids) & seen  # the user's history is excluded by default
    assert not response.ranking_degraded and not response.tagging_degraded
    assert not response.cold_start
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    assert all(item.title and item.category for item in response.items)
    assert any(item.tags for item in response.items)
    assert set(response.model_versions) >= {"retrieval", "ranking", "tagging"}
    assert [t.stage for t in response.timings] == ["retrieval", "ranking", "tagging"]


def test_category_filters_are_respected(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, artifacts: Path
) -> None:
    items = ItemTable.load(artifacts / "items")
    wanted = items.category_names[:2]
    response = recommend(gateway, user_id="u000003", num_items=15, include_categories=wanted)
    assert len(response.items) == 15
    assert {item.category for item in response.items} <= set(wanted)
    assert not response.exhausted


@pytest.mark.parametrize(
    "filters",
    [
        {"include_categories": ["no-such-category"]},
        "the same real category included and excluded",
    ],
)
def test_a_filter_nothing_matches_says_exhausted(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, artifacts: Path, filters: dict | str
) -> None:
    if isinstance(filters, str):
        category = ItemTable.load(artifacts / "items").category_names[0]
        filters = {"include_categories": [category], "exclude_categories": [category]}
    response = recommend(gateway, user_id="u000003", num_items=5, **filters)
    assert len(response.items) == 0
    assert response.exhausted


def test_unknown_user_is_a_cold_start_not_an_error(
    gateway: gateway_pb2_grpc.RecommendationServiceStub,
) -> None:
    response = recommend(gateway, user_id="someone-we-never-saw", num_items=10)
    assert response.cold_start
    assert len({item.item_id for item in response.items}) == 10


def test_session_items_personalise_an_unknown_user(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, artifacts: Path
) -> None:
    items = ItemTable.load(artifacts / "items")
    recent = items.item_ids[:3].tolist()
    response = recommend(gateway, user_id="anonymous-session", num_items=10, recent_item_ids=recent)
    assert not response.cold_start
    assert not {item.item_id for item in response.items} & set(recent)


def test_unknown_session_items_do_not_push_out_the_stored_history(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, artifacts: Path
) -> None:
    users = UserHistoryStore.load(artifacts / "users")
    user = next(u for u in users.user_ids() if len(users.recent_items(u)) >= 3)
    plain = recommend(gateway, user_id=user, num_items=10)
    unknown = list(range(900_000_001, 900_000_061))  # more than the history window
    with_unknown = recommend(gateway, user_id=user, num_items=10, recent_item_ids=unknown)
    assert not with_unknown.cold_start
    assert not (plain.ranking_degraded or with_unknown.ranking_degraded)  # same stages ran
    assert [i.item_id for i in with_unknown.items] == [i.item_id for i in plain.items]


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"user_id": "u1", "num_items": 0}, "num_items"),
        ({"user_id": "u1", "num_items": -3}, "num_items"),
        ({"user_id": "u1", "num_items": 51}, "num_items"),
        ({"user_id": "", "num_items": 5}, "user_id"),
        ({"user_id": "u1", "num_items": 5, "exclude_item_ids": [12, -4]}, "exclude_item_ids"),
        ({"user_id": "u1", "num_items": 5, "recent_item_ids": [0]}, "recent_item_ids"),
        ({"user_id": "u\x00", "num_items": 5}, "user_id"),
    ],
)
def test_invalid_requests_name_the_field(
    gateway: gateway_pb2_grpc.RecommendationServiceStub, fields: dict, field_name: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        recommend(gateway, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_name in info.value.details()


def test_metrics_endpoint_counts_requests_by_code(
    cluster: Cluster, gateway: gateway_pb2_grpc.RecommendationServiceStub
) -> None:
    recommend(gateway, user_id="u000001", num_items=3)
    with pytest.raises(grpc.RpcError):
        recommend(gateway, user_id="u000001", num_items=0)
    port = cluster.servers["gateway"].metrics_port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'recserve_grpc_requests_total{code="OK",method="Recommend",service="gateway"}' in body
    assert 'code="INVALID_ARGUMENT",method="Recommend"' in body
    assert "recserve_grpc_request_seconds_bucket" in body


class TestDegradation:
    """Each test stops one real server of a private cluster and calls the gateway."""

    @pytest.fixture
    def private(self, artifacts: Path) -> Iterator[Cluster]:
        c = start_all(artifacts)
        yield c
        c.close()

    @staticmethod
    def _call(c: Cluster, **fields: object) -> gateway_pb2.RecommendResponse:
        with grpc.insecure_channel(c.address("gateway")) as channel:
            stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
            return recommend(stub, **fields)

    def test_ranking_down_serves_retrieval_order(self, private: Cluster) -> None:
        private.stop("ranking")
        response = self._call(private, user_id="u000002", num_items=8)
        assert response.ranking_degraded
        assert len({item.item_id for item in response.items}) == 8
        assert "ranking" not in response.model_versions
        assert any(item.tags for item in response.items)

    def test_tagging_down_serves_items_without_tags(self, private: Cluster) -> None:
        private.stop("tagging")
        response = self._call(private, user_id="u000002", num_items=8)
        assert response.tagging_degraded
        assert not response.ranking_degraded
        assert len(response.items) == 8
        assert all(not item.tags for item in response.items)

    def test_retrieval_down_is_unavailable_with_a_clear_message(self, private: Cluster) -> None:
        private.stop("retrieval")
        with pytest.raises(grpc.RpcError) as info:
            self._call(private, user_id="u000002", num_items=8)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retrieval" in info.value.details()


def test_retrieval_out_of_time_is_deadline_exceeded(artifacts: Path) -> None:
    """Retrieval that spends its share of the deadline: DEADLINE_EXCEEDED from the gateway
    (a larger deadline helps), not UNAVAILABLE (which tells clients to go elsewhere)."""
    retrieval = RetrievalApp(RetrievalConfig(artifacts, batching=False, workers=1))  # pool only
    c = Cluster()
    try:
        c.start("retrieval", retrieval)
        unused = "127.0.0.1:1"  # ranking and tagging: never reached
        c.start(
            "gateway", GatewayApp(GatewayConfig(artifacts, c.address("retrieval"), unused, unused))
        )
        with (
            thread_held(retrieval._executor.pool),  # the one model thread
            grpc.insecure_channel(c.address("gateway")) as channel,
        ):
            stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Recommend(
                    gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=2
                )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "retrieval stage" in info.value.details()  # the gateway's answer, in time
    finally:
        c.close()


def test_retrieval_shedding_load_is_resource_exhausted(artifacts: Path) -> None:
    """Retrieval's load shedding reaches the client as RESOURCE_EXHAUSTED (back off), not
    UNAVAILABLE (which clients and proxies retry at once, adding to the overload)."""
    # One model thread and no room to wait for it (with batching off: the executor's bound).
    retrieval = RetrievalApp(RetrievalConfig(artifacts, batching=False, workers=1, batch_queue=0))
    c = Cluster()
    try:
        c.start("retrieval", retrieval)
        unused = "127.0.0.1:1"
        c.start(
            "gateway", GatewayApp(GatewayConfig(artifacts, c.address("retrieval"), unused, unused))
        )

        async def occupy() -> asyncio.Task:
            """A request call holding the one slot (it waits for the held thread)."""
            task = asyncio.create_task(retrieval._executor.run_request(lambda: None))
            await asyncio.sleep(0)  # it has taken the slot
            return task

        with (
            thread_held(retrieval._executor.pool),
            grpc.insecure_channel(c.address("gateway")) as channel,
        ):
            occupied = c.run(occupy())
            stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Recommend(
                    gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=10
                )
        c.run(asyncio.wait_for(occupied, 10))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retrieval stage overloaded" in info.value.details()
    finally:
        c.close()
