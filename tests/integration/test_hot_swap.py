"""ReloadModel swaps a new artifact version in under concurrent load: no failed request,
health SERVING throughout, each response tagged with the version that answered it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeline.train import TrainingConfig, train_all
from ranking.scorer import RankingScorer
from recdata.synthetic import generate
from recsys.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    ranking_pb2,
    ranking_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from retrieval.retriever import Retriever
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small versions of different data under one root (LATEST → the second)."""
    root = tmp_path_factory.mktemp("swap")
    config = TrainingConfig()
    config.two_tower = replace(config.two_tower, epochs=2)
    config.ranker = replace(config.ranker, epochs=2)
    config.tagger = replace(config.tagger, epochs=2)
    first = train_all(generate(800, 300, seed=11), root, config, progress=lambda _: None)
    second = train_all(generate(800, 300, seed=12), root, config, progress=lambda _: None)
    return first, second


@pytest.fixture
def server(two_versions: tuple[Path, Path]) -> Iterator[Cluster]:
    first, _ = two_versions
    cluster = Cluster()
    cluster.start("retrieval", RetrievalApp(RetrievalConfig(first)), admin_port=0)
    yield cluster
    cluster.close()


@pytest.fixture
def channel(server: Cluster) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address("retrieval")) as channel:
        yield channel


RECENT = [100001, 100002]  # items of both versions' catalogues
RETRIEVE = retrieval_pb2.RetrieveRequest(user_id="u", recent_item_ids=RECENT, k=50)
RANK = ranking_pb2.RankRequest(
    user_id="u",
    recent_item_ids=[*RECENT, 100003],
    candidate_item_ids=list(range(100100, 100300)),
    num_items=20,
)


class Load:
    """Threads sending one fixed request (and Health.Check) until stopped; records every
    outcome: the epoch when the request started and when it ended (even: no reload in
    progress, 2g after the g-th reload returned; odd: a reload running), the version the
    response reports and the item ids it answered."""

    def __init__(
        self,
        address: str,
        call: Callable[[grpc.Channel], Callable[[], Any]],
        threads: int = 4,
    ) -> None:
        self.channel = grpc.insecure_channel(address)
        self.call = call(self.channel)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[int, int, str, tuple[int, ...]]] = []
        self.errors: list[str] = []
        self.health: set[int] = set()
        self.epoch = 0
        self.progress = threading.Condition(self.lock)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        while not self.stop.is_set():
            started = self.epoch
            try:
                response = self.call()
                ended = self.epoch
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            except grpc.RpcError as err:
                with self.lock:
                    self.errors.append(f"{err.code().name}: {err.details()}")
                continue
            with self.progress:
                self.results.append(
                    (started, ended, response.model_version, tuple(response.item_ids))
                )
                self.health.add(status)
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.results) >= count, timeout=60)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        self.channel.close()


def _retrieve(channel: grpc.Channel) -> Callable[[], retrieval_pb2.RetrieveResponse]:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    return lambda: stub.Retrieve(RETRIEVE, timeout=10)


def _rank(channel: grpc.Channel) -> Callable[[], ranking_pb2.RankResponse]:
    stub = ranking_pb2_grpc.RankingServiceStub(channel)
    return lambda: stub.Rank(RANK, timeout=10)


def _reload_under_load(
    address: str,
    call: Callable[[grpc.Channel], Callable[[], Any]],
    first: Path,
    second: Path,
    expected: dict[str, tuple[int, ...]],
) -> None:
    """Three reloads (to LATEST = second, back to first, LATEST again) while four threads
    send the same request. No request fails, health stays SERVING, a request started after
    a reload returned is answered by the new version, and every response's items are
    exactly what the version it reports answers (computed in-process from that version's
    files): a request that started on one version and reports another (the version read
    after computing, not with the model) is caught whenever one is in flight at a swap,
    and with four threads on two model threads one nearly always is."""
    assert expected[first.name] != expected[second.name]  # the versions answer differently
    targets = [second.name, first.name, second.name]
    with grpc.insecure_channel(address) as channel, Load(address, call) as load:
        admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
        load.wait_for(40)
        for target in targets:
            version = None if target == second.name else target  # None: LATEST
            load.epoch += 1  # a reload running: requests may see either version
            response = admin.ReloadModel(admin_pb2.ReloadModelRequest(version=version), timeout=60)
            assert response.version == target
            load.epoch += 1  # requests started from here on see `target`
            load.wait_for(len(load.results) + 40)
        status = admin.GetModelStatus(admin_pb2.GetModelStatusRequest(), timeout=5)
    assert status.version == second.name
    assert load.errors == []
    assert load.health == {health_pb2.HealthCheckResponse.SERVING}
    for epoch, target in enumerate([first.name, *targets]):
        # started and ended with no reload running: the version loaded then, only
        assert {v for s, e, v, _ in load.results if s == e == 2 * epoch} == {target}
    wrong = [(v, ids) for _, _, v, ids in load.results if ids != expected[v]]
    assert not wrong, f"{len(wrong)} of {len(load.results)} answers are not their version's"


