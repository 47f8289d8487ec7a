"""Fine-tuning: one training engine for every method, run folders, evaluation and export.

Modules: `config` (TrainConfig, presets), `engine` (the training loop), `finetuning`, `load`
(a finished run's model, WiSE-FT), `evaluate`, `export`, and `run_folder` (the files of a run).
Names are imported on first use, so importing the package does not pay for torch.
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
    "RunError": "run_folder",
    "RunResult": "finetuning",
    "evaluate_run": "evaluate",
    "export_run": "export",
    "finetune": "finetuning",
    "load_run": "load",
    "merged_model": "load",
    "other_task_bundle": "load",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clipgauge.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clipgauge.training' has no attribute {name!r}")
