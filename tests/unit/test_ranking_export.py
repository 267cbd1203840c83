"""The exported ranker: what the service loads, without the training code, equal to the
eager model, and refused when its feature schema does not match this build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ranking.export import EXPORT_FILE, META, example_batch, load_exported
from ranking.features import DENSE_FEATURES, FeatureBuilder
from ranking.model import Ranker, RankerConfig
from ranking.scorer import CONFIG_FILE, MODEL_FILE, IncompatibleRanker, RankingScorer
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def version_dir(artifacts: Path) -> Path:
    return resolve(artifacts)


@pytest.fixture(scope="module")
def eager(version_dir: Path) -> Ranker:
    """The trained weights in the training code's class (what the export was made from)."""
    config = json.loads((version_dir / "ranking" / CONFIG_FILE).read_text())
    model = Ranker(RankerConfig(**config["model"]))
    model.load_state_dict(torch.load(version_dir / "ranking" / MODEL_FILE, weights_only=True))
    return model.eval()


def test_service_path_loads_without_the_model_class(version_dir: Path) -> None:
    """A fresh interpreter where importing ranking.model fails still loads and ranks."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.modules["ranking.model"] = None  # any import of it raises ImportError
        from services.ranking_service import RankingApp  # the service's import graph too
        from ranking.scorer import RankingScorer
        scorer = RankingScorer.load(__import__("pathlib").Path({str(version_dir)!r}))
        ids = scorer.items.item_ids
        ranked = scorer.rank(ids[:5], ids[10:60], None, 10)
        assert len(ranked.item_ids) == 10
        assert "ranking.train" not in sys.modules
        print(type(scorer.model).__module__, type(scorer.model).__name__)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "torch.fx" in out.stdout  # a GraphModule rebuilt from the file, not a Ranker


def test_exported_outputs_equal_eager(version_dir: Path, eager: Ranker) -> None:
    model, meta = load_exported(version_dir / "ranking" / EXPORT_FILE, torch.device("cpu"))
    assert not isinstance(model, Ranker)
    assert meta["dense_features"] == list(DENSE_FEATURES)
    scorer = RankingScorer.load(version_dir)
    users = UserHistoryStore.load(version_dir / "users")
    histories = [scorer.items.rows_of(users.recent_items(u))[0] for u in users.user_ids()[:9]]
    rng = np.random.default_rng(0)
    n = len(scorer.items)
    # Real features at several batch shapes: one pair, one user, ragged users.
    cases = [
        ([histories[0]], [np.array([3])]),
        ([histories[1]], [rng.choice(n, 500, replace=False)]),
        (histories, [rng.choice(n, c, replace=False) for c in (1, 7, 200, 50, 2, 300, 9, 1, 64)]),
        ([np.empty(0, np.int64)], [rng.choice(n, 20, replace=False)]),  # no history
    ]
    features: FeatureBuilder = scorer.features
    with torch.inference_mode():
        for hist, cands in cases:
            scores = [rng.standard_normal(len(c)).astype(np.float32) for c in cands]
            batch = features.build_ragged(hist, cands, scores)
            assert torch.equal(model(*batch.tensors()), eager(*batch.tensors()))
        # Random inputs from the export's own example generator, a larger batch.
        batch = example_batch(eager.cfg, users=16, pairs=3000, seed=1)
        torch.testing.assert_close(model(*batch.tensors()), eager(*batch.tensors()))


def _copy_version(version_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / version_dir.name
    shutil.copytree(version_dir, copy)
    return copy


def test_manifest_schema_mismatch_is_refused(version_dir: Path, tmp_path: Path) -> None:
    copy = _copy_version(version_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["feature_schema"] = [*DENSE_FEATURES[:-1], "something_else"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleRanker, match="manifest"):
        RankingScorer.load(copy)


def test_exported_schema_mismatch_is_refused(version_dir: Path, tmp_path: Path) -> None:
    """The schema recorded inside the exported file is checked, not only the JSON next to it."""
    copy = _copy_version(version_dir, tmp_path)
    path = copy / "ranking" / EXPORT_FILE
    extra = {META: ""}
    program = torch.export.load(path, extra_files=extra)
    meta = json.loads(extra[META])
    meta["dense_features"] = list(reversed(DENSE_FEATURES))
    torch.export.save(program, path, extra_files={META: json.dumps(meta)})
    with pytest.raises(IncompatibleRanker, match="exported ranker"):
        RankingScorer.load(copy)


def test_missing_export_is_refused(version_dir: Path, tmp_path: Path) -> None:
    copy = _copy_version(version_dir, tmp_path)
    (copy / "ranking" / EXPORT_FILE).unlink()
    with pytest.raises(IncompatibleRanker, match="retrain"):
        RankingScorer.load(copy)