def test_reload_under_load_drops_nothing(server: Cluster, two_versions: tuple[Path, Path]) -> None:
    first, second = two_versions
    recent = np.array(RECENT, np.int64)
    expected = {
        v.name: tuple(
            Retriever.load(v, device="cpu").retrieve(recent, RETRIEVE.k).item_ids.tolist()
        )
        for v in two_versions
    }
    _reload_under_load(server.address("retrieval"), _retrieve, first, second, expected)


def test_ranking_reload_under_load_answers_each_request_on_its_version(
    two_versions: tuple[Path, Path],
) -> None:
    """The same for the ranking service (micro-batched: a batch can hold requests of
    both versions during a swap, each scored by its own)."""
    first, second = two_versions
    expected = {}
    for v in two_versions:
        scorer = RankingScorer.load(v, device="cpu")
        ranked = scorer.rank(
            np.array(RANK.recent_item_ids), np.array(RANK.candidate_item_ids), None, RANK.num_items
        )
        expected[v.name] = tuple(ranked.item_ids.tolist())
    cluster = Cluster()
    try:
        app = RankingApp(RankingConfig(first, device="cpu"))
        cluster.start("ranking", app, admin_port=0)
        _reload_under_load(cluster.address("ranking"), _rank, first, second, expected)
    finally:
        cluster.close()


