"""`finetune`: train a registered method on a dataset and write a run folder."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.utils import set_seed

from clipgauge import __version__
from clipgauge.cache import atomic_save_tensors
from clipgauge.data.dataset import ImageDataset
from clipgauge.data.open import open_dataset
from clipgauge.data.splits import holdout, split_train_test
from clipgauge.embeddings import preprocessing_config
from clipgauge.methods import MethodTask, count_parameters, get_method
from clipgauge.models.loading import ClipBundle, load_clip
from clipgauge.pixels import PixelCache
from clipgauge.prompts import templates_for
from clipgauge.training.config import AUTO_PRESET, TrainConfig, resolve_train_config
from clipgauge.training.engine import CHECKPOINT_DIR, resolve_runtime, train
from clipgauge.training.run_folder import (
    CONFIG_FILE,
    RESULT_FILE,
    RESUME_KEYS,
    TRAINED_FILE,
    RunError,
    lookup,
    read_json,
    trained_digest,
    write_json,
)

SPLITS = ("train", "all")


@dataclass
class RunResult:
    """What `finetune` returns (and what result.json records)."""

    run_dir: Path
    method: str
    best_epoch: int
    best_val_accuracy: float | None
    steps: int
    trainable_parameters: int
    trained_digest: str
    device: str
    metrics: list[dict]
    config: dict


def _training_data(
    data: str | ImageDataset,
    train_domains: Sequence[str] | None,
    split: str,
    test_fraction: float,
    split_seed: int,
    config: TrainConfig,
) -> tuple[ImageDataset, ImageDataset | None, dict]:
    """(training images, validation images or None, data record for config.json)."""
    if split not in SPLITS:
        raise RunError(f"split {split!r}: train on `train` (the train side) or `all` images")
    dataset = data if isinstance(data, ImageDataset) else open_dataset(data)
    domains = list(train_domains) if train_domains else list(dataset.domain_names)
    dataset = dataset.select_domains(domains)
    if split == "train":
        dataset, _ = split_train_test(dataset, test_fraction=test_fraction, seed=split_seed)
    val = None
    if config.val_fraction > 0:
        rest, held = holdout(
            dataset, fraction=config.val_fraction, max_items=config.val_max, seed=split_seed
        )
        if len(held) > 0:
            dataset, val = rest, held
    if len(dataset) == 0:
        raise RunError(f"no training images in domain(s) {', '.join(domains)}")
    record = {
        "source": dataset.source,
        "train_domains": domains,
        "split": split,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "class_names": list(dataset.class_names),
        "train_fingerprint": dataset.fingerprint(),
        "n_train": len(dataset),
        "n_val": len(val) if val is not None else 0,
    }
    return dataset, val, record


def finetune(
    model: str | ClipBundle,
    data: str | ImageDataset,
    train_domains: Sequence[str] | None,
    method: str,
    method_options: Mapping[str, Any] | None = None,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path = "run",
    templates: str | Sequence[str] | None = None,
    resume: bool = False,
    *,
    preset: str | None = AUTO_PRESET,
    split: str = "train",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    device: str | None = None,
    dtype: str = "fp32",
    keep_checkpoint: bool = False,
    progress: bool = True,
    pixel_cache: PixelCache | None = None,
) -> RunResult:
    """Fine-tune a CLIP model with a registered method and write a run folder.

    Trains on the `train` side of the deterministic per-domain split of `train_domains` (so
    `evaluate_run` can report in-domain accuracy on unseen images), minus a validation
    holdout. `train_config` is a TrainConfig used as is, or a mapping of options applied over
    the `preset`. A ClipBundle passed as `model` is copied, not modified.
    """
    out = Path(out_dir)
    _check_out(out, resume)
    if resume and (out / RESULT_FILE).exists():
        return _result_from_disk(out)
    _check_device(device)
    method_impl = get_method(method)
    method_config = method_impl.make_config(method_options)
    # Loaded on the CPU: accelerate moves it to each process's own device.
    bundle = model if isinstance(model, ClipBundle) else load_clip(model, device="cpu", dtype=dtype)
    config, preset_used = _train_config(train_config, method, preset, bundle.name)
    train_set, val_set, data_record = _training_data(
        data, train_domains, split, test_fraction, split_seed, config
    )
    template_list = templates_for(templates, train_set)
    run_config = {
        "clipgauge_version": __version__,
        "method": {"name": method_impl.name, "config": _asdict(method_config)},
        "train": config.to_dict(),
        "preset": preset_used,
        "seed": config.seed,
        "data": data_record,
        "templates": template_list,
        "preprocessing": preprocessing_config(bundle.image_processor),
        "base_model": bundle.provenance(),
        # What "auto" options settled to on this machine (the `train` values are as asked).
        "runtime": resolve_runtime(config, cpu=device == "cpu"),
    }
    _write_config(out, run_config, resume)
    clip_model = copy.deepcopy(bundle.model) if isinstance(model, ClipBundle) else bundle.model
    set_seed(config.seed)
    task = MethodTask.of(train_set.class_names, template_list, bundle.tokenizer)
    tuned = method_impl.prepare(clip_model, method_config, task)
    outcome = train(
        tuned,
        method_impl,
        train_set,
        val_set,
        tokenizer=bundle.tokenizer,
        image_processor=bundle.image_processor,
        templates=template_list,
        config=config,
        run_dir=out,
        resume=resume,
        cpu=device == "cpu",
        progress=progress,
        tracker_config={"method": method_impl.name, **config.to_dict()},
        pixel_cache=pixel_cache,
        runtime=run_config["runtime"],
    )
    result = _write_result(out, method_impl.name, tuned, outcome, keep_checkpoint)
    return RunResult(run_dir=out, metrics=outcome.metrics, config=run_config, **result)


def _train_config(
    train_config: TrainConfig | Mapping[str, Any] | None, method: str, preset, model_name: str
) -> tuple[TrainConfig, str | None]:
    """A TrainConfig given is used as is; options are applied over the preset."""
    if isinstance(train_config, TrainConfig):
        return train_config, None
    return resolve_train_config(method, train_config, preset, model_name)


def _check_out(out: Path, resume: bool) -> None:
    if not resume and (out / CONFIG_FILE).exists():
        raise RunError(f"{out} already holds a run; use --resume to continue it or a new --out")
    if resume and not (out / CONFIG_FILE).exists():
        raise RunError(f"nothing to resume: {out} has no {CONFIG_FILE}")


def _check_device(device: str | None) -> None:
    if device not in (None, "auto", "cpu", "cuda"):
        raise RunError(
            f"--device {device}: finetune lets accelerate place the model; give cpu to force "
            "the CPU, and choose GPUs with CUDA_VISIBLE_DEVICES or `accelerate launch`"
        )


def _write_config(out: Path, run_config: dict, resume: bool) -> None:
    """config.json of a new run (main process); a resumed run's must match what is asked."""
    state = PartialState()
    if resume:
        _check_resumable(read_json(out / CONFIG_FILE), run_config, out)
    elif state.is_main_process:
        write_json(out / CONFIG_FILE, run_config)
    state.wait_for_everyone()


