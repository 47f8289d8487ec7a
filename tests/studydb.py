"""Synthetic study databases (the schema `clipgauge study` writes) with known, planted effects.

`StudyWriter` writes rows one by one (for hand-computed tests); `planted_study` writes a whole
study whose truth is returned: silhouette_modality decides zero-shot accuracy across tasks,
aclip has the best balance score, lora the smallest forgetting, bitfit forgets more on harder
tasks, and one run fails.

Per-image predictions: each (task, domain) test cell has `n_images` images, each with a fixed
latent u in (0, 1) (evenly spaced, shuffled); a model with planted accuracy p classifies the
images with u < p correctly. So a run that gains is right on a superset of its baseline's
images (paired, as real fine-tuning runs mostly are), the stored accuracies are the flags'
means (as the runner stores them), and the realized accuracy is p to within 1 / n_images. With
`churn` > 0 every fine-tuned run redraws that share of its images' latents, which adds
image-level noise of mean zero; the zero-shot model is the same for every seed and never churns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipgauge.measures import MEASURE_FIELDS

SCHEMA = """
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT, train_domains TEXT, method TEXT,
  seed INTEGER, config TEXT, status TEXT, error TEXT, started REAL, finished REAL,
  seconds REAL, attempts INTEGER);
CREATE TABLE metrics (run_id TEXT, protocol TEXT, eval_task TEXT, domain TEXT, name TEXT,
  value REAL, PRIMARY KEY (run_id, protocol, eval_task, domain, name));
"""
PREDICTIONS_SCHEMA = """
CREATE TABLE predictions (run_id TEXT, protocol TEXT, eval_task TEXT, domain TEXT, n INTEGER,
  correct BLOB, PRIMARY KEY (run_id, protocol, eval_task, domain));
"""

METHODS = ("zeroshot", "full", "bitfit", "lora", "clip-adapter", "aclip")
# Planted per-method effects (fractions of accuracy): ID gain at ss = 0.5 and its slope in ss,
# DG gain, CF drop at ss = 0.5 and its slope. Scores: aclip 0.030 > lora 0.0217 > full 0.020.
EFFECTS = {
    "zeroshot": dict(id=0.0, id_slope=0.0, dg=0.0, cf=0.0, cf_slope=0.0),
    "full": dict(id=0.10, id_slope=0.10, dg=0.04, cf=0.08, cf_slope=0.0),
    "bitfit": dict(id=0.08, id_slope=0.05, dg=0.02, cf=0.06, cf_slope=0.10),
    "lora": dict(id=0.05, id_slope=0.02, dg=0.02, cf=0.005, cf_slope=0.0),
    "clip-adapter": dict(id=0.06, id_slope=0.0, dg=0.03, cf=0.05, cf_slope=0.0),
    "aclip": dict(id=0.07, id_slope=0.04, dg=0.04, cf=0.02, cf_slope=0.0),
}
FORGETTING_SUITE = {"cf_digits": 0.60, "cf_textures": 0.50}


class StudyWriter:
    """One study database file; rows go in as given (no validation: tests plant oddities)."""

    def __init__(
        self,
        path: str | Path,
        spec: dict | None = None,
        shard: str = "0/1",
        *,
        predictions: bool = True,
        info: dict | None = None,
    ):
        """`predictions=False` writes a database from before the predictions table existed."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path)
        self.con.executescript(SCHEMA + (PREDICTIONS_SCHEMA if predictions else ""))
        spec = spec or {"name": "synthetic", "model": "tiny"}
        info = {
            "spec": json.dumps(spec),
            "spec_path": str(self.path.parent / "synthetic.yaml"),
            "shard": shard,
            "clipgauge_version": "0.1.0",
            "created": "2024-01-01T00:00:00",
            **(info or {}),
        }
        self.con.executemany("INSERT INTO study VALUES (?, ?)", info.items())

    def add_run(
        self,
        run_id: str,
        task: str,
        train_domains: Sequence[str],
        method: str,
        seed: int,
        *,
        status: str = "finished",
        error: str | None = None,
        config: dict | None = None,
        finished: float = 2.0,
    ) -> None:
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                task,
                json.dumps(list(train_domains)),
                method,
                seed,
                json.dumps(config or default_config(method, seed)),
                status,
                error,
                1.0,
                finished if status == "finished" else None,
                1.0,
                1,
            ),
        )

    def add_metric(
        self, run_id: str, protocol: str, eval_task: str, domain: str, name: str, value
    ) -> None:
        value = None if value is None or (isinstance(value, float) and np.isnan(value)) else value
        self.con.execute(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, protocol, eval_task, domain, name, value),
        )

    def add_accuracy(self, run_id: str, protocol: str, eval_task: str, domain: str, value) -> None:
        self.add_metric(run_id, protocol, eval_task, domain, "zero_shot_accuracy", value)

    def add_measures(self, run_id: str, protocol: str, eval_task: str, domain: str, row: dict):
        for name, value in row.items():
            self.add_metric(run_id, protocol, eval_task, domain, name, value)

    def add_predictions(
        self, run_id: str, protocol: str, eval_task: str, domain: str, correct
    ) -> None:
        """Per-image correct flags, stored as the study runner stores them (numpy.packbits)."""
        correct = np.asarray(correct, dtype=bool)
        self.con.execute(
            "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, protocol, eval_task, domain, len(correct), np.packbits(correct).tobytes()),
        )

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def _task_measures(ss: float, acc: float, rng: np.random.Generator) -> dict:
    row = {name: float(rng.uniform(0.0, 1.0)) for name in MEASURE_FIELDS}
    row.update(
        n_images=40.0,
        n_classes=4.0,
        zero_shot_accuracy=acc,
        balanced_accuracy=acc,
        silhouette_modality=ss,
        acs=0.30 - 0.05 * ss + float(rng.normal(0, 0.02)),
        modality_gap=0.8 + 0.1 * ss + float(rng.normal(0, 0.1)),
    )
    return row


