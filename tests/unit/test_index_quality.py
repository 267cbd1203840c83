"""Index configuration, build-time recall against exact search, and the serving recall floor."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.index import (
    HNSWConfig,
    IndexConfig,
    ItemIndex,
    IVFConfig,
    build_index,
    effective_config,
    index_config,
)
from retrieval.index_quality import (
    IndexBelowRecallFloor,
    IndexQuality,
    assess,
    build_and_assess,
    check_recall_floor,
    measure_recall,
)

N, DIM, CLUSTERS, K = 4000, 16, 40, 20
NLIST = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points around a few centres: IVF cells then matter, as with real item embeddings."""
    centres = np.random.default_rng(0).normal(size=(CLUSTERS, DIM))
    return _unit(centres[rng.integers(CLUSTERS, size=n)] + 0.6 * rng.normal(size=(n, DIM)))


ITEMS = _clustered(N, np.random.default_rng(1))
QUERIES = _clustered(200, np.random.default_rng(2))  # held out: not item vectors
IVF = IndexConfig("ivf", ivf=IVFConfig(nlist=NLIST, nprobe=1))
HNSW = IndexConfig("hnsw", hnsw=HNSWConfig(m=16, ef_construction=64, ef_search=64))


@pytest.fixture(scope="module")
def ivf_index() -> faiss.Index:
    return build_index(ITEMS, IVF)


@pytest.fixture(scope="module")
def hnsw_index() -> faiss.Index:
    return build_index(ITEMS, HNSW)


def _ivf_with_nprobe(index: faiss.Index, nprobe: int) -> faiss.Index:
    copy = faiss.clone_index(index)
    faiss.extract_index_ivf(copy).nprobe = nprobe
    return copy


def test_flat_recall_is_exactly_one() -> None:
    assert measure_recall(build_index(ITEMS, IndexConfig()), ITEMS, QUERIES, K) == 1.0


def test_ivf_recall_grows_with_nprobe(ivf_index: faiss.Index) -> None:
    one = measure_recall(ivf_index, ITEMS, QUERIES, K)
    assert 0.5 < one < 0.98  # clearly approximate, yet not broken
    assert measure_recall(_ivf_with_nprobe(ivf_index, NLIST), ITEMS, QUERIES, K) == 1.0


def test_hnsw_recall_is_high(hnsw_index: faiss.Index) -> None:
    assert measure_recall(hnsw_index, ITEMS, QUERIES, K) > 0.9


def test_assess_reports_recall_and_latency(ivf_index: faiss.Index) -> None:
    quality = assess(ivf_index, ITEMS, QUERIES, K, IVF, runs=2)
    assert quality.recall == measure_recall(ivf_index, ITEMS, QUERIES, K)
    assert (quality.kind, quality.k, quality.queries) == ("ivf", K, len(QUERIES))
    assert quality.build_seconds is None
    assert quality.search_ms_per_query > 0 and quality.exact_search_ms_per_query > 0
    assert quality.config == {"kind": "ivf", "ivf": {"nlist": NLIST, "nprobe": 1}}
    # It goes into the manifest: JSON round trip.
    assert IndexQuality.from_dict(json.loads(json.dumps(quality.to_dict()))) == quality


def test_build_and_assess_times_the_build() -> None:
    index, quality = build_and_assess(ITEMS, QUERIES, K, IndexConfig())
    assert index.ntotal == N
    assert quality.build_seconds is not None and quality.build_seconds >= 0
    assert quality.recall == 1.0


def test_recall_inputs_are_checked(ivf_index: faiss.Index) -> None:
    with pytest.raises(ValueError, match="not the same items"):
        measure_recall(ivf_index, ITEMS[:-1], QUERIES, K)
    with pytest.raises(ValueError, match="k must be"):
        measure_recall(ivf_index, ITEMS, QUERIES, N + 1)
    with pytest.raises(ValueError, match="queries must be"):
        measure_recall(ivf_index, ITEMS, QUERIES[:, :3], K)


def _quality(recall: float) -> IndexQuality:
    return IndexQuality("ivf", 200, recall, 1000, 1.5, 0.1, 0.5, IVF.to_dict())


def test_floor_refuses_below_unless_forced() -> None:
    with pytest.raises(IndexBelowRecallFloor) as raised:
        check_recall_floor(_quality(0.81), floor=0.95, force=False)
    message = str(raised.value)
    assert "0.8100" in message and "0.9500" in message and "force" in message
    assert "nprobe=1" in message
    assert (raised.value.recall, raised.value.floor) == (0.81, 0.95)
    check_recall_floor(_quality(0.81), floor=0.95, force=True)


def test_floor_passes_at_or_above() -> None:
    check_recall_floor(_quality(0.95), floor=0.95, force=False)
    check_recall_floor(_quality(1.0), floor=0.95, force=False)


