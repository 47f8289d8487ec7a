"""What one process needs to run a study's runs: the base model, the tasks' data and caches."""

from __future__ import annotations

from pathlib import Path

from clipgauge.cache import TensorCache
from clipgauge.data.dataset import ImageDataset
from clipgauge.data.open import open_dataset
from clipgauge.data.splits import split_train_test
from clipgauge.errors import ClipgaugeError
from clipgauge.models.loading import load_clip
from clipgauge.pixels import PixelCache
from clipgauge.study.spec import StudySpec

CACHE_DIR = "cache"


def cap_total(dataset: ImageDataset, cap: int | None) -> ImageDataset:
    """At most `cap` images, taken in turn from every (domain, class) (deterministic)."""
    if cap is None or cap >= len(dataset):
        return dataset
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(dataset.items):
        groups.setdefault((item.domain, item.label), []).append(i)
    members = [groups[key] for key in sorted(groups)]
    order = [g[j] for j in range(max(map(len, members))) for g in members if j < len(g)]
    return dataset.subset(sorted(order[:cap]), forgetting_cap=cap)


def cap_per_domain(dataset: ImageDataset, cap: int | None) -> ImageDataset:
    """At most `cap` images per domain, taken round-robin over classes (deterministic)."""
    if cap is None:
        return dataset
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(dataset.items):
        groups.setdefault((item.domain, item.label), []).append(i)
    keep: list[int] = []
    for domain in sorted({d for d, _ in groups}):
        members = [groups[key] for key in sorted(groups) if key[0] == domain]
        order = [g[j] for j in range(max(map(len, members))) for g in members if j < len(g)]
        keep.extend(order[:cap])
    return dataset.subset(sorted(keep), eval_cap=cap)


class StudyContext:
    """The base model and every task's data, each opened once per process.

    Errors in the data point at the spec line that named it. The train/test split is fixed by
    the spec's `split.seed` for every run: `seeds` vary the training only, never the test set.
    """

    def __init__(self, spec: StudySpec, out_dir: Path):
        self.spec = spec
        self.out_dir = out_dir
        self.cache = TensorCache(out_dir / CACHE_DIR)
        try:
            self.bundle = load_clip(spec.model_source)
        except ClipgaugeError as err:
            raise spec.error("model", str(err)) from None
        # Every run of this process reads each task's images through it: rendered or decoded,
        # and preprocessed, once.
        self.pixels = PixelCache(self.bundle.image_processor)
        self._datasets: dict[str, ImageDataset] = {}
        self._tests: dict[str, ImageDataset] = {}
        self._forgetting: dict[str, ImageDataset] = {}
        self._domains: dict[str, list[str]] = {}
        # (task, for forgetting) -> see protocols.base_results
        self.base_rows_by_task: dict[tuple[str, bool], tuple[dict, dict]] = {}

    def dataset(self, task: str) -> ImageDataset:
        """Every image of a task's domains (opened once; errors point at the spec line)."""
        if task not in self._datasets:
            entry = self.spec.tasks[task]
            try:
                dataset = open_dataset(entry.source, domains=entry.domains)
            except ClipgaugeError as err:
                raise self.spec.error(f"tasks.{task}.data", str(err)) from None
            known = self.domains_of(dataset, task)
            for i, chosen in enumerate(entry.train_domains):
                unknown = [d for d in chosen if d not in known]
                if unknown:
                    raise self.spec.error(
                        f"tasks.{task}.train_domains",
                        f"[{i}]: unknown domain(s) {unknown}; {entry.data} has {', '.join(known)}",
                    )
            self._datasets[task] = dataset
        return self._datasets[task]

    def domains_of(self, dataset: ImageDataset, task: str) -> list[str]:
        entry = self.spec.tasks[task]
        present = {dataset.domain_names[d] for d in dataset.domains}
        return [d for d in (entry.domains or dataset.domain_names) if d in present]

    def task_domains(self, task: str) -> list[str]:
        """The task's domains that have images, in spec (else dataset) order."""
        if task not in self._domains:
            self._domains[task] = self.domains_of(self.dataset(task), task)
        return self._domains[task]

    def test_set(self, task: str) -> ImageDataset:
        """The test side of the study's fixed split, capped per domain if the spec says so."""
        if task not in self._tests:
            _, test = split_train_test(
                self.dataset(task), self.spec.test_fraction, self.spec.split_seed
            )
            self._tests[task] = cap_per_domain(test, self.spec.max_images_per_domain)
        return self._tests[task]

    def forgetting_set(self, task: str) -> ImageDataset:
        """The test images of `task` that measure forgetting of it (the spec may cap them)."""
        if task not in self._forgetting:
            cap = self.spec.forgetting_images_per_task
            self._forgetting[task] = cap_total(self.test_set(task), cap)
        return self._forgetting[task]

    def task_record(self, task: str) -> dict:
        """What identifies a task's data in every run config that uses it."""
        entry, dataset = self.spec.tasks[task], self.dataset(task)
        return {
            "name": task,
            "data": entry.data,
            "kind": dataset.source.get("kind"),
            "domains": self.task_domains(task),
            "class_names": list(dataset.class_names),
            "n_images": len(dataset),
            "n_test_images": len(self.test_set(task)),
            "templates": entry.templates,
        }
