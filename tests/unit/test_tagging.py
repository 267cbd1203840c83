"""Unit tests for the fast text tagger (features, vocabulary, metrics, training)."""

from __future__ import annotations

import json
import pathlib
import zlib

import numpy as np
import pytest
import torch

from recdata.errors import TooLittleData
from tagging import (
    Tagger,
    TaggerTrainConfig,
    TagModel,
    TagVocabulary,
    batch_features,
    hash_features,
    multilabel_prf,
    product_text,
    train_tagger,
)
from tagging.train import most_frequent_baseline

# --------------------------------------------------------------------------- text


def test_product_text_joins_lowercases_and_normalises_whitespace() -> None:
    assert product_text("  Red\tShirt ", "Soft\n\nCOTTON", "Apparel") == (
        "red shirt soft cotton apparel"
    )
    assert product_text("", "", "") == ""


def test_hash_features_match_hard_coded_values() -> None:
    # Computed once; a change here means every saved model silently breaks.
    # fmt: off
    expected = [
        142009, 145017, 147791, 143124, 133402, 200874, 149075, 150626, 62298, 84426,
        165166, 40322, 33171, 232161, 196158, 125731, 119698, 162122, 249676,
    ]
    # fmt: on
    assert hash_features("red cotton shirt", 2**18) == expected
    assert hash_features("Red  COTTON shirt!", 2**18) == expected
    # Independent check of the documented scheme for the first unigram.
    assert expected[0] == 1 + zlib.crc32(b"w\x1fred") % (2**18 - 1)


def test_hash_features_counts_unigrams_bigrams_and_trigrams() -> None:
    # red: 1 + 3 trigrams, cotton: 1 + 6, shirt: 1 + 5, plus 2 bigrams.
    assert len(hash_features("red cotton shirt", 2**18)) == 19
    # A single letter word: unigram + the one trigram "<a>".
    assert len(hash_features("a", 1024)) == 2
    feats = hash_features("some longer product description text", 4096)
    assert all(1 <= f < 4096 for f in feats)


def test_hash_features_word_order_matters_only_through_bigrams() -> None:
    a = hash_features("blue denim", 2**18)
    b = hash_features("denim blue", 2**18)
    assert sorted(a[:-1]) == sorted(b[:-1])  # same unigrams + trigrams
    assert a[-1] != b[-1]  # different bigram


def test_empty_text_gives_reserved_bucket_and_valid_bags() -> None:
    assert hash_features("", 1024) == [0]
    assert hash_features("  --  ", 1024) == [0]
    indices, offsets = batch_features(["red shirt", "", "x"], 1024)
    assert indices.dtype == torch.int64 and offsets.dtype == torch.int64
    # "red shirt": 2 unigrams + 3 + 5 trigrams + 1 bigram = 11 features.
    assert offsets.tolist() == [0, 11, 12]
    assert indices[11].item() == 0
    assert len(indices) == 14


def test_hash_features_rejects_too_few_buckets() -> None:
    with pytest.raises(ValueError):
        hash_features("x", 1)


# --------------------------------------------------------------------- vocabulary


def test_vocabulary_normalises_and_applies_min_support() -> None:
    tag_lists = [
        ["Outdoor Gear", "kids"],
        ["outdoor_gear", "Kids "],
        ["  OUTDOOR   gear", "rare"],
        ["kids", "kids"],  # duplicate within an item counts once
    ]
    vocab = TagVocabulary.build(tag_lists, min_support=2)
    assert vocab.names == ["kids", "outdoor-gear"]  # support 3 ties -> by name
    assert len(vocab) == 2
    assert vocab.index("Outdoor_Gear") == vocab.index("outdoor-gear") == 1
    with pytest.raises(KeyError):
        vocab.index("rare")
    assert TagVocabulary.build(tag_lists, min_support=4).names == []


def test_vocabulary_encode_and_json_round_trip() -> None:
    vocab = TagVocabulary.build([["a", "b"], ["b"], ["b", "c"]], min_support=1)
    assert vocab.names == ["b", "a", "c"]  # by support, then name
    encoded = vocab.encode([["A", "unknown"], [], ["c", "b"]])
    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded, [[0, 1, 0], [0, 0, 0], [1, 0, 1]])
    restored = TagVocabulary.from_json(vocab.to_json())
    assert restored.names == vocab.names
    assert TagVocabulary.from_json(json.loads(vocab.to_json())).names == vocab.names


# ------------------------------------------------------------------------ metrics


