"""The ranker's building blocks on small random models (no trained artifact needed)."""

from __future__ import annotations

import pytest
import torch

from ranking.export import example_batch, export_ranker
from ranking.model import CrossLayer, Ranker, RankerConfig


def _config(**changes: object) -> RankerConfig:
    sizes: dict = {"num_items": 300, "num_categories": 12, "num_brands": 9, "num_tags": 5}
    return RankerConfig(**{**sizes, **changes})


def test_cross_layer_is_dcn_v2() -> None:
    """x_{l+1} = x0 * (W x_l + b) + x_l, full rank and low rank (W = U V)."""
    torch.manual_seed(0)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    full = CrossLayer(6, rank=0)
    w, b = full.proj.weight, full.proj.bias
    torch.testing.assert_close(full(x0, x), x0 * (x @ w.t() + b) + x)
    low = CrossLayer(6, rank=2)
    v, u = low.proj[0].weight, low.proj[1]
    assert v.shape == (2, 6) and u.weight.shape == (6, 2)
    torch.testing.assert_close(low(x0, x), x0 * ((x @ v.t()) @ u.weight.t() + u.bias) + x)


def test_category_space_attention_equals_per_pair_history() -> None:
    """The cheap path (attention over category similarities) computes the same function as
    the per-pair (N, H, d) history copy it replaces, including padded histories."""
    torch.manual_seed(1)
    model = Ranker(_config()).eval()
    batch = example_batch(model.cfg, users=5, pairs=400, seed=2)
    batch.history_categories[0] = model.cfg.num_categories  # a user with no history
    batch.history_categories[1, :15] = model.cfg.num_categories  # a short history
    with torch.inference_mode():
        assert model._category_space
        fast = model(*batch.tensors())
        model._category_space = False
        slow = model(*batch.tensors())
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cross_rank": 4},
        {"cross_layers": 0},
        {"use_attention": False},
        {"use_tags": False},
        {"num_categories": 400},  # above CATEGORY_SPACE_MAX: the per-pair history path
    ],
)
def test_every_variant_exports_with_dynamic_sizes(changes: dict) -> None:
    torch.manual_seed(3)
    model = Ranker(_config(**changes)).eval()
    exported = export_ranker(model).module()
    with torch.inference_mode():
        for users, pairs in [(1, 1), (2, 7), (9, 250)]:
            batch = example_batch(model.cfg, users=users, pairs=pairs, seed=users)
            torch.testing.assert_close(exported(*batch.tensors()), model(*batch.tensors()))


def test_a_pair_scores_the_same_alone_and_in_a_batch() -> None:
    """No cross-pair interaction: what makes concatenating requests exact."""
    torch.manual_seed(4)
    model = Ranker(_config()).eval()
    batch = example_batch(model.cfg, users=3, pairs=30, seed=5)
    with torch.inference_mode():
        together = model(*batch.tensors())
        for i in (0, 13, 29):
            u = int(batch.user_index[i])
            alone = model(
                batch.history_categories[u : u + 1],
                torch.zeros(1, dtype=torch.long),
                *(t[i : i + 1] for t in batch.tensors()[2:]),
            )
            torch.testing.assert_close(alone[0], together[i])


@pytest.mark.parametrize("num_categories", [12, 400])  # category space, per-pair history copy
def test_target_attention_is_a_softmax_over_the_users_own_history(num_categories: int) -> None:
    """The attention against a reference written out here: for each pair, softmax over
    its user's non-padding history items of (item · candidate) / sqrt(d), and the weighted
    sum of the items. Catches blinded attention (weights zeroed, every slot masked, the
    candidate or the history dropped from the logits) on either path."""
    torch.manual_seed(6)
    model = Ranker(_config(num_categories=num_categories)).eval()
    pad = model.cfg.num_categories
    batch = example_batch(model.cfg, users=4, pairs=80, seed=7)
    batch.history_categories[1, :17] = pad  # a short history
    batch.history_categories[2] = pad  # none at all
    with torch.inference_mode():
        cand = (
            model.category(batch.candidate_categories)
            + model.brand(batch.candidate_brands)
            + model.price(batch.candidate_prices)
            + model.tags(batch.candidate_tags)
        )
        got = model._target_attention(
            cand,
            batch.history_categories[batch.user_index],
            model.category(batch.history_categories),
            batch.user_index,
        )
        table = model.category.weight
        for n in range(len(cand)):
            history = batch.history_categories[batch.user_index[n]]
            vectors = table[history[history != pad]]  # (h, d)
            if len(vectors) == 0:
                expected = torch.zeros_like(cand[n])
            else:
                weights = torch.softmax(vectors @ cand[n] / model.cfg.dim**0.5, dim=0)
                expected = weights @ vectors
            torch.testing.assert_close(got[n], expected, rtol=1e-5, atol=1e-6)
    assert got.abs().sum(1)[batch.user_index != 2].min() > 0  # every pair with a history


def test_scores_depend_on_the_history_beyond_its_mean() -> None:
    """Two histories whose category vectors have the same mean (e1 + e2 = e3 + e4): with
    attention off (mean of the history) every score is the same, with attention on the
    scores differ, because each candidate weighs the items by similarity to itself.
    Catches a forward pass that reads the history only through its mean (attention
    blinded, its output dropped or replaced)."""
    torch.manual_seed(8)
    cfg = _config()
    on = Ranker(cfg).eval()
    off = Ranker(_config(use_attention=False)).eval()
    with torch.no_grad():  # vectors large enough for the softmax to be far from uniform
        table = on.category.weight
        table[: cfg.num_categories] = torch.randn(cfg.num_categories, cfg.dim)
        table[3] = table[1] + table[2] - table[4]
    off.load_state_dict(on.state_dict())
    batch = example_batch(cfg, users=1, pairs=40, seed=9)
    first, second = batch.history_categories.clone(), batch.history_categories.clone()
    first[0], second[0] = cfg.num_categories, cfg.num_categories
    first[0, -2:] = torch.tensor([1, 2])
    second[0, -2:] = torch.tensor([3, 4])
    rest = batch.tensors()[1:]
    with torch.inference_mode():
        torch.testing.assert_close(off(first, *rest), off(second, *rest))
        difference = (on(first, *rest) - on(second, *rest)).abs()
    assert difference.min() > 0 and difference.max() > 1e-3, difference
