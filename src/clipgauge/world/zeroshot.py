"""Zero-shot measures of a model on every world task and domain (docs/world-clip.md)."""

from __future__ import annotations

from pathlib import Path

from clipgauge.cache import TensorCache
from clipgauge.models.loading import ClipBundle, load_clip
from clipgauge.task_measures import OVERALL, MeasureReport, measure
from clipgauge.world.dataset import world_dataset
from clipgauge.world.tasks import load_tasks


def world_zeroshot(
    model: str | ClipBundle | Path = "world-clip",
    *,
    per_class: int = 50,
    seed: int = 0,
    split: str = "test",
    cache: TensorCache | None = None,
    progress: bool = False,
) -> dict[str, MeasureReport]:
    """`measure` on each world task's split, with the task's own prompt templates."""
    bundle = model if isinstance(model, ClipBundle) else load_clip(str(model), device="cpu")
    reports = {}
    for name, task in load_tasks().items():
        data = world_dataset(name, split=split, per_class=per_class, seed=seed)
        reports[name] = measure(
            bundle, data, templates=list(task.templates), cache=cache, progress=progress
        )
    return reports


def markdown_table(reports: dict[str, MeasureReport]) -> str:
    """One row per task and domain plus the task's overall row, as a Markdown table."""
    lines = [
        "| task | domain | classes | chance | accuracy | ACS | silhouette (modality) "
        "| silhouette (class) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, report in reports.items():
        for domain, row in report.rows.items():
            name = f"**{domain}**" if domain == OVERALL else domain
            lines.append(
                f"| {task} | {name} | {row['n_classes']} | {1 / row['n_classes']:.3f} "
                f"| {row['zero_shot_accuracy']:.3f} | {row['acs']:.4f} "
                f"| {row['silhouette_modality']:.4f} | {row['silhouette_class']:.4f} |"
            )
    return "\n".join(lines)
