"""The retrieval service refuses an approximate index measured below its recall floor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from pipeline.train import TrainingConfig, train_all
from recdata.artifacts import read_manifest
from recdata.synthetic import generate
from recsys.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.index import IndexConfig, IVFConfig
from services.errors import FailedPrecondition
from services.retrieval_service import RetrievalApp, RetrievalConfig
from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def coarse_ivf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainingConfig(index=IndexConfig(kind="ivf", ivf=IVFConfig(nlist=20, nprobe=1)))
    config.two_tower = replace(config.two_tower, epochs=2)
    config.ranker = replace(config.ranker, epochs=1)
    config.tagger = replace(config.tagger, epochs=1)
    return train_all(
        generate(1500, 300, seed=5), tmp_path_factory.mktemp("ivf"), config, progress=lambda _: None
    )


def test_manifest_records_measured_recall(coarse_ivf: Path) -> None:
    index = read_manifest(coarse_ivf)["index"]
    assert index["kind"] == "ivf"
    assert 0.0 < index["recall"] < 0.9  # one of 20 lists: clearly approximate
    assert index["config"]["ivf"]["nprobe"] == 1


def test_below_floor_is_refused_and_force_serves(coarse_ivf: Path) -> None:
    cluster = Cluster()
    try:
        with pytest.raises(FailedPrecondition, match="recall"):
            cluster.start("refused", RetrievalApp(RetrievalConfig(coarse_ivf, recall_floor=0.9)))
        cluster.start(
            "forced", RetrievalApp(RetrievalConfig(coarse_ivf, recall_floor=0.9, force_index=True))
        )
        stub = retrieval_pb2_grpc.RetrievalServiceStub(
            grpc.insecure_channel(cluster.address("forced"))
        )
        response = stub.Retrieve(
            retrieval_pb2.RetrieveRequest(user_id="u", recent_item_ids=[100001, 100002], k=30),
            timeout=10,
        )
        assert len(set(response.item_ids)) == 30  # exact-k holds even on a coarse index
    finally:
        cluster.close()
