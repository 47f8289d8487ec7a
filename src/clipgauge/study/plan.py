"""The plan of a study: every (task, train domains, method, seed) run, with its full config.

Run order is the product tasks x train_domains x methods x seeds in spec order; `--shard i/n`
takes the runs whose index (0-based, in that order) % n == i - 1. A run's id is the hash of
its config, so a changed spec or model plans new runs instead of reusing stale ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from clipgauge.embeddings import preprocessing_config
from clipgauge.errors import ClipgaugeError
from clipgauge.methods import baseline_method, get_method
from clipgauge.models.loading import ClipBundle
from clipgauge.study.spec import StudySpec
from clipgauge.study.store import config_hash
from clipgauge.training.config import resolve_train_config


@dataclass
class PlannedRun:
    """One run of the study, with its resolved config and the config's hash."""

    index: int
    task: str
    train_domains: list[str]
    method: str
    seed: int
    config: dict
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.task} [{'+'.join(self.train_domains)}] {self.method} seed {self.seed}"


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"2/4"` -> (2, 4): shard i of n, 1-based; None or 1/1 means unsharded."""
    if text is None:
        return None
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ClipgaugeError(f"--shard {text!r} must be I/N, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise ClipgaugeError(f"--shard {i}/{n}: I must be between 1 and N")
    return None if n == 1 else (i, n)


def in_shard(runs: list[PlannedRun], shard: tuple[int, int] | None) -> list[PlannedRun]:
    """The runs of shard (i, n) of the plan (all of them unsharded)."""
    if shard is None:
        return runs
    return [r for r in runs if r.index % shard[1] == shard[0] - 1]


def _plain(value):
    return json.loads(json.dumps(value, default=list))


def _train_config(spec: StudySpec, bundle: ClipBundle, method: str, seed: int):
    """(training options with the seed, preset used); (None, None) for a method that trains
    nothing, whose run evaluates the base model."""
    if get_method(method).trains_nothing:
        return None, None
    train_config, preset = resolve_train_config(
        method, spec.train_overrides(method), spec.preset, bundle.name
    )
    return {**train_config.to_dict(), "seed": seed}, preset


def _measure_only(index: int, spec: StudySpec, common: dict, record: dict) -> PlannedRun:
    """The run that measures an evaluation-only task: the baseline method, no train domains,
    the first seed (the baseline does not depend on it)."""
    baseline, seed = baseline_method(), spec.seeds[0]
    config = {
        **common,
        "task": record,
        "train_domains": [],
        "method": {"name": baseline, "config": {}},
        "train": None,
        "preset": None,
        "seed": seed,
        "forgetting": [],
    }
    return PlannedRun(index, record["name"], [], baseline, seed, config, config_hash(config))


def plan_runs(spec: StudySpec, bundle: ClipBundle, records: dict[str, dict]) -> list[PlannedRun]:
    """Every run of the spec in order; `records` describe each task (StudyContext.task_record)."""
    common = {
        "model": {
            "name": spec.model,
            "fingerprint": bundle.fingerprint,
            "dtype": str(bundle.dtype).removeprefix("torch."),
        },
        "preprocessing": preprocessing_config(bundle.image_processor),
        "split": {"test_fraction": spec.test_fraction, "seed": spec.split_seed},
        "eval": {"max_images_per_domain": spec.max_images_per_domain},
    }
    if spec.forgetting_images_per_task is not None:  # only when set: older run ids stay valid
        common["eval"]["forgetting_images_per_task"] = spec.forgetting_images_per_task
    if spec.wise_alphas:  # likewise
        common["eval"]["wise_alphas"] = spec.wise_alphas
    runs: list[PlannedRun] = []
    for task, entry in spec.tasks.items():
        forgetting = [records[t] for t in spec.forgetting if t != task]
        if not entry.train_domains:  # evaluated only: one baseline run measures it zero-shot
            runs.append(_measure_only(len(runs), spec, common, records[task]))
        for train_domains in entry.train_domains:
            for method, options in spec.methods.items():
                method_config = _plain(dataclasses.asdict(get_method(method).make_config(options)))
                for seed in spec.seeds:
                    train, preset = _train_config(spec, bundle, method, seed)
                    config = {
                        **common,
                        "task": records[task],
                        "train_domains": sorted(train_domains),
                        "method": {"name": method, "config": method_config},
                        "train": train,
                        "preset": preset,
                        "seed": seed,
                        "forgetting": forgetting,
                    }
                    runs.append(
                        PlannedRun(
                            index=len(runs),
                            task=task,
                            train_domains=sorted(train_domains),
                            method=method,
                            seed=seed,
                            config=config,
                            run_id=config_hash(config),
                        )
                    )
    return runs
