"""Synthetic study databases (the schema `clipgauge study` writes) with known, planted effects.

`StudyWriter` writes rows one by one (for hand-computed tests); `planted_study` writes a whole
study whose truth is returned: silhouette_modality decides zero-shot accuracy across tasks,
aclip has the best balance score, lora the smallest forgetting, bitfit forgets more on harder
tasks, and one run fails.
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

    def __init__(self, path: str | Path, spec: dict | None = None, shard: str = "0/1"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path)
        self.con.executescript(SCHEMA)
        spec = spec or {"name": "synthetic", "model": "tiny"}
        info = {
            "spec": json.dumps(spec),
            "spec_path": str(self.path.parent / "synthetic.yaml"),
            "shard": shard,
            "clipgauge_version": "0.1.0",
            "created": "2024-01-01T00:00:00",
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
) -> dict:
    """Write a study to `folder` (one database, or `n_shards` shard files); return the truth.

    The truth dict holds per task `ss` and `acc`, the run ids by status, and EFFECTS. Each run
    in `fail` (method, task, seed) is recorded failed with a partial metric row that must be
    ignored. `duplicate_runs` copies that many finished runs into a second shard file.
    """
    folder = Path(folder)
    rng = np.random.default_rng(1)
    spec = {"name": "synthetic", "model": model, "seeds": list(seeds), "methods": list(methods)}
    if n_shards == 1:
        writers = [StudyWriter(folder / "study.sqlite", spec)]
    else:
        writers = [
            StudyWriter(folder / f"study-shard-{i}-of-{n_shards}.sqlite", spec, f"{i}/{n_shards}")
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

    truth = {"tasks": tasks, "effects": EFFECTS, "finished": [], "failed": [], "seeds": seeds}
    fail = set(fail)
    k = 0
    for name, task in tasks.items():
        train = ["a"]
        for seed in seeds:
            for method in methods:
                effect = EFFECTS[method]
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
                    truth["failed"].append(run_id)
                    continue
                noise = 0.0 if method == "zeroshot" else float(rng.normal(0, seed_noise))
                x = task["ss"] - 0.5
                id_gain = effect["id"] + effect["id_slope"] * x + noise
                dg_gain = effect["dg"] + noise
                cf_drop = max(0.0, effect["cf"] + effect["cf_slope"] * x + noise)
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
                    base_id = task["domain_acc"]["a"]
                    w.add_accuracy(run_id, "id", name, "a", base_id + id_gain)
                    w.add_accuracy(run_id, "id", name, "overall", base_id + id_gain)
                    if len(task["domains"]) > 1:
                        base_dg = task["domain_acc"]["b"]
                        w.add_accuracy(run_id, "dg", name, "b", base_dg + dg_gain)
                        w.add_accuracy(run_id, "dg", name, "overall", base_dg + dg_gain)
                    for i, (cf_task, before) in enumerate(FORGETTING_SUITE.items()):
                        # Uneven per task, mean over the suite = cf_drop.
                        drop = cf_drop * (1.5 if i == 0 else 0.5)
                        w.add_accuracy(run_id, "cf_before", cf_task, "overall", before)
                        w.add_accuracy(run_id, "cf_after", cf_task, "overall", before - drop)
                truth["finished"].append(run_id)
    for w in writers:
        w.close()
    return truth


def default_config(method: str, seed: int) -> dict:
    """A run config as the study runner stores it: the zero-shot baseline trains nothing."""
    return {"method": {"name": method}, "train": None if method == "zeroshot" else {"seed": seed}}