def test_multilabel_prf_matches_hand_computed_values() -> None:
    true = np.array(
        [
            [1, 1, 0, 0],
            [0, 1, 0, 0],
            [1, 0, 0, 0],
        ],
        dtype=bool,
    )
    pred = np.array(
        [
            [1, 0, 1, 0],
            [0, 1, 0, 0],
            [1, 1, 0, 0],
        ],
        dtype=bool,
    )
    # tag0: tp2 fp0 fn0 -> F1 1; tag1: tp1 fp1 fn1 -> F1 0.5;
    # tag2: tp0 fp1 fn0 -> F1 0; tag3: no positives -> excluded from macro.
    # micro: tp3 fp2 fn1 -> P 3/5, R 3/4, F1 2/3.
    got = multilabel_prf(pred, true)
    assert got["micro_precision"] == pytest.approx(0.6)
    assert got["micro_recall"] == pytest.approx(0.75)
    assert got["micro_f1"] == pytest.approx(2 / 3)
    assert got["macro_f1"] == pytest.approx(0.5)
    # macro P over predicted tags 0,1,2: (1 + 1/2 + 0) / 3; macro R over present tags 0,1.
    assert got["macro_precision"] == pytest.approx(0.5)
    assert got["macro_recall"] == pytest.approx(0.75)


def test_multilabel_prf_degenerate_cases() -> None:
    empty = np.zeros((2, 3), dtype=bool)
    got = multilabel_prf(empty, empty)
    assert got == {
        "micro_precision": 0.0,
        "micro_recall": 0.0,
        "micro_f1": 0.0,
        "macro_precision": 0.0,
        "macro_recall": 0.0,
        "macro_f1": 0.0,
    }
    with pytest.raises(ValueError):
        multilabel_prf(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


def test_most_frequent_baseline_predicts_top_m_tags() -> None:
    train = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    # mean tags per item = 7/4 -> m = 2; most frequent: tag1 (4), tag0 (2).
    pred = most_frequent_baseline(train, 2)
    np.testing.assert_array_equal(pred, [[True, True, False], [True, True, False]])


# -------------------------------------------------------------------------- model


def test_model_ignores_unknown_features() -> None:
    torch.manual_seed(0)
    model = TagModel(64, 8, 16, 3).eval()
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[1, 2]] = True
    model.set_known_features(mask)
    with torch.inference_mode():
        base = model(torch.tensor([1, 2]), torch.tensor([0]))
        noisy = model(torch.tensor([1, 40, 2, 50]), torch.tensor([0]))
        empty = model(torch.tensor([40]), torch.tensor([0]))
    torch.testing.assert_close(base, noisy)
    assert empty.shape == (1, 3) and torch.isfinite(empty).all()


# ----------------------------------------------------------------------- training

_TAG_SYNONYMS = {
    "Waterproof": ["waterproof", "rainproof", "water-resistant"],
    "wireless": ["wireless", "bluetooth", "cordless"],
    "Kids": ["kids", "children", "toddler"],
    "organic_cotton": ["organic", "eco-cotton"],
    "Gift Idea": ["gift", "present", "giftable"],
    "outdoor": ["outdoor", "hiking", "camping"],
    "kitchen": ["kitchen", "cookware", "baking"],
    "vintage": ["vintage", "retro", "classic"],
    "fitness": ["fitness", "gym", "workout"],
    "pet": ["pet", "dog", "cat"],
}