def test_floor_reads_manifest_dicts() -> None:
    stored = json.loads(json.dumps(_quality(0.5).to_dict()))
    with pytest.raises(IndexBelowRecallFloor):
        check_recall_floor(stored, floor=0.9, force=False)
    with pytest.raises(ValueError, match="no measured 'recall'"):
        check_recall_floor({"kind": "ivf"}, floor=0.9, force=False)
    with pytest.raises(ValueError, match=r"floor must be in \[0, 1\]"):
        check_recall_floor(stored, floor=1.5, force=False)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: IndexConfig("annoy"), "unknown; choose one of"),
        (lambda: IndexConfig("ivf", ivf=IVFConfig(nlist=8, nprobe=9)), r"nprobe \(9\) cannot"),
        (lambda: IndexConfig("ivf", ivf=IVFConfig(nlist=0, nprobe=0)), "ivf.nlist must be"),
        (lambda: IndexConfig("hnsw", hnsw=HNSWConfig(m=1)), "hnsw.m must be an integer >= 2"),
        (lambda: IndexConfig(hnsw=HNSWConfig(ef_search=True)), "hnsw.ef_search must be"),
        (lambda: IndexConfig.from_dict({"kind": "ivf", "nprobe": 4}), r"unknown keys \['nprobe'\]"),
        (lambda: IndexConfig.from_dict({"ivf": {"nlists": 4}}), r"'ivf' has unknown keys"),
        (lambda: IndexConfig.from_dict({"hnsw": 32}), "must be a mapping"),
        (lambda: IndexConfig.from_dict({"ivf": {"nlist": "64"}}), "ivf.nlist must be"),
    ],
)
def test_config_validation(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_config_round_trip_keeps_the_chosen_kind_only() -> None:
    assert IndexConfig().to_dict() == {"kind": "flat"}
    assert HNSW.to_dict() == {
        "kind": "hnsw",
        "hnsw": {"m": 16, "ef_construction": 64, "ef_search": 64},
    }
    for config in (IndexConfig(), IVF, HNSW):
        assert IndexConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert IndexConfig.from_dict({}) == IndexConfig()


def test_small_catalogues_cap_nlist_and_nprobe() -> None:
    config = IndexConfig("ivf", ivf=IVFConfig(nlist=1024, nprobe=512))
    assert effective_config(config, 400).ivf == IVFConfig(nlist=10, nprobe=10)
    assert faiss.extract_index_ivf(build_index(ITEMS[:400], config)).nlist == 10


def test_index_config_reads_the_built_parameters(
    ivf_index: faiss.Index, hnsw_index: faiss.Index
) -> None:
    assert index_config(ivf_index) == IVF
    assert index_config(hnsw_index) == HNSW
    capped = build_index(ITEMS[:400], IndexConfig("ivf", ivf=IVFConfig(nlist=64, nprobe=32)))
    quality = assess(capped, ITEMS[:400], QUERIES, K, IVF, runs=1)
    assert quality.config == {"kind": "ivf", "ivf": {"nlist": 10, "nprobe": 10}}
    with pytest.raises(ValueError, match="configuration says 'hnsw'"):
        assess(capped, ITEMS[:400], QUERIES, K, HNSW, runs=1)


def test_kind_string_still_builds() -> None:
    assert isinstance(build_index(ITEMS[:500], "hnsw"), faiss.IndexHNSW)


def _load(path: Path, config: IndexConfig | None = None) -> ItemIndex:
    categories = np.zeros(N, dtype=np.int64)
    return ItemIndex.load(path, ITEMS, categories, 1, device="cpu", config=config)


def _ids(index: faiss.Index) -> np.ndarray:
    return index.search(QUERIES, K)[1]


def test_save_load_keeps_search_parameters(
    tmp_path: Path, ivf_index: faiss.Index, hnsw_index: faiss.Index
) -> None:
    weak_hnsw = faiss.clone_index(hnsw_index)
    weak_hnsw.hnsw.efSearch = 1  # FAISS searches with max(efSearch, k)
    for name, index in (("ivf", ivf_index), ("hnsw", weak_hnsw)):
        path = tmp_path / f"{name}.faiss"
        faiss.write_index(index, str(path))
        loaded = _load(path)
        np.testing.assert_array_equal(_ids(loaded.index), _ids(index))
    assert faiss.extract_index_ivf(_load(tmp_path / "ivf.faiss").index).nprobe == 1
    assert _load(tmp_path / "hnsw.faiss").index.hnsw.efSearch == 1


def test_load_config_overrides_search_parameters(tmp_path: Path, ivf_index: faiss.Index) -> None:
    path = tmp_path / "ivf.faiss"
    faiss.write_index(ivf_index, str(path))
    exhaustive = IndexConfig("ivf", ivf=IVFConfig(nlist=NLIST, nprobe=NLIST))
    loaded = _load(path, exhaustive)
    np.testing.assert_array_equal(_ids(loaded.index), _ids(_ivf_with_nprobe(ivf_index, NLIST)))
    assert measure_recall(loaded.index, ITEMS, QUERIES, K) == 1.0
    with pytest.raises(ValueError, match="index is 'ivf' but the configuration says 'hnsw'"):
        _load(path, HNSW)