class _Images:
    """The planted test cells: a fixed shuffled latent per image (see the module docstring)."""

    def __init__(self, n_images: int | None, churn: float):
        self.n, self.churn = n_images, churn
        self.rng = np.random.default_rng(2)  # apart from the study's rng: its draws stay the same
        self.latents: dict[tuple[str, str], np.ndarray] = {}

    def flags(self, cell: tuple[str, str], p: float, churned: bool):
        """(flags, accuracy) of a model with planted accuracy p; (None, p) without images."""
        if self.n is None:
            return None, p
        if cell not in self.latents:
            self.latents[cell] = (self.rng.permutation(self.n) + 0.5) / self.n
        u = self.latents[cell]
        if churned and self.churn > 0:
            u = u.copy()
            k = int(round(self.churn * self.n))
            u[self.rng.choice(self.n, size=k, replace=False)] = self.rng.random(k)
        flags = u < p
        return flags, float(flags.mean())


def _write_result(w: StudyWriter, run_id: str, protocol: str, task: str, domain: str, result):
    """Accuracy rows for a domain and for 'overall' (the single domain pooled), plus flags."""
    flags, acc = result
    w.add_accuracy(run_id, protocol, task, domain, acc)
    w.add_accuracy(run_id, protocol, task, "overall", acc)
    if flags is not None:
        w.add_predictions(run_id, protocol, task, domain, flags)


