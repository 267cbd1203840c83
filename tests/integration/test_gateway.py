"""The end-to-end path through real servers: health, reflection, Recommend, validation,
degradation when a stage is down."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

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


def _reflect_v1(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One request on the `grpc.reflection.v1` name (the messages are wire-identical to
    v1alpha's; grpcio-reflection ships no v1 client)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request]), timeout=5))
    return response


def test_reflection_v1_resolves_method_symbols(cluster: Cluster) -> None:
    """Clients that try `grpc.reflection.v1` first (newer grpcurl) get the same answers."""
    listed: set[str] = set()
    for name in cluster.servers:
        with grpc.insecure_channel(cluster.address(name)) as channel:
            listing = reflection_pb2.ServerReflectionRequest(list_services="")
            services = _reflect_v1(channel, listing).list_services_response.service
            names = {s.name for s in services}
            assert {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
            listed |= names
            pool = descriptor_pool.Default()
            for service in names & ALL_SERVICES:
                for method in pool.FindServiceByName(service).methods:
                    found = _reflect_v1(
                        channel,
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol=method.full_name
                        ),
                    )
                    assert not found.HasField("error_response"), method.full_name
                    files = [
                        descriptor_pb2.FileDescriptorProto.FromString(raw)
                        for raw in found.file_descriptor_response.file_descriptor_proto
                    ]
                    short = service.rsplit(".", 1)[1]
                    assert any(
                        f.package == "recsys.v1" and short in {s.name for s in f.service}
                        for f in files
                    ), method.full_name
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


# --- How the gateway builds its requests, checked against the stages called directly ---


class RecordingRanking(ranking_pb2_grpc.RankingServiceServicer):
    """A real ranking server that keeps every request and answers in candidate order: what
    the gateway asked of ranking becomes visible, and its items are retrieval's order."""

    def __init__(self) -> None:
        self.requests: list[ranking_pb2.RankRequest] = []

    def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankResponse:
        self.requests.append(request)
        n = request.num_items or len(request.candidate_item_ids)
        return ranking_pb2.RankResponse(
            item_ids=request.candidate_item_ids[:n],
            scores=request.candidate_scores[:n],
            model_version="recording",
        )


@dataclass
class StandIns:
    """Extra gateways on the module's cluster (same retrieval and tagging servers)."""

    recording: RecordingRanking
    recorded: gateway_pb2_grpc.RecommendationServiceStub  # ranking: RecordingRanking
    unranked: gateway_pb2_grpc.RecommendationServiceStub  # ranking: a port nobody serves
    misconfigured: gateway_pb2_grpc.RecommendationServiceStub  # candidates > retrieval max_k
    narrow: gateway_pb2_grpc.RecommendationServiceStub  # candidates=10, ranking: RecordingRanking
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub  # the same retrieval server, direct
    tagging: tagging_pb2_grpc.TaggingServiceStub
    config: GatewayConfig  # the recorded and unranked gateways' settings


