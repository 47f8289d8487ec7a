"""`evaluate_run`: accuracy and every measure of a run's model, per domain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clipgauge.cache import TensorCache
from clipgauge.data.dataset import ImageDataset
from clipgauge.data.open import open_dataset
from clipgauge.data.splits import select_split, split_train_test
from clipgauge.embeddings import embed_dataset
from clipgauge.prompts import load_templates
from clipgauge.task_measures import MeasureReport, measure_embeddings
from clipgauge.training.load import load_run, other_task_bundle
from clipgauge.training.run_folder import read_run_config


def evaluate_run(
    run_dir: str | Path,
    data: str | ImageDataset,
    *,
    domains: Sequence[str] | None = None,
    split: str = "auto",
    templates: str | Sequence[str] | None = None,
    cache: TensorCache | None = None,
    device: str | None = None,
    model: str | None = None,
    wise_alpha: float | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> MeasureReport:
    """Accuracy and every measure per domain for the fine-tuned model of a run.

    `split="auto"` evaluates the run's training domains on the test side of the run's own
    train/test split (images it never saw) and every other domain on all its images;
    `all`, `train` and `test` apply to every domain alike. Templates default to the run's.
    A dataset with other classes than the run's is embedded with the method's
    `other_task_view` (a head or learned prompts only know the run's own classes).
    """
    bundle = load_run(run_dir, device, model=model, wise_alpha=wise_alpha)
    config = read_run_config(Path(run_dir))
    record = config["data"]
    dataset = data if isinstance(data, ImageDataset) else open_dataset(data, domains=domains)
    if isinstance(data, ImageDataset) and domains:
        dataset = dataset.select_domains(domains)
    split_options = {"seed": record["split_seed"], "test_fraction": record["test_fraction"]}
    if split == "auto" and record["split"] == "train":
        trained_on = set(record["train_domains"])
        _, test = split_train_test(dataset, **split_options)
        unseen = {it.path for it in test.items}
        keep = [
            i
            for i, it in enumerate(dataset.items)
            if dataset.domain_names[it.domain] not in trained_on or it.path in unseen
        ]
        dataset = dataset.subset(keep, splits=[{"name": "auto", **split_options}])
    elif split == "auto":
        # The run trained on every image of its domains: no unseen in-domain images exist.
        split_options["note"] = "run trained on all images; its training domains include them"
    else:
        dataset = select_split(dataset, split, **split_options)
    if list(dataset.class_names) != list(record["class_names"]):  # another task's classes
        bundle = other_task_bundle(bundle)
    template_list = load_templates(templates) if templates else config["templates"]
    embeddings = embed_dataset(
        bundle,
        dataset,
        template_list,
        cache=cache,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    report = measure_embeddings(embeddings)
    report.provenance["split"] = {"split": split, **split_options}
    report.provenance["run"] = bundle.info
    return report
