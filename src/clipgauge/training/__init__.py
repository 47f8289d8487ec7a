"""Fine-tuning: one training engine for every method, run folders, evaluation and export.

Names are imported on first use, so `clipgauge --help` (which registers the training
subcommands from `clipgauge.training.commands`) does not pay for torch and accelerate.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config",
    "load_presets": "config",
    "resolve_train_config": "config",
    "TrainingDivergedError": "engine",
    "TrainOutcome": "engine",
    "train": "engine",
    "RunError": "runs",
    "RunResult": "runs",
    "evaluate_run": "runs",
    "export_run": "runs",
    "finetune": "runs",
    "load_run": "runs",
    "merged_model": "runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clipgauge.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clipgauge.training' has no attribute {name!r}")
