"""Studies: a YAML spec of tasks, methods and seeds, run resumably into a SQLite database.

`run_study(spec, out_dir)` fine-tunes every method on every task and seed and stores zero-shot
measures, in-domain (ID), domain generalization (DG) and forgetting (CF) results; see
`clipgauge.study.store` for the database. Names are imported on first use, so `clipgauge
--help` does not pay for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SpecError": "spec",
    "StudySpec": "spec",
    "TaskSpec": "spec",
    "load_spec": "spec",
    "shipped_specs": "spec",
    "StudyResult": "runner",
    "run_study": "runner",
    "StudyStore": "store",
    "open_all": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clipgauge.study.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clipgauge.study' has no attribute {name!r}")