@pytest.fixture(scope="module")
def stand_ins(cluster: Cluster, artifacts: Path) -> Iterator[StandIns]:
    recording = RecordingRanking()
    ranking_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ranking_pb2_grpc.add_RankingServiceServicer_to_server(recording, ranking_server)
    ranking_port = ranking_server.add_insecure_port("127.0.0.1:0")
    ranking_server.start()
    # Bound but never listening: connections are refused, and no other server can take it.
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    refused_addr = f"127.0.0.1:{refused.getsockname()[1]}"

    retrieval_addr, tagging_addr = cluster.address("retrieval"), cluster.address("tagging")
    max_k = cluster.servers["retrieval"].app.config.max_k
    configs = {
        "gw-recorded": GatewayConfig(
            artifacts, retrieval_addr, f"127.0.0.1:{ranking_port}", tagging_addr, max_items=50
        ),
        "gw-unranked": GatewayConfig(
            artifacts, retrieval_addr, refused_addr, tagging_addr, max_items=50
        ),
        "gw-misconfigured": GatewayConfig(
            artifacts, retrieval_addr, refused_addr, tagging_addr, candidates=max_k + 1
        ),
        "gw-narrow": GatewayConfig(
            artifacts,
            retrieval_addr,
            f"127.0.0.1:{ranking_port}",
            tagging_addr,
            candidates=10,
            max_items=50,
        ),
    }
    for name, config in configs.items():
        cluster.start(name, GatewayApp(config))
    channels = {
        name: grpc.insecure_channel(cluster.address(name))
        for name in (*configs, "retrieval", "tagging")
    }
    try:
        yield StandIns(
            recording=recording,
            recorded=gateway_pb2_grpc.RecommendationServiceStub(channels["gw-recorded"]),
            unranked=gateway_pb2_grpc.RecommendationServiceStub(channels["gw-unranked"]),
            misconfigured=gateway_pb2_grpc.RecommendationServiceStub(channels["gw-misconfigured"]),
            narrow=gateway_pb2_grpc.RecommendationServiceStub(channels["gw-narrow"]),
            retrieval=retrieval_pb2_grpc.RetrievalServiceStub(channels["retrieval"]),
            tagging=tagging_pb2_grpc.TaggingServiceStub(channels["tagging"]),
            config=configs["gw-recorded"],
        )
    finally:
        for channel in channels.values():
            channel.close()
        for name in configs:
            cluster.stop(name)
        ranking_server.stop(0)
        refused.close()


def retrieve(
    stub: retrieval_pb2_grpc.RetrievalServiceStub,
    history: np.ndarray | list[int],
    k: int,
    exclude: np.ndarray | list[int] = (),
) -> retrieval_pb2.RetrieveResponse:
    return stub.Retrieve(
        retrieval_pb2.RetrieveRequest(
            recent_item_ids=list(map(int, history)),
            k=k,
            filter=common_pb2.ItemFilter(exclude_item_ids=sorted(map(int, exclude))),
        ),
        timeout=10,
    )


def ids_of(response: gateway_pb2.RecommendResponse) -> list[int]:
    return [item.item_id for item in response.items]


def test_ranking_unreachable_serves_retrieval_order(stand_ins: StandIns, artifacts: Path) -> None:
    """Degraded answer = the first N of what retrieval returned for the gateway's own
    request (stored history, request exclusions ∪ seen items, k = max(candidates, N))."""
    users = UserHistoryStore.load(artifacts / "users")
    cfg = stand_ins.config
    user = next(u for u in users.user_ids() if len(users.recent_items(u)) >= 20)
    history = users.recent_items(user)[-cfg.history_length :]
    seen = users.seen_items(user)
    k, n = max(cfg.candidates, 12), 12
    # Exclude three items retrieval would otherwise put first: the request's exclusions count.
    excluded = retrieve(stand_ins.retrieval, history, k, seen).item_ids[:3]
    response = recommend(
        stand_ins.unranked, user_id=user, num_items=n, exclude_item_ids=list(excluded)
    )
    assert response.ranking_degraded and not response.tagging_degraded
    assert "ranking" not in response.model_versions
    direct = retrieve(stand_ins.retrieval, history, k, np.union1d(excluded, seen))
    assert ids_of(response) == list(direct.item_ids[:n])
    assert [i.score for i in response.items] == pytest.approx(list(direct.scores[:n]))
    assert len(set(direct.scores[:n])) > 1  # the order is not arbitrary: reversing shows