def _write_result(out: Path, method: str, tuned, outcome, keep_checkpoint: bool) -> dict:
    """Write the best epoch's tensors and result.json (main process); return the result."""
    state = PartialState()
    trainable, _ = count_parameters(tuned)
    digest = trained_digest(outcome.best_state)
    result = {
        "method": method,
        "best_epoch": outcome.best_epoch,
        "best_val_accuracy": outcome.best_val_accuracy,
        "steps": outcome.steps,
        "trainable_parameters": trainable,
        "trained_digest": digest,
        "device": outcome.device,
    }
    if state.is_main_process:
        atomic_save_tensors(
            out / TRAINED_FILE,
            outcome.best_state,
            {"method": method, "epoch": outcome.best_epoch, "digest": digest},
        )
        write_json(out / RESULT_FILE, result)
        if not keep_checkpoint:
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    state.wait_for_everyone()
    return result


def _asdict(config) -> dict:
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def _check_resumable(stored: dict, current: dict, out: Path) -> None:
    differences = [
        key
        for key in RESUME_KEYS
        if json.dumps(lookup(stored, key), sort_keys=True, default=str)
        != json.dumps(lookup(current, key), sort_keys=True, default=str)
    ]
    if differences:
        raise RunError(
            f"cannot resume {out}: {', '.join(differences)} differ from the interrupted run's "
            f"{CONFIG_FILE}; resume with the same options, or start a new --out"
        )


def _result_from_disk(out: Path) -> RunResult:
    result = read_json(out / RESULT_FILE)
    metrics_path = out / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    return RunResult(run_dir=out, metrics=metrics, config=read_json(out / CONFIG_FILE), **result)
