"""Read every study database in a folder into two tables, runs and metrics; per-image
predictions on demand (`load_predictions`)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipgauge.errors import ClipgaugeError
from clipgauge.measures import ACCURACY, OVERALL

__all__ = [
    "ACCURACY",
    "OVERALL",
    "Study",
    "as_study",
    "load_predictions",
    "load_study",
    "unpack_correct",
]
# Status order when one run_id appears in several databases: the most complete copy wins.
_STATUS_RANK = {"finished": 0, "failed": 1, "running": 2}

RUN_COLUMNS = [
    "run_id",
    "task",
    "train_domains",
    "method",
    "seed",
    "config",
    "status",
    "error",
    "started",
    "finished",
    "seconds",
    "attempts",
]
METRIC_COLUMNS = ["run_id", "protocol", "eval_task", "domain", "name", "value"]


@dataclass
class Study:
    """A study folder read back: one row per run (any status) and the metrics of finished runs.

    `runs.train_domains` is a tuple of domain names, `runs.config` a dict; `metrics.value`
    is float with NaN where the database holds NULL. `info` is the `study` key/value table of
    the first database (with `spec` parsed), `databases` the files read, `run_database` the
    index in `databases` of the copy of each run that was kept.
    """

    out_dir: Path
    runs: pd.DataFrame
    metrics: pd.DataFrame
    info: dict = field(default_factory=dict)
    databases: list[Path] = field(default_factory=list)
    run_database: dict[str, int] = field(default_factory=dict)
    # Predictions of a study derived in memory (e.g. WiSE-FT alphas as runs of their own);
    # None: read from the databases.
    predictions: pd.DataFrame | None = None

    @property
    def spec(self) -> dict:
        return self.info.get("spec") or {}

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "finished"]

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.runs["seed"].dropna().unique())

    @property
    def tasks(self) -> list[str]:
        return sorted(self.runs["task"].dropna().unique())

    @property
    def methods(self) -> list[str]:
        return sorted(self.runs["method"].dropna().unique())

    @property
    def baseline(self) -> str | None:
        """The method whose runs trained nothing (stored with no `train` config): the
        zero-shot baseline that gains and drops are measured against."""
        for method, config in zip(self.runs["method"], self.runs["config"], strict=True):
            if isinstance(config, dict) and "train" in config and config["train"] is None:
                return str(method)
        return None

    def spec_name(self) -> str:
        name = self.spec.get("name")
        if name:
            return str(name)
        spec_path = self.info.get("spec_path")
        return Path(spec_path).stem if spec_path else self.out_dir.name

    def model_source(self) -> str | None:
        """The model the study fine-tuned: the spec's resolved `model_source`, else its `model`
        (a relative path taken from the spec file's folder)."""
        model = self.spec.get("model_source") or self.spec.get("model")
        if isinstance(model, dict):
            model = next((model[k] for k in ("path", "name", "source", "id") if model.get(k)), None)
        if not model:
            return None
        model = str(model)
        spec_path = self.info.get("spec_path")
        if spec_path and not Path(model).is_absolute():
            candidate = Path(spec_path).parent / model
            if candidate.exists():
                return str(candidate)
        return model

    def model_fingerprint(self) -> str | None:
        """The base model fingerprint, from the spec or else from any run's stored config."""
        found = _find_key(self.spec.get("model"), "fingerprint")
        if found:
            return str(found)
        for config in self.runs["config"]:
            found = _find_key(config, "fingerprint")
            if found:
                return str(found)
        return None


def _find_key(obj, key: str):
    """First value of `key` in nested dicts/lists, depth first; None if absent."""
    if isinstance(obj, dict):
        if obj.get(key):
            return obj[key]
        children = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for child in children:
        found = _find_key(child, key)
        if found:
            return found
    return None


def study_databases(out_dir: str | Path) -> list[Path]:
    """Every `*.sqlite` file of a study folder (the full study and each shard), sorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ClipgaugeError(
            f"study folder {out_dir} does not exist; run `clipgauge study` first "
            "(or pass the folder it wrote with --out)"
        )
    files = sorted(p for p in out_dir.glob("*.sqlite") if p.is_file())
    if not files:
        raise ClipgaugeError(
            f"study folder {out_dir} holds no study database (*.sqlite); "
            "run `clipgauge study` first"
        )
    return files


def _read_database(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise ClipgaugeError(f"cannot open study database {path}: {err}") from err
    try:
        runs = pd.read_sql_query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs", con)
        metrics = pd.read_sql_query(f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics", con)
        info = dict(con.execute("SELECT key, value FROM study").fetchall())
    except (sqlite3.Error, pd.errors.DatabaseError) as err:
        raise ClipgaugeError(
            f"{path} is not a clipgauge study database ({err}); "
            "remove it from the study folder or rerun `clipgauge study`"
        ) from err
    finally:
        con.close()
    return runs, metrics, info


def _parse_json(text, default):
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def load_study(out_dir: str | Path) -> Study:
    """Union of every database in `out_dir`; a run_id stored twice is kept once.

    Between copies of one run the finished one wins, then the latest; its metrics come from the
    same database, so a run is never mixed from two copies.
    """
    out_dir = Path(out_dir)
    databases = study_databases(out_dir)
    all_runs, all_metrics, info = [], [], {}
    for i, path in enumerate(databases):
        runs, metrics, db_info = _read_database(path)
        runs["database"] = i
        metrics["database"] = i
        all_runs.append(runs)
        all_metrics.append(metrics)
        for key, value in db_info.items():
            info.setdefault(key, value)
    runs = pd.concat(all_runs, ignore_index=True)
    metrics = pd.concat(all_metrics, ignore_index=True)

    runs["status_rank"] = runs["status"].map(_STATUS_RANK).fillna(len(_STATUS_RANK))
    runs = runs.sort_values(
        ["run_id", "status_rank", "finished"], ascending=[True, True, False], na_position="last"
    )
    runs = runs.drop_duplicates("run_id", keep="first").drop(columns="status_rank")
    runs["train_domains"] = [tuple(_parse_json(t, [])) for t in runs["train_domains"]]
    runs["config"] = [_parse_json(c, {}) for c in runs["config"]]
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    runs = runs.sort_values(["task", "method", "seed", "run_id"]).reset_index(drop=True)

    finished = runs.loc[runs["status"] == "finished", ["run_id", "database"]]
    metrics = metrics.merge(finished, on=["run_id", "database"], how="inner")
    metrics["value"] = pd.to_numeric(metrics["value"], errors="coerce").astype(float)
    metrics = metrics.drop(columns="database").reset_index(drop=True)
    run_database = dict(zip(runs["run_id"], runs["database"].astype(int), strict=True))
    runs = runs.drop(columns="database")

    info["spec"] = _parse_json(info.get("spec"), {})
    return Study(
        out_dir=out_dir,
        runs=runs,
        metrics=metrics,
        info=info,
        databases=databases,
        run_database=run_database,
    )


def unpack_correct(blob: bytes, n: int) -> np.ndarray:
    """Per-image correct flags (bool, n) from the `predictions` table's packed form
    (numpy.packbits, big-endian bit order, as the study store writes it)."""
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n).astype(bool)


PREDICTION_COLUMNS = ["run_id", "protocol", "eval_task", "domain", "n", "correct"]


def load_predictions(study: Study) -> pd.DataFrame | None:
    """The `predictions` rows of the study's finished runs, each from the database whose copy
    of the run was kept; `correct` stays packed (see `unpack_correct`).

    None when no database of the study has a predictions table (written before it existed).
    """
    if study.predictions is not None:
        return study.predictions
    finished = set(study.finished["run_id"])
    frames, any_table = [], False
    for i, path in enumerate(study.databases):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            has_table = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
            ).fetchone()
            if not has_table:
                continue
            any_table = True
            rows = con.execute(
                f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions"
            ).fetchall()
        except sqlite3.Error as err:
            raise ClipgaugeError(f"cannot read predictions from {path}: {err}") from err
        finally:
            con.close()
        kept = [r for r in rows if r[0] in finished and study.run_database.get(r[0]) == i]
        frames.append(pd.DataFrame(kept, columns=PREDICTION_COLUMNS))
    if not any_table:
        return None
    table = pd.concat(frames, ignore_index=True)
    table["n"] = table["n"].astype(int)
    return table


def as_study(study_or_dir: Study | str | Path) -> Study:
    """Accept a loaded Study or a study folder."""
    return study_or_dir if isinstance(study_or_dir, Study) else load_study(study_or_dir)