def test_cold_start_serves_the_most_popular_and_skips_ranking(
    stand_ins: StandIns, artifacts: Path
) -> None:
    items = ItemTable.load(artifacts / "items")
    rows = np.arange(len(items))
    by_popularity = items.item_ids[np.lexsort((rows, -items.popularity))]  # ties: by row
    n = 30
    top = items.popularity[np.lexsort((rows, -items.popularity))][: n + 3]
    assert len(set(top.tolist())) < len(top)  # ties among them: the tie-break is tested too
    calls = len(stand_ins.recording.requests)

    response = recommend(stand_ins.recorded, user_id="cold-never-seen", num_items=n)
    assert response.cold_start and not response.ranking_degraded
    assert ids_of(response) == by_popularity[:n].tolist()
    # Excluded items are not eligible: the next most popular take their places.
    response = recommend(
        stand_ins.recorded,
        user_id="cold-never-seen",
        num_items=n,
        exclude_item_ids=by_popularity[:3].tolist(),
    )
    assert ids_of(response) == by_popularity[3 : n + 3].tolist()
    assert "ranking" not in response.model_versions
    assert [t.stage for t in response.timings] == ["retrieval", "tagging"]
    assert len(stand_ins.recording.requests) == calls  # ranking never asked

    # The control: a known user through the same gateway does reach this ranking server.
    known = recommend(stand_ins.recorded, user_id="u000001", num_items=5)
    assert not known.cold_start and known.model_versions["ranking"] == "recording"
    assert len(stand_ins.recording.requests) == calls + 1


def test_session_items_follow_the_stored_history(stand_ins: StandIns, artifacts: Path) -> None:
    """Ranking and retrieval both get stored history + session items (newest last, in the
    gateway's window), and session items are excluded like seen ones."""
    items = ItemTable.load(artifacts / "items")
    users = UserHistoryStore.load(artifacts / "users")
    cfg = stand_ins.config
    user = next(u for u in users.user_ids() if len(users.recent_items(u)) >= cfg.history_length)
    stored, seen = users.recent_items(user), users.seen_items(user)
    session = items.item_ids[~np.isin(items.item_ids, seen) & (items.categories == 0)][:5]
    assert len(session) == 5
    history = np.concatenate([stored, session])[-cfg.history_length :]
    n = 10
    calls = len(stand_ins.recording.requests)
    response = recommend(
        stand_ins.recorded, user_id=user, num_items=n, recent_item_ids=session.tolist()
    )
    assert len(stand_ins.recording.requests) == calls + 1
    ranked = stand_ins.recording.requests[-1]
    assert list(ranked.recent_item_ids) == history.tolist()
    direct = retrieve(stand_ins.retrieval, history, cfg.candidates, np.union1d(seen, session))
    assert list(ranked.candidate_item_ids) == list(direct.item_ids)
    assert ids_of(response) == list(direct.item_ids[:n])
    # The session items make a difference (so ignoring or misplacing them would show).
    without = retrieve(stand_ins.retrieval, stored[-cfg.history_length :], cfg.candidates, seen)
    assert list(without.item_ids[:n]) != ids_of(response)


def test_allow_seen_items_lets_seen_items_back(stand_ins: StandIns, artifacts: Path) -> None:
    users = UserHistoryStore.load(artifacts / "users")
    cfg = stand_ins.config
    n = 10
    k = max(cfg.candidates, n)
    # A user whose seen items retrieval would put among the first N, were they allowed.
    for user in users.user_ids()[:100]:
        history = users.recent_items(user)[-cfg.history_length :]
        unfiltered = retrieve(stand_ins.retrieval, history, k)
        seen = users.seen_items(user)
        if np.isin(unfiltered.item_ids[:n], seen).any():
            break
    else:
        pytest.fail("no user among the first 100 would be shown a seen item")
    allowed = recommend(stand_ins.unranked, user_id=user, num_items=n, allow_seen_items=True)
    assert ids_of(allowed) == list(unfiltered.item_ids[:n])
    assert set(ids_of(allowed)) & set(seen.tolist())
    default = recommend(stand_ins.unranked, user_id=user, num_items=n)
    assert not set(ids_of(default)) & set(seen.tolist())
    assert ids_of(default) == list(retrieve(stand_ins.retrieval, history, k, seen).item_ids[:n])


def _expected_interests(
    tagging: tagging_pb2_grpc.TaggingServiceStub, interest_ids: np.ndarray, max_tags: int
) -> tuple[Counter[str], int]:
    tagged = tagging.GetItemTags(
        tagging_pb2.GetItemTagsRequest(item_ids=interest_ids.tolist(), max_tags=max_tags),
        timeout=10,
    )
    counts: Counter[str] = Counter(t.name for item in tagged.items for t in item.tags)
    return counts, len(interest_ids)