def _toy_corpus(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Items whose text mentions a synonym of each tag amid filler words."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    filler = sorted({"".join(rng.choice(letters, size=rng.integers(3, 8))) for _ in range(200)})
    tags = list(_TAG_SYNONYMS)
    popularity = 1.0 / np.arange(1, len(tags) + 1)
    popularity /= popularity.sum()
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.choice(len(tags), size=rng.integers(1, 4), replace=False, p=popularity)
        words = list(rng.choice(filler, size=rng.integers(8, 20)))
        for t in chosen:
            if rng.random() < 0.9:  # some labels are not evidenced by the text
                synonym = rng.choice(_TAG_SYNONYMS[tags[t]])
                words.insert(int(rng.integers(0, len(words) + 1)), synonym)
        title, desc = " ".join(words[:4]), " ".join(words[4:])
        texts.append(product_text(title.title(), desc, "Misc"))
        labels.append([tags[t] for t in chosen])
    return texts, labels


_CONFIG = TaggerTrainConfig(num_buckets=2**15, epochs=8, min_feature_count=2, seed=7)


@pytest.fixture(scope="module")
def trained() -> tuple[Tagger, dict, list[str]]:
    texts, labels = _toy_corpus(800, seed=1)
    lines: list[str] = []
    tagger, metrics = train_tagger(texts, labels, _CONFIG, progress=lines.append)
    return tagger, metrics, lines


def test_training_beats_most_frequent_baseline(trained: tuple[Tagger, dict, list[str]]) -> None:
    tagger, metrics, lines = trained
    assert metrics["num_train"] == 720 and metrics["num_validation"] == 80
    assert metrics["num_tags"] == len(tagger.vocabulary) == 10
    # Thresholds are calibrated on the validation items: one per tag, within the grid.
    assert tagger.thresholds.shape == (10,) and metrics["threshold"] == tagger.threshold
    assert ((tagger.thresholds >= 0.05) & (tagger.thresholds <= 0.95)).all()
    assert metrics["encoder"] == "fast" and tagger.encoder == "fast"
    assert metrics["micro_f1"] > 0.6
    assert metrics["micro_f1"] > metrics["baseline_micro_f1"] + 0.2
    assert len(lines) == _CONFIG.epochs and lines[0].startswith("epoch 1/")
    # Normalised names are exposed, unseen text is tagged sensibly.
    [[(top, confidence)]] = tagger.predict(["a cordless bluetooth speaker"], max_tags=1)
    assert top == "wireless" and confidence > 0.5


def test_training_is_deterministic_given_seed() -> None:
    texts, labels = _toy_corpus(300, seed=3)
    config = TaggerTrainConfig(num_buckets=2**12, epochs=2, min_support=3, seed=11)
    first, m1 = train_tagger(texts, labels, config)
    second, m2 = train_tagger(texts, labels, config)
    m1.pop("train_seconds"), m2.pop("train_seconds")
    assert m1 == m2
    np.testing.assert_array_equal(first.predict_proba(texts[:20]), second.predict_proba(texts[:20]))


def test_predict_respects_max_tags_and_min_confidence(
    trained: tuple[Tagger, dict, list[str]],
) -> None:
    tagger = trained[0]
    texts = ["waterproof hiking kids gift bluetooth retro gym dog", "zzz", ""]
    everything = tagger.predict(texts, max_tags=100, min_confidence=0.0)
    assert all(len(row) == len(tagger.vocabulary) for row in everything)
    for row in everything:
        confidences = [c for _, c in row]
        assert confidences == sorted(confidences, reverse=True)
    assert all(len(row) <= 2 for row in tagger.predict(texts, max_tags=2, min_confidence=0.0))
    assert tagger.predict(texts, max_tags=0) == [[], [], []]
    for row in tagger.predict(texts, max_tags=5, min_confidence=0.7):
        assert all(c >= 0.7 for _, c in row)
    # Default cut-off is each tag's calibrated threshold.
    cut = dict(zip(tagger.tag_names, tagger.thresholds, strict=True))
    for row in tagger.predict(texts):
        assert len(row) <= 5 and all(c >= cut[name] for name, c in row)
    probs = tagger.predict_proba(texts)
    assert probs.shape == (3, len(tagger.vocabulary)) and probs.dtype == np.float32
    assert tagger.predict([]) == [] and tagger.predict_proba([]).shape == (0, 10)


def test_save_load_round_trip(
    trained: tuple[Tagger, dict, list[str]], tmp_path: pathlib.Path
) -> None:
    tagger = trained[0]
    tagger.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"tagger.pt", "tagger.json"}
    loaded = Tagger.load(tmp_path / "model")
    texts = ["rainproof camping jacket for toddler", "retro cookware", ""]
    np.testing.assert_array_equal(tagger.predict_proba(texts), loaded.predict_proba(texts))
    assert loaded.predict(texts) == tagger.predict(texts)
    assert loaded.threshold == tagger.threshold
    np.testing.assert_allclose(loaded.thresholds, tagger.thresholds, atol=1e-4)
    assert loaded.vocabulary.names == tagger.vocabulary.names
    assert loaded.config["num_buckets"] == _CONFIG.num_buckets


def test_loads_a_format_1_artifact(
    trained: tuple[Tagger, dict, list[str]], tmp_path: pathlib.Path
) -> None:
    """Versions written before encoders were pluggable: fast model, one threshold."""
    tagger = trained[0]
    tagger.save(tmp_path)
    meta = json.loads((tmp_path / "tagger.json").read_text())
    old = {
        "format_version": 1,
        "vocabulary": meta["vocabulary"],
        "model": meta["scorer"]["model"],
        "num_buckets": meta["scorer"]["num_buckets"],
        "threshold": 0.4,
        "config": meta["config"],
    }
    (tmp_path / "tagger.json").write_text(json.dumps(old))
    loaded = Tagger.load(tmp_path)
    assert loaded.encoder == "fast" and loaded.threshold == 0.4
    assert loaded.thresholds.tolist() == pytest.approx([0.4] * len(loaded.vocabulary))
    np.testing.assert_array_equal(loaded.predict_proba(["retro"]), tagger.predict_proba(["retro"]))


def test_no_tag_on_min_support_items_is_too_little_data() -> None:
    """Every tag on one product only: nothing to learn, said as the user's data problem."""
    texts = [f"product number {i}" for i in range(20)]
    labels = [[f"tag{i}"] for i in range(20)]
    with pytest.raises(TooLittleData, match="no tag occurs on 2 or more training items"):
        train_tagger(texts, labels, TaggerTrainConfig(min_support=2, epochs=1))
