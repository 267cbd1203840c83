"""`recserve eval`: one command, every row of the evaluation table for one data set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.harness import (
    EvaluationReport,
    EvaluationSet,
    evaluate_baselines,
    evaluate_served_pipeline,
)
from evaluation.tags import evaluate_tags, tags_markdown
from pipeline.train import TrainingConfig, reusable_version, train_all
from recdata.items import ItemTable
from recdata.schema import Dataset
from recdata.split import leave_last_out, user_sequences
from tagging.tagger import ENCODERS

Progress = Callable[[str], None]


@dataclass
class EvaluationResult:
    dataset: str
    artifact_version: str | None
    recommendation: EvaluationReport | None
    tags: dict[str, Any] | None

    def markdown(self) -> str:
        parts = [f"## {self.dataset}"]
        if self.recommendation is not None:
            parts += [
                f"\nRecommendation (artifact {self.artifact_version}):\n",
                self.recommendation.markdown(),
            ]
        if self.tags is not None:
            parts += ["\nTags:\n", tags_markdown(self.tags)]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "artifact_version": self.artifact_version,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "tags": self.tags,
        }


def trained_version(
    dataset: Dataset, artifact_root: Path, config: TrainingConfig, retrain: bool, progress: Progress
) -> Path:
    """The newest artifact trained on exactly this data, or a freshly trained one."""
    if not retrain and (version_dir := reusable_version(artifact_root, dataset)) is not None:
        progress(f"reusing {version_dir} (trained on the same data)")
        return version_dir
    return train_all(dataset, artifact_root, config, progress)


def run_evaluation(
    dataset: Dataset,
    artifact_root: Path,
    config: TrainingConfig,
    baselines: list[str],
    max_users: int | None,
    retrain: bool,
    tags: bool,
    progress: Progress,
    tag_encoders: Sequence[str] = ENCODERS,
    target: str = "test",
) -> EvaluationResult:
    """`target`: "test" (the reported numbers) or "validation" (for choosing between model
    variants; see evaluation/harness.py)."""
    version, report = None, None
    if len(dataset.interactions):
        version_dir = trained_version(dataset, artifact_root, config, retrain, progress)
        version = version_dir.name
        items = ItemTable.load(version_dir / "items")
        split = leave_last_out(user_sequences(dataset.interactions, items))
        eval_set = EvaluationSet.from_split(split, items.popularity, max_users, target=target)
        report = EvaluationReport(
            len(eval_set.targets), int(eval_set.cold_targets.sum()), target=target
        )
        evaluate_served_pipeline(version_dir, eval_set, report, progress)
        evaluate_baselines(split, items, eval_set, report, baselines, progress)
    tag_result = None
    has_tags = dataset.items["tags"].map(len).sum() > 0
    if tags and has_tags:
        tag_result = evaluate_tags(dataset, config.tagger, progress=progress, encoders=tag_encoders)
    return EvaluationResult(dataset.name, version, report, tag_result)