@pytest.mark.parametrize("who", ["stored history", "session items only"])
def test_interest_tags_describe_the_last_history_items(
    cluster: Cluster,
    gateway: gateway_pb2_grpc.RecommendationServiceStub,
    stand_ins: StandIns,
    artifacts: Path,
    who: str,
) -> None:
    """`user_interest_tags`: the (at most 5) tags most common among the last
    `interest_items` history items, confidence = the share of those items carrying it."""
    cfg: GatewayConfig = cluster.servers["gateway"].app.config
    items = ItemTable.load(artifacts / "items")
    users = UserHistoryStore.load(artifacts / "users")
    if who == "stored history":
        user = next(u for u in users.user_ids() if len(users.recent_items(u)) > cfg.interest_items)
        session: list[int] = []
        history = users.recent_items(user)[-cfg.history_length :]
    else:
        user = "anonymous-interests"
        # Four items of one category: their tags overlap, and n = 4, not interest_items.
        session = items.item_ids[items.categories == 1][:4].tolist()
        history = np.asarray(session, np.int64)
    interest_ids = history[-cfg.interest_items :]
    counts, n = _expected_interests(stand_ins.tagging, interest_ids, cfg.tags_per_item)
    assert counts.most_common(1)[0][1] > 1  # some tag is shared: counting is tested

    response = recommend(gateway, user_id=user, num_items=5, recent_item_ids=session)
    got = list(response.user_interest_tags)
    assert len(got) == min(5, len(counts))
    assert len({t.name for t in got}) == len(got)
    for tag in got:
        assert tag.confidence == pytest.approx(counts[tag.name] / n), tag.name
    confidences = [t.confidence for t in got]
    assert confidences == sorted(confidences, reverse=True)
    left_out = [c for name, c in counts.items() if name not in {t.name for t in got}]
    assert max(left_out, default=0) <= min(counts[t.name] for t in got)


def test_retrieval_refusing_the_gateways_settings_is_internal(
    cluster: Cluster, stand_ins: StandIns
) -> None:
    """`--candidates` above retrieval's `--max-k`: the operator's mistake, not the caller's
    (INVALID_ARGUMENT would blame a request that was valid)."""
    max_k = cluster.servers["retrieval"].app.config.max_k
    with pytest.raises(grpc.RpcError) as info:
        recommend(stand_ins.misconfigured, user_id="u000001", num_items=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "gateway misconfigured" in info.value.details()
    assert f"<= {max_k}, got {max_k + 1}" in info.value.details()  # retrieval's reason


def test_asking_for_more_items_than_candidates_widens_retrieval(
    stand_ins: StandIns, artifacts: Path
) -> None:
    """With `--candidates 10`, a request for 30 items asks retrieval for 30 (k = max of the
    two), so the caller gets 30, not 10, and ranking sees all 30."""
    users = UserHistoryStore.load(artifacts / "users")
    user = users.user_ids()[0]
    history = users.recent_items(user)[-stand_ins.config.history_length :]
    calls = len(stand_ins.recording.requests)
    response = recommend(stand_ins.narrow, user_id=user, num_items=30)
    assert len(stand_ins.recording.requests) == calls + 1
    ranked = stand_ins.recording.requests[-1]
    direct = retrieve(stand_ins.retrieval, history, 30, users.seen_items(user))
    assert list(ranked.candidate_item_ids) == list(direct.item_ids)
    assert ids_of(response) == list(direct.item_ids) and len(response.items) == 30
    assert not response.exhausted
    # Fewer items than candidates: retrieval is asked for the configured 10.
    response = recommend(stand_ins.narrow, user_id=user, num_items=4)
    assert len(stand_ins.recording.requests[-1].candidate_item_ids) == 10
    assert len(response.items) == 4
