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
