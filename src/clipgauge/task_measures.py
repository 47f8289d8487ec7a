"""Zero-shot misalignment of a task: every measure per domain and overall, with provenance."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipgauge import __version__
from clipgauge.cache import TensorCache, atomic_write_bytes
from clipgauge.data.dataset import ImageDataset
from clipgauge.data.open import open_dataset
from clipgauge.data.splits import select_split
from clipgauge.embeddings import TaskEmbeddings, embed_dataset
from clipgauge.measures import OVERALL, compute_measures
from clipgauge.models.loading import ClipBundle, load_clip
from clipgauge.prompts import templates_for


@dataclass
class MeasureReport:
    """Measures per domain (in dataset order) plus an `overall` row, and their provenance."""

    rows: dict[str, dict]
    provenance: dict

    def to_dict(self) -> dict:
        return {
            "domains": {k: v for k, v in self.rows.items() if k != OVERALL},
            OVERALL: self.rows[OVERALL],
            "provenance": self.provenance,
        }

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        text = json.dumps(_json_safe(self.to_dict()), indent=2)
        atomic_write_bytes(path, text.encode())
        return path

    def table(self) -> str:
        return format_table(self.rows)


def _json_safe(obj):
    """NaN is not valid JSON: store it as null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def measure_embeddings(embeddings: TaskEmbeddings) -> MeasureReport:
    """Every zero-shot measure per domain and over all images of `embeddings`."""
    rows = {}
    for d, name in enumerate(embeddings.domain_names):
        mask = embeddings.domains == d
        if int(mask.sum()) == 0:
            continue
        rows[name] = compute_measures(
            embeddings.image_embeds[mask], embeddings.text_embeds, embeddings.labels[mask]
        )
    rows[OVERALL] = compute_measures(
        embeddings.image_embeds, embeddings.text_embeds, embeddings.labels
    )
    provenance = {"clipgauge_version": __version__, **embeddings.provenance()}
    provenance["class_names"] = embeddings.class_names
    return MeasureReport(rows=rows, provenance=provenance)


def measure(
    model: str | ClipBundle,
    data: str | ImageDataset,
    *,
    domains: Sequence[str] | None = None,
    class_map: str | Path | dict[str, str] | None = None,
    templates: str | Sequence[str] | None = None,
    split: str = "all",
    seed: int = 0,
    test_fraction: float = 0.2,
    cache: TensorCache | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> MeasureReport:
    """Measure how misaligned a task is for a CLIP model, before any fine-tuning.

    `split` is `all` (every image), or `train`/`test` of the deterministic per-domain split
    made with `seed` and `test_fraction`. `class_map` (a file or dict of class name -> display
    name) renames classes of a folder or CSV dataset.
    """

    bundle = (
        model if isinstance(model, ClipBundle) else load_clip(model, device=device, dtype=dtype)
    )
    if isinstance(data, ImageDataset):
        dataset = data
    else:
        dataset = open_dataset(data, domains=domains, class_map=class_map)
    if isinstance(data, ImageDataset) and domains:
        dataset = dataset.select_domains(domains)
    dataset = select_split(dataset, split, seed=seed, test_fraction=test_fraction)
    embeddings = embed_dataset(
        bundle,
        dataset,
        templates_for(templates, dataset),
        cache=cache,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    report = measure_embeddings(embeddings)
    report.provenance["split"] = {"split": split, "seed": seed, "test_fraction": test_fraction}
    report.provenance["from_cache"] = embeddings.from_cache
    return report


COLUMNS = [
    ("domain", "{}", 12),
    ("n_images", "{:d}", 8),
    ("n_classes", "{:d}", 9),
    ("zero_shot_accuracy", "{:.3f}", 8),
    ("balanced_accuracy", "{:.3f}", 8),
    ("acs", "{:.4f}", 7),
    ("silhouette_modality", "{:.4f}", 8),
    ("silhouette_class", "{:.4f}", 8),
    ("modality_gap", "{:.4f}", 7),
    ("iimm", "{:.4f}", 7),
]
HEADERS = {
    "zero_shot_accuracy": "acc",
    "balanced_accuracy": "bal_acc",
    "silhouette_modality": "ss_mod",
    "silhouette_class": "ss_cls",
    "modality_gap": "gap",
    "n_images": "images",
    "n_classes": "classes",
}


def format_table(rows: dict[str, dict]) -> str:
    """A fixed-width table, one row per domain and the overall row last."""

    def cell(fmt: str, value, width: int) -> str:
        if isinstance(value, float) and math.isnan(value):
            text = "nan"
        else:
            text = fmt.format(value)
        return text.rjust(width) if fmt != "{}" else text.ljust(width)

    header = " ".join(
        HEADERS.get(c, c).rjust(w) if c != "domain" else c.ljust(w) for c, _, w in COLUMNS
    )
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        values = {"domain": name, **row}
        lines.append(" ".join(cell(fmt, values[c], w) for c, fmt, w in COLUMNS))
    return "\n".join(lines)