def planted_study(
    folder: str | Path,
    *,
    n_tasks: int = 8,
    seeds: Sequence[int] = (0, 1),
    methods: Sequence[str] = METHODS,
    n_shards: int = 1,
    duplicate_runs: int = 0,
    fail: Sequence[tuple[str, str, int]] = (("full", "t3", 1),),
    model: str = "tiny",
    seed_noise: float = 0.002,
    n_images: int | None = 200,
    churn: float = 0.0,
    effects: dict | None = None,
    forgetting: dict | None = None,
    wall_seconds: float | None = None,
) -> dict:
    """Write a study to `folder` (one database, or `n_shards` shard files); return the truth.

    The truth dict holds per task `ss` and `acc`, the run ids by status, and the effects used
    (EFFECTS, updated by `effects`: method -> planted effects). Each run in `fail` (method,
    task, seed) is recorded failed with a partial metric row and prediction row that must be
    ignored. `duplicate_runs` copies that many finished runs into a second shard file.
    `n_images` test images per (task, domain) cell get per-image predictions (None: no
    predictions table, accuracies exactly as planted); `churn` adds image-level noise to the
    fine-tuned runs. `forgetting` replaces the forgetting suite (task -> zero-shot accuracy).
    `wall_seconds` is stored as the study info key of that name.
    """
    folder = Path(folder)
    rng = np.random.default_rng(1)
    images = _Images(n_images, churn)
    all_effects = {**EFFECTS, **(effects or {})}
    suite = FORGETTING_SUITE if forgetting is None else forgetting
    spec = {"name": "synthetic", "model": model, "seeds": list(seeds), "methods": list(methods)}
    info = {} if wall_seconds is None else {"wall_seconds": str(wall_seconds)}
    options = dict(predictions=n_images is not None, info=info)
    if n_shards == 1:
        writers = [StudyWriter(folder / "study.sqlite", spec, **options)]
    else:
        writers = [
            StudyWriter(
                folder / f"study-shard-{i}-of-{n_shards}.sqlite", spec, f"{i}/{n_shards}", **options
            )
            for i in range(n_shards)
        ]
    tasks = {}
    for t in range(n_tasks):
        ss = 0.2 + 0.6 * t / max(1, n_tasks - 1) + float(rng.normal(0, 0.02))
        acc = 0.95 - 0.8 * ss + float(rng.normal(0, 0.01))
        domains = ["a", "b"] if t < n_tasks - 2 else ["a"]
        domain_acc = {d: acc + (0.02 if d == "a" else -0.02) * (len(domains) > 1) for d in domains}
        domain_ss = {d: ss + (-0.01 if d == "a" else 0.01) * (len(domains) > 1) for d in domains}
        tasks[f"t{t}"] = dict(ss=ss, acc=acc, domains=domains, domain_acc=domain_acc, rows={})
        rows = tasks[f"t{t}"]["rows"]
        rows["overall"] = _task_measures(ss, acc, rng)
        for d in domains:
            rows[d] = _task_measures(domain_ss[d], domain_acc[d], rng)

    truth = {
        "tasks": tasks,
        "effects": all_effects,
        "finished": [],
        "failed": [],
        "seeds": seeds,
        "n_images": n_images,
    }
    fail = set(fail)
    k = 0
    for name, task in tasks.items():
        train = ["a"]
        for seed in seeds:
            for method in methods:
                effect = all_effects[method]
                run_id = f"{name}-{method}-s{seed}"
                writer = writers[k % len(writers)]
                k += 1
                if (method, name, seed) in fail:
                    writer.add_run(
                        run_id,
                        name,
                        train,
                        method,
                        seed,
                        status="failed",
                        error="training loss became NaN at step 12",
                    )
                    writer.add_accuracy(run_id, "id", name, "overall", 0.99)
                    if n_images is not None:
                        writer.add_predictions(run_id, "id", name, "a", np.ones(n_images, bool))
                    truth["failed"].append(run_id)
                    continue
                tuned = method != "zeroshot"
                noise = float(rng.normal(0, seed_noise)) if tuned else 0.0
                x = task["ss"] - 0.5
                id_gain = effect["id"] + effect["id_slope"] * x + noise
                dg_gain = effect["dg"] + noise
                cf_drop = max(0.0, effect["cf"] + effect["cf_slope"] * x + noise)
                results = {("id", name, "a"): (task["domain_acc"]["a"] + id_gain)}
                if len(task["domains"]) > 1:
                    results["dg", name, "b"] = task["domain_acc"]["b"] + dg_gain
                for i, (cf_task, before) in enumerate(suite.items()):
                    # Uneven per task, mean over the suite = cf_drop.
                    drop = cf_drop * (1.5 if i == 0 else 0.5)
                    results["cf_before", cf_task, "test"] = before
                    results["cf_after", cf_task, "test"] = before - drop
                results = {
                    key: images.flags(key[1:], p, tuned and key[0] != "cf_before")
                    for key, p in results.items()
                }
                copies = [writer]
                if duplicate_runs > 0 and len(writers) > 1:
                    copies.append(writers[k % len(writers)])
                    duplicate_runs -= 1
                for w in copies:
                    w.add_run(
                        run_id,
                        name,
                        train,
                        method,
                        seed,
                        config={
                            **default_config(method, seed),
                            "base_model": {"fingerprint": "abc123"},
                        },
                    )
                    for domain, row in task["rows"].items():
                        w.add_measures(run_id, "measure_before", name, domain, row)
                    for (protocol, eval_task, domain), result in results.items():
                        _write_result(w, run_id, protocol, eval_task, domain, result)
                truth["finished"].append(run_id)
    for w in writers:
        w.close()
    return truth


def default_config(method: str, seed: int) -> dict:
    """A run config as the study runner stores it: the zero-shot baseline trains nothing."""
    return {"method": {"name": method}, "train": None if method == "zeroshot" else {"seed": seed}}
