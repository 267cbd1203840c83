"""The synthetic generator must be deterministic, honour the schema and carry the planted
structure (popularity skew, complements, interests, loyalty, text -> tag signal)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recdata.schema import Dataset, validate_dataset
from recdata.synthetic import (
    CATEGORIES,
    COLOURS,
    COMPLEMENTS,
    EPOCH,
    ITEM_ID_BASE,
    TAG_PHRASES,
    TAG_VOCAB,
    WINDOW_SECONDS,
    generate,
)

NUM_ITEMS, NUM_USERS, MEAN_EVENTS = 2000, 600, 30


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return generate(NUM_ITEMS, NUM_USERS, MEAN_EVENTS, seed=7)


@pytest.fixture(scope="module")
def events(ds: Dataset) -> pd.DataFrame:
    """Interactions joined with item category and brand."""
    meta = ds.items.set_index("item_id")
    return ds.interactions.assign(
        category=meta["category"].reindex(ds.interactions["item_id"]).to_numpy(),
        brand=meta["brand"].reindex(ds.interactions["item_id"]).to_numpy(),
    )


def _consecutive(events: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    same_user = events["user_id"].to_numpy()[1:] == events["user_id"].to_numpy()[:-1]
    values = events[column].to_numpy()
    return values[:-1][same_user], values[1:][same_user]


# --- determinism and contract -------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    a, b = generate(300, 80, seed=11), generate(300, 80, seed=11)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)


def test_different_seed_gives_different_data() -> None:
    a, b = generate(300, 80, seed=11), generate(300, 80, seed=12)
    assert not a.items["title"].equals(b.items["title"])
    assert not a.interactions.equals(b.interactions)


def test_dataset_passes_validation_and_dtypes(ds: Dataset) -> None:
    validate_dataset(ds)
    assert ds.items["item_id"].dtype == np.int64
    assert ds.interactions["item_id"].dtype == np.int64
    assert ds.interactions["timestamp"].dtype == np.int64
    assert ds.items["price"].dtype == np.float64
    assert len(ds.items) == NUM_ITEMS
    assert ds.interactions["user_id"].nunique() == NUM_USERS
    assert ds.items["item_id"].min() >= ITEM_ID_BASE


def test_describe_mentions_counts(ds: Dataset) -> None:
    text = ds.describe()
    assert f"{NUM_ITEMS} items" in text and f"{NUM_USERS} users" in text
    assert f"{len(ds.interactions)} interactions" in text and "15 categories" in text


def test_every_interaction_references_an_item(ds: Dataset) -> None:
    assert ds.interactions["item_id"].isin(ds.items["item_id"]).all()


def test_user_ids_are_zero_padded_strings(ds: Dataset) -> None:
    assert ds.interactions["user_id"].map(lambda u: bool(re.fullmatch(r"u\d{6}", u))).all()


def test_tags_are_lowercase_lists_from_the_category_pool(ds: Dataset) -> None:
    pools = {c.name: set(c.tags) | set(COLOURS) for c in CATEGORIES}
    for category, tags in zip(ds.items["category"], ds.items["tags"], strict=True):
        assert isinstance(tags, list) and 2 <= len(tags) <= 5
        assert all(t == t.lower() and t in pools[category] for t in tags)
        assert len(set(tags)) == len(tags)


def test_timestamps_strictly_increase_inside_the_window(ds: Dataset) -> None:
    frame = ds.interactions
    same_user = frame["user_id"].to_numpy()[1:] == frame["user_id"].to_numpy()[:-1]
    gaps = np.diff(frame["timestamp"].to_numpy())
    assert (gaps[same_user] > 0).all()
    assert frame["timestamp"].min() >= EPOCH
    assert frame["timestamp"].max() < EPOCH + WINDOW_SECONDS


def test_event_counts_follow_the_requested_mean(ds: Dataset) -> None:
    per_user = ds.interactions.groupby("user_id").size()
    assert per_user.min() >= 5
    assert 0.8 * MEAN_EVENTS < per_user.mean() < 1.25 * MEAN_EVENTS
    assert per_user.std() > 0.3 * MEAN_EVENTS  # activity varies across users


def test_users_rarely_repeat_an_item(ds: Dataset) -> None:
    assert ds.interactions.duplicated(["user_id", "item_id"]).mean() < 0.05


def test_complements_only_name_known_categories() -> None:
    names = {c.name for c in CATEGORIES}
    assert set(COMPLEMENTS) == names
    assert all(set(v) <= names and k not in v for k, v in COMPLEMENTS.items())
    assert 12 <= len(CATEGORIES) <= 16


def test_too_few_items_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_items"):
        generate(num_items=len(CATEGORIES) - 1)


# --- validate_dataset catches broken data -------------------------------------------


def test_validation_rejects_missing_column(ds: Dataset) -> None:
    broken = Dataset("x", ds.items.drop(columns=["tags"]), ds.interactions)
    with pytest.raises(ValueError, match="tags"):
        validate_dataset(broken)


def test_validation_rejects_unknown_items(ds: Dataset) -> None:
    interactions = ds.interactions.copy()
    interactions.loc[0, "item_id"] = 1
    with pytest.raises(ValueError, match="unknown item_id"):
        validate_dataset(Dataset("x", ds.items, interactions))


def test_validation_rejects_unsorted_interactions(ds: Dataset) -> None:
    shuffled = ds.interactions.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="sorted"):
        validate_dataset(Dataset("x", ds.items, shuffled))


def test_validation_rejects_duplicate_item_ids(ds: Dataset) -> None:
    items = ds.items.copy()
    items.loc[1, "item_id"] = items.loc[0, "item_id"]
    with pytest.raises(ValueError, match="unique"):
        validate_dataset(Dataset("x", items, ds.interactions))


# --- planted structure ----------------------------------------------------------------


def test_popularity_is_heavy_tailed(ds: Dataset) -> None:
    counts = ds.interactions["item_id"].value_counts()
    top_decile = counts.iloc[: len(ds.items) // 10].sum()
    assert top_decile / len(ds.interactions) > 0.35


def test_complement_transitions_are_overrepresented(events: pd.DataFrame) -> None:
    prev, nxt = _consecutive(events, "category")
    observed = np.mean([n in COMPLEMENTS[p] for p, n in zip(prev, nxt, strict=True)])
    # What independent draws from the category marginal would give.
    share = events["category"].value_counts(normalize=True)
    expected = sum(
        share[p] * share.reindex(list(COMPLEMENTS[p])).fillna(0).sum() for p in share.index
    )
    assert observed > 2 * expected


def test_users_concentrate_on_few_categories(events: pd.DataFrame) -> None:
    def top3_share(frame: pd.DataFrame) -> float:
        shares = frame.groupby("user_id")["category"].value_counts(normalize=True)
        return float(shares.groupby(level=0).apply(lambda s: s.nlargest(3).sum()).mean())

    rng = np.random.default_rng(0)
    scrambled = events.assign(category=rng.permutation(events["category"].to_numpy()))
    assert top3_share(events) > 0.75
    assert top3_share(events) > top3_share(scrambled) + 0.25


def test_interests_drift_over_time(events: pd.DataFrame) -> None:
    """Early and late category mixes differ more than under a time-shuffled sequence."""

    def early_late_distance(frame: pd.DataFrame) -> float:
        out = []
        for _, cats in frame.groupby("user_id")["category"]:
            if len(cats) < 20:
                continue
            cut = int(0.3 * len(cats))
            early = cats.iloc[:cut].value_counts(normalize=True)
            late = cats.iloc[-cut:].value_counts(normalize=True)
            out.append(0.5 * early.sub(late, fill_value=0).abs().sum())
        return float(np.mean(out))

    rng = np.random.default_rng(0)
    shuffled = events.assign(
        category=events.groupby("user_id")["category"].transform(
            lambda s: rng.permutation(s.to_numpy())
        )
    )
    assert early_late_distance(events) > early_late_distance(shuffled) + 0.1


def test_users_rebuy_brands(events: pd.DataFrame) -> None:
    """Brand repeat rate beats the same events with brands shuffled within category."""

    def rebuy_rate(frame: pd.DataFrame) -> float:
        return float(frame.duplicated(["user_id", "brand"]).mean())

    rng = np.random.default_rng(0)
    shuffled = events.copy()
    for _, index in shuffled.groupby("category").groups.items():
        shuffled.loc[index, "brand"] = rng.permutation(shuffled.loc[index, "brand"].to_numpy())
    assert rebuy_rate(events) > rebuy_rate(shuffled) + 0.02


def test_titles_usually_but_not_always_name_the_tags(ds: Dataset) -> None:
    present = [
        [tag in title.lower() for tag in tags]
        for title, tags in zip(ds.items["title"], ds.items["tags"], strict=True)
    ]
    assert np.mean([any(p) for p in present]) > 0.8
    pair_rate = np.mean(np.concatenate(present))
    assert 0.55 < pair_rate < 0.85  # text -> tags must not be a pure string match


def test_missing_title_tags_are_paraphrased_in_the_description(ds: Dataset) -> None:
    paraphrased = [
        any(phrase in desc for phrase in TAG_PHRASES[tag])
        for title, desc, tags in zip(
            ds.items["title"], ds.items["description"], ds.items["tags"], strict=True
        )
        for tag in tags
        if tag not in title.lower()
    ]
    assert len(paraphrased) > 0.1 * len(ds.items)
    assert 0.7 < np.mean(paraphrased) < 1.0


def test_paraphrases_never_contain_their_own_tag() -> None:
    assert set(TAG_VOCAB) >= {t for c in CATEGORIES for t in c.tags} | set(COLOURS)
    for tag, phrases in TAG_PHRASES.items():
        assert phrases and all(tag not in p.lower() for p in phrases), tag
