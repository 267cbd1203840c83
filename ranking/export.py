"""The ranker as an exported program (`torch.export`): what the service loads.

The serving side needs no Python model code: `load_exported` rebuilds the graph from the
file alone (this module deliberately imports nothing from ranking.model). TorchScript is
deprecated in torch 2.13, so the export is `torch.export` with dynamic sizes for the users
(B) and (user, candidate) pairs (N) of a batch; history length, tag width and the dense
feature count are fixed by the training run and recorded next to the graph.

The file carries its own metadata (`extra_files`): the dense-feature schema and the model
configuration, so a loader checks the graph against the features this build computes
without trusting a separate file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ranking.features import DENSE_FEATURES, MAX_HISTORY, RankingBatch

EXPORT_FILE = "ranker.pt2"
META = "ranker_meta.json"


def example_batch(cfg: Any, users: int = 3, pairs: int = 7, seed: int = 0) -> RankingBatch:
    """Well-formed random inputs for a model with configuration `cfg` (a RankerConfig)."""
    g = torch.Generator().manual_seed(seed)
    n_tags = max(int(cfg.num_tags), 1)
    return RankingBatch(
        history_categories=torch.randint(
            0, cfg.num_categories + 1, (users, MAX_HISTORY), generator=g
        ),
        user_index=torch.sort(torch.randint(0, users, (pairs,), generator=g)).values,
        candidate_categories=torch.randint(0, cfg.num_categories, (pairs,), generator=g),
        candidate_brands=torch.randint(0, cfg.num_brands, (pairs,), generator=g),
        candidate_prices=torch.randint(0, 10, (pairs,), generator=g),
        candidate_tags=(torch.rand(pairs, n_tags, generator=g) > 0.8).float(),
        dense=torch.rand(pairs, len(DENSE_FEATURES), generator=g),
    )


def export_ranker(model: nn.Module) -> torch.export.ExportedProgram:
    """Export an eager ranker (anything with `.cfg` and RankingBatch's positional inputs).
    Exported on CPU; `load_exported` moves it to the serving device."""
    model = model.eval()
    users, pairs = Dim("users", min=1), Dim("pairs", min=1)
    per_pair = {0: pairs}
    dynamic = ({0: users}, per_pair, per_pair, per_pair, per_pair, per_pair, per_pair)
    return torch.export.export(model, example_batch(model.cfg).tensors(), dynamic_shapes=dynamic)


def save_exported(path: Path, model: nn.Module) -> None:
    program = export_ranker(model)
    meta = {
        "model": model.cfg.to_dict(),
        "dense_features": list(DENSE_FEATURES),
        "max_history": MAX_HISTORY,
        "inputs": list(RankingBatch.__dataclass_fields__),
    }
    torch.export.save(program, path, extra_files={META: json.dumps(meta)})


def load_exported(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The exported module on `device` and the metadata it was saved with."""
    extra = {META: ""}
    program = torch.export.load(path, extra_files=extra)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module(), json.loads(extra[META])
