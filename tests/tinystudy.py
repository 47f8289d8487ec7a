"""A tiny two-task study on the tiny CLIP of conftest: folder data, a few seconds per study.

pets: photo/art x cat/dog; food: photo/sketch x hot dog/ice cream; five images per class and
domain, every word in the tiny tokenizer. Each task fine-tunes on photo; the other domain is DG
and the other task is the forgetting suite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from imagegen import make_domainbed

SPEC = """\
name: tiny
model: {model}
tasks:
  pets:
    data: pets
    train_domains: [[photo]]
  food:
    data: food
    train_domains: [[photo]]
methods:
{methods}training:
  epochs: {epochs}
  batch_size: 4
{training}seeds: {seeds}
"""
METRICS_SQL = (
    "SELECT run_id, protocol, eval_task, domain, name, value FROM metrics ORDER BY 1, 2, 3, 4, 5"
)


def write_tiny_study(
    folder: Path,
    model: Path,
    *,
    methods: Sequence[str] = ("bitfit", "clip-adapter"),
    epochs: int = 2,
    seeds: Sequence[int] = (0,),
    training: str = "",
) -> Path:
    """Write the data and `<folder>/study.yaml`; `training` is extra YAML under `training:`."""
    folder.mkdir(parents=True, exist_ok=True)
    make_domainbed(folder / "pets", ["photo", "art"], ["cat", "dog"], per_class=5)
    make_domainbed(folder / "food", ["photo", "sketch"], ["hot_dog", "ice_cream"], per_class=5)
    spec = folder / "study.yaml"
    spec.write_text(
        SPEC.format(
            model=model,
            methods="".join(f"  {m}: {{}}\n" for m in methods),
            epochs=epochs,
            training=training,
            seeds=list(seeds),
        )
    )
    return spec


def query(db: Path, sql: str, *args) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def metric_rows(db: Path) -> list[tuple]:
    """Every stored metric, in a fixed order."""
    return query(db, METRICS_SQL)