def test_reload_of_a_missing_version_keeps_serving(
    channel: grpc.Channel, two_versions: tuple[Path, Path]
) -> None:
    first, _ = two_versions
    admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        admin.ReloadModel(admin_pb2.ReloadModelRequest(version="no-such-version"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    response = stub.Retrieve(retrieval_pb2.RetrieveRequest(user_id="u", k=5), timeout=10)
    assert response.model_version == first.name


@pytest.mark.parametrize(
    ("name", "manifest", "code"),
    [
        ("v" * 300, None, grpc.StatusCode.INVALID_ARGUMENT),  # longer than a file name may be
        ("bad\u0007bell", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("other-format", '{"format_version": 99, "version": "other-format"}', "FAILED"),
        ("not-a-manifest", "[1, 2]", "FAILED"),
        ("broken-json", "{", "FAILED"),
    ],
)
def test_reload_of_a_bad_version_says_why(
    channel: grpc.Channel,
    two_versions: tuple[Path, Path],
    name: str,
    manifest: str | None,
    code: object,
) -> None:
    """A bad name is INVALID_ARGUMENT; a version that is there but cannot be served is
    FAILED_PRECONDITION with the reason; either way the old version keeps serving."""
    first, _ = two_versions
    if manifest is not None:
        (first.parent / name).mkdir(exist_ok=True)
        (first.parent / name / "manifest.json").write_text(manifest)
    admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        admin.ReloadModel(admin_pb2.ReloadModelRequest(version=name), timeout=10)
    expected = grpc.StatusCode.FAILED_PRECONDITION if code == "FAILED" else code
    assert info.value.code() == expected, info.value.details()
    assert len(info.value.details()) < 1000
    status = admin.GetModelStatus(admin_pb2.GetModelStatusRequest(), timeout=5)
    assert status.version == first.name


def test_admin_is_off_unless_asked(two_versions: tuple[Path, Path]) -> None:
    first, _ = two_versions
    cluster = Cluster()
    try:
        cluster.start("retrieval", RetrievalApp(RetrievalConfig(first)))
        with grpc.insecure_channel(cluster.address("retrieval")) as channel:
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                admin.GetModelStatus(admin_pb2.GetModelStatusRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        cluster.close()


def _catalog_item(row: dict) -> catalog_pb2.CatalogItem:
    return catalog_pb2.CatalogItem(
        item_id=row["item_id"],
        title=row["title"],
        category=row["category"],
        brand=row["brand"],
        price=row["price"],
    )


def test_a_version_holding_a_live_change_folds_it_in(two_versions: tuple[Path, Path]) -> None:
    """Live items count against --max-live-items until a version that holds them (same
    content) is loaded: then they are folded in and the capacity is free again; a version
    that does not hold them gets them re-applied."""
    first, _ = two_versions
    cluster = Cluster()
    try:
        app = RetrievalApp(RetrievalConfig(first, max_live_items=1))
        cluster.start("retrieval", app, admin_port=0)
        with grpc.insecure_channel(cluster.address("retrieval")) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)

            def upsert(item: catalog_pb2.CatalogItem) -> catalog_pb2.UpsertItemsResponse:
                return catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[item]), timeout=10)

            # Item 100005 as the second version's data has it, changed live on the first.
            as_in_second = generate(800, 300, seed=12).items.iloc[5].to_dict()
            as_in_first = generate(800, 300, seed=11).items.iloc[5].to_dict()
            assert (
                as_in_second["item_id"] == 100005 and as_in_second["title"] != as_in_first["title"]
            )
            another = catalog_pb2.CatalogItem(item_id=100006, title="new lamp", category="lamps")
            assert upsert(_catalog_item(as_in_second)).live_items == 1
            with pytest.raises(grpc.RpcError) as info:
                upsert(another)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            admin.ReloadModel(admin_pb2.ReloadModelRequest(version=first.name), timeout=60)
            with pytest.raises(grpc.RpcError):  # the first version lacks it: re-applied
                upsert(another)
            admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)  # LATEST holds it
            assert upsert(another).live_items == 1
    finally:
        cluster.close()


def test_a_rollback_after_a_version_that_held_a_change_re_applies_it(
    two_versions: tuple[Path, Path],
) -> None:
    """Forward to a version that holds a live change (skipped there, capacity free), then
    back: the change is applied again, not forgotten."""
    first, _ = two_versions
    cluster = Cluster()
    try:
        cluster.start(
            "retrieval", RetrievalApp(RetrievalConfig(first, max_live_items=1)), admin_port=0
        )
        with grpc.insecure_channel(cluster.address("retrieval")) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            as_in_second = _catalog_item(generate(800, 300, seed=12).items.iloc[5].to_dict())
            catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[as_in_second]), timeout=10)
            admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)  # LATEST holds it
            admin.ReloadModel(admin_pb2.ReloadModelRequest(version=first.name), timeout=60)
            another = catalog_pb2.CatalogItem(item_id=100006, title="new lamp", category="lamps")
            with pytest.raises(grpc.RpcError) as info:  # the one live slot is the re-applied item
                catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[another]), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        cluster.close()


def test_a_newer_version_keeps_a_change_it_does_not_hold(
    two_versions: tuple[Path, Path],
) -> None:
    """A live change to an item the newer version also has, but with other content, is
    re-applied on the newer version (it was not trained in)."""
    first, _ = two_versions
    cluster = Cluster()
    try:
        cluster.start("retrieval", RetrievalApp(RetrievalConfig(first)), admin_port=0)
        with grpc.insecure_channel(cluster.address("retrieval")) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            drone = catalog_pb2.CatalogItem(item_id=100005, title="scout drone", category="drones")
            catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[drone]), timeout=10)
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)  # LATEST, built later
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            response = stub.Retrieve(
                retrieval_pb2.RetrieveRequest(
                    user_id="u", k=5, filter=common_pb2.ItemFilter(include_categories=["drones"])
                ),
                timeout=10,
            )
            assert list(response.item_ids) == [100005]
            assert response.model_version != first.name
    finally:
        cluster.close()
