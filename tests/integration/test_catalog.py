"""CatalogService on a real retrieval server: upserted items served by the next request,
deleted ones never again, changes kept across a reload, bad input refused by field, and
searches running concurrently with changes never fail or see a deleted item."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from services.retrieval_service import RetrievalApp, RetrievalConfig
from tests.integration.cluster import Cluster

NEW_ID = 8_000_001
HISTORY = [100001, 100002, 100003]


@pytest.fixture
def cluster(artifacts: Path) -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.start("retrieval", RetrievalApp(RetrievalConfig(artifacts.parent)), admin_port=0)
    yield cluster
    cluster.close()


@pytest.fixture
def channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(cluster.address("retrieval")) as channel:
        yield channel


def _stubs(
    channel: grpc.Channel,
) -> tuple[catalog_pb2_grpc.CatalogServiceStub, retrieval_pb2_grpc.RetrievalServiceStub]:
    return (
        catalog_pb2_grpc.CatalogServiceStub(channel),
        retrieval_pb2_grpc.RetrievalServiceStub(channel),
    )


def _item(
    item_id: int, category: str = "garden tools", **fields: object
) -> catalog_pb2.CatalogItem:
    values = {"title": "steel garden trowel", "brand": "Digwell", "price": 9.5, **fields}
    return catalog_pb2.CatalogItem(item_id=item_id, category=category, **values)  # type: ignore[arg-type]


def _retrieve(
    stub: retrieval_pb2_grpc.RetrievalServiceStub, k: int, **filters: object
) -> list[int]:
    request = retrieval_pb2.RetrieveRequest(
        user_id="u",
        recent_item_ids=HISTORY,
        k=k,
        filter=common_pb2.ItemFilter(**filters),  # type: ignore[arg-type]
    )
    return list(stub.Retrieve(request, timeout=10).item_ids)


def test_upsert_then_delete_through_the_api(channel: grpc.Channel) -> None:
    catalog, retrieval = _stubs(channel)
    added = catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[_item(NEW_ID), _item(NEW_ID + 1)]), timeout=10
    )
    assert (added.inserted, added.updated, added.live_items) == (2, 0, 2)
    assert added.model_version

    found = _retrieve(retrieval, 10, include_categories=["garden tools"])
    assert sorted(found) == [NEW_ID, NEW_ID + 1]

    gone = catalog.DeleteItems(
        catalog_pb2.DeleteItemsRequest(item_ids=[NEW_ID, 100001, NEW_ID, 999_999_999]),
        timeout=10,
    )  # a repeated id counts once
    assert gone.deleted == 2 and list(gone.not_found_item_ids) == [999_999_999]
    everything = _retrieve(retrieval, 1000)
    assert NEW_ID not in everything and 100001 not in everything
    assert _retrieve(retrieval, 10, include_categories=["garden tools"]) == [NEW_ID + 1]


def test_changes_survive_a_reload(channel: grpc.Channel) -> None:
    catalog, retrieval = _stubs(channel)
    catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[_item(NEW_ID)]), timeout=10)
    catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(item_ids=[100005]), timeout=10)
    admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
    admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)
    assert _retrieve(retrieval, 5, include_categories=["garden tools"]) == [NEW_ID]
    assert 100005 not in _retrieve(retrieval, 1000)


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([_item(0)], "items[0].item_id"),
        ([_item(NEW_ID), _item(NEW_ID)], "items[1].item_id"),
        ([_item(NEW_ID, title="  ")], "items[0].title"),
        ([_item(NEW_ID, category="")], "items[0].category"),
        ([_item(NEW_ID, price=-1.0)], "items[0].price"),
        ([_item(NEW_ID, price=float("nan"))], "items[0].price"),
        ([_item(NEW_ID + i) for i in range(1001)], "items"),
    ],
)
def test_bad_upserts_name_the_field(
    channel: grpc.Channel, items: list[catalog_pb2.CatalogItem], field: str
) -> None:
    catalog, retrieval = _stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":")
    assert _retrieve(retrieval, 5, include_categories=["garden tools"]) == []  # nothing applied


def test_bad_deletes_and_a_full_live_catalogue(artifacts: Path) -> None:
    cluster = Cluster()
    try:
        app = RetrievalApp(RetrievalConfig(artifacts.parent, max_live_items=2))
        cluster.start("retrieval", app, admin_port=0)
        with grpc.insecure_channel(cluster.address("retrieval")) as channel:
            catalog, _ = _stubs(channel)
            for request in (
                catalog_pb2.DeleteItemsRequest(),
                catalog_pb2.DeleteItemsRequest(item_ids=[-3]),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    catalog.DeleteItems(request, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            too_many = [_item(NEW_ID + i) for i in range(3)]
            with pytest.raises(grpc.RpcError) as info:
                catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=too_many), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 2" in info.value.details()
    finally:
        cluster.close()


def test_catalog_service_follows_the_admin_port(artifacts: Path) -> None:
    with socket.socket() as probe:  # a free port for the admin server
        probe.bind(("127.0.0.1", 0))
        admin_port = probe.getsockname()[1]
    cluster = Cluster()
    try:
        cluster.start("off", RetrievalApp(RetrievalConfig(artifacts.parent)))
        cluster.start("own", RetrievalApp(RetrievalConfig(artifacts.parent)), admin_port=admin_port)
        request = catalog_pb2.DeleteItemsRequest(item_ids=[999_999_999])
        for name in ("off", "own"):  # not on the main port of either
            with grpc.insecure_channel(cluster.address(name)) as channel:
                stub = catalog_pb2_grpc.CatalogServiceStub(channel)
                with pytest.raises(grpc.RpcError) as info:
                    stub.DeleteItems(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
            admin = catalog_pb2_grpc.CatalogServiceStub(channel)
            assert list(admin.DeleteItems(request, timeout=5).not_found_item_ids) == [999_999_999]
    finally:
        cluster.close()


def test_searches_during_changes_never_fail(channel: grpc.Channel) -> None:
    """Four threads search while the main thread adds and deletes items. A search that
    starts after a delete was acknowledged must not return the deleted item."""
    catalog, stub = _stubs(channel)
    stop = threading.Event()
    lock = threading.Lock()
    deleted: set[int] = set()
    errors: list[str] = []
    searches = [0]

    def search() -> None:
        while not stop.is_set():
            with lock:
                gone = set(deleted)
            try:
                ids = _retrieve(stub, 300)
            except grpc.RpcError as err:
                errors.append(f"{err.code().name}: {err.details()}")
                continue
            with lock:
                searches[0] += 1
            leaked = gone.intersection(ids)
            if leaked:
                errors.append(f"deleted items returned: {sorted(leaked)}")

    threads = [threading.Thread(target=search, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for round_ in range(15):
            batch = [_item(NEW_ID + 10 * round_ + i, title=f"trowel {i}") for i in range(10)]
            catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=batch), timeout=10)
            victims = _retrieve(stub, 3)
            catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(item_ids=victims), timeout=10)
            with lock:
                deleted.update(victims)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert searches[0] > 15
