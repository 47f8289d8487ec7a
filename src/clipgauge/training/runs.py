"""Fine-tuning runs on disk: train one, load one back, evaluate it, export it.

A run folder holds
  config.json          everything that decided the run (method and its options, training
                       options, data and split, templates, preprocessing, seed, base model)
  metrics.jsonl        one line per epoch
  trained.safetensors  ONLY the tensors the method trained (best epoch)
  result.json          best epoch, its validation accuracy, digest of the trained tensors
  checkpoint/          while training: the last finished epoch, for `--resume`
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPModel

from clipgauge import __version__
from clipgauge.cache import TensorCache, atomic_save_tensors, atomic_write_bytes
from clipgauge.data.dataset import ImageDataset
from clipgauge.embeddings import embed_dataset, preprocessing_config
from clipgauge.errors import ClipgaugeError
from clipgauge.methods import Method, TunedClip, count_parameters, get_method
from clipgauge.models.loading import DTYPES, ClipBundle, load_clip
from clipgauge.prompts import load_templates, templates_for
from clipgauge.task_measures import MeasureReport, measure_embeddings
from clipgauge.training.config import AUTO_PRESET, TrainConfig, resolve_train_config
from clipgauge.training.engine import CHECKPOINT_DIR, train

CONFIG_FILE = "config.json"
TRAINED_FILE = "trained.safetensors"
RESULT_FILE = "result.json"
SPLITS = ("train", "all")
# What must agree between a run's config.json and a --resume of it.
RESUME_KEYS = ("method", "train", "data", "templates", "base_model.fingerprint")
# What loading a run back reads from its config.json.
LOAD_KEYS = (
    "base_model.path",
    "base_model.name",
    "base_model.dtype",
    "base_model.fingerprint",
    "method.name",
    "method.config",
    "data.split",
    "data.split_seed",
    "data.test_fraction",
    "data.train_domains",
    "templates",
)


class RunError(ClipgaugeError):
    """A run folder is missing, unfinished, or does not match what is asked of it."""


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


def trained_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of trained tensors."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; is {path.parent} a clipgauge run folder?") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{path} is unreadable ({err})") from err


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())


def _has(config: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return False
        config = config[part]
    return True


def _run_config(run_dir: Path) -> dict:
    """A run's config.json, checked to hold everything loading the run reads."""
    path = run_dir / CONFIG_FILE
    config = _json(path)
    missing = [key for key in LOAD_KEYS if not _has(config, key)]
    if missing:
        raise RunError(
            f"{path} lacks {', '.join(missing)}: it is damaged or was not written by "
            "`clipgauge finetune`; train the run again into a new --out"
        )
    return config


def _trained_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's trained tensors, read only as safetensors."""
    path = run_dir / TRAINED_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise RunError(
            f"{path} is not a readable safetensors file ({err}); the run's weights are damaged "
            "or were replaced: train the run again into a new --out"
        ) from None


def _lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config


def _training_data(
    data: str | ImageDataset,
    train_domains: Sequence[str] | None,
    split: str,
    test_fraction: float,
    split_seed: int,
    config: TrainConfig,
) -> tuple[ImageDataset, ImageDataset | None, dict]:
    """(training images, validation images or None, data record for config.json)."""
    from clipgauge.data.open import open_dataset
    from clipgauge.data.splits import holdout, split_train_test

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
) -> RunResult:
    """Fine-tune a CLIP model with a registered method and write a run folder.

    Trains on the `train` side of the deterministic per-domain split of `train_domains` (so
    `evaluate_run` can report in-domain accuracy on unseen images), minus a validation
    holdout. `train_config` is a TrainConfig used as is, or a mapping of options applied over
    the `preset`. A ClipBundle passed as `model` is copied, not modified.
    """
    from accelerate import PartialState
    from accelerate.utils import set_seed

    out = Path(out_dir)
    if not resume and (out / CONFIG_FILE).exists():
        raise RunError(f"{out} already holds a run; use --resume to continue it or a new --out")
    if resume and not (out / CONFIG_FILE).exists():
        raise RunError(f"nothing to resume: {out} has no {CONFIG_FILE}")
    if resume and (out / RESULT_FILE).exists():
        return _result_from_disk(out)
    if device not in (None, "auto", "cpu", "cuda"):
        raise RunError(
            f"--device {device}: finetune lets accelerate place the model; give cpu to force "
            "the CPU, and choose GPUs with CUDA_VISIBLE_DEVICES or `accelerate launch`"
        )
    method_impl = get_method(method)
    method_config = method_impl.make_config(method_options)
    # Loaded on the CPU: accelerate moves it to each process's own device.
    bundle = model if isinstance(model, ClipBundle) else load_clip(model, device="cpu", dtype=dtype)
    if isinstance(train_config, TrainConfig):
        config, preset_used = train_config, None
    else:
        config, preset_used = resolve_train_config(method, train_config, preset, bundle.name)
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
    }
    state = PartialState()
    if resume:
        _check_resumable(_json(out / CONFIG_FILE), run_config, out)
    elif state.is_main_process:
        _write_json(out / CONFIG_FILE, run_config)
    state.wait_for_everyone()

    clip_model = copy.deepcopy(bundle.model) if isinstance(model, ClipBundle) else bundle.model
    set_seed(config.seed)
    tuned = method_impl.prepare(clip_model, method_config)
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
    )
    trainable, _ = count_parameters(tuned)
    digest = trained_digest(outcome.best_state)
    result = {
        "method": method_impl.name,
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
            {"method": method_impl.name, "epoch": outcome.best_epoch, "digest": digest},
        )
        _write_json(out / RESULT_FILE, result)
        if not keep_checkpoint:
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    state.wait_for_everyone()
    return RunResult(run_dir=out, metrics=outcome.metrics, config=run_config, **result)


def _asdict(config) -> dict:
    import dataclasses

    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def _check_resumable(stored: dict, current: dict, out: Path) -> None:
    differences = [
        key
        for key in RESUME_KEYS
        if json.dumps(_lookup(stored, key), sort_keys=True, default=str)
        != json.dumps(_lookup(current, key), sort_keys=True, default=str)
    ]
    if differences:
        raise RunError(
            f"cannot resume {out}: {', '.join(differences)} differ from the interrupted run's "
            f"{CONFIG_FILE}; resume with the same options, or start a new --out"
        )


def _result_from_disk(out: Path) -> RunResult:
    result = _json(out / RESULT_FILE)
    metrics_path = out / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    return RunResult(run_dir=out, metrics=metrics, config=_json(out / CONFIG_FILE), **result)


def _rebuild(
    run_dir: Path, device: str | None, model: str | None
) -> tuple[dict, ClipBundle, Method, TunedClip, dict[str, torch.Tensor]]:
    """(run config, base bundle, method, tuned model with trained weights, zero-shot state)."""
    config = _run_config(run_dir)
    if not (run_dir / TRAINED_FILE).is_file():
        raise RunError(
            f"{run_dir} has no {TRAINED_FILE}: the run did not finish; continue it with "
            "`clipgauge finetune ... --resume`"
        )
    base = config["base_model"]
    source = model or (base["path"] if Path(base["path"]).exists() else base["name"])
    dtype = {str(v).removeprefix("torch."): k for k, v in DTYPES.items()}.get(base["dtype"])
    if dtype is None:
        raise RunError(f"{run_dir / CONFIG_FILE}: base_model.dtype {base['dtype']!r} is unknown")
    bundle = load_clip(source, device=device, dtype=dtype)
    if bundle.fingerprint != base["fingerprint"]:
        raise RunError(
            f"the base model {source} (fingerprint {bundle.fingerprint}) is not the one run "
            f"{run_dir} was trained from ({base['name']}, fingerprint {base['fingerprint']}); "
            "pass the original checkpoint with --model"
        )
    zero_shot = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    method = get_method(config["method"]["name"])
    tuned = method.prepare(bundle.model, method.make_config(config["method"]["config"]))
    method.load_trained(tuned, _trained_tensors(run_dir))
    tuned.to(bundle.device).eval()
    for param in tuned.parameters():
        param.requires_grad_(False)
    return config, bundle, method, tuned, zero_shot


def _wise(merged: CLIPModel, zero_shot: dict[str, torch.Tensor], alpha: float) -> CLIPModel:
    """WiSE-FT: (1 - alpha) * zero-shot + alpha * fine-tuned, for every float tensor."""
    state = merged.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if value.is_floating_point():
                value.copy_(torch.lerp(zero_shot[key].to(value), value, alpha))
    return merged


def merged_model(
    run_dir: str | Path,
    *,
    wise_alpha: float | None = None,
    device: str | None = None,
    model: str | None = None,
) -> tuple[CLIPModel, ClipBundle, dict]:
    """(plain CLIPModel equal to the run's model, base bundle, run config).

    With `wise_alpha`, CLIP's weights are interpolated with the zero-shot ones (WiSE-FT):
    alpha 0 gives the zero-shot model, 1 the fine-tuned one. Raises NotMergeableError for
    methods whose trained model is not a CLIPModel.
    """
    run_dir = Path(run_dir)
    config, bundle, method, tuned, zero_shot = _rebuild(run_dir, device, model)
    if wise_alpha is not None:
        if not method.changes_base_weights:
            raise RunError(
                f"--wise-alpha interpolates CLIP's own weights with the zero-shot ones, but "
                f"method {method.name} ({method.description}) leaves them unchanged, so there is "
                "nothing to interpolate"
            )
        if not 0.0 <= wise_alpha <= 1.0:
            raise RunError(f"--wise-alpha {wise_alpha} must be in [0, 1] (0 = zero-shot)")
    merged = method.merge(tuned)
    if wise_alpha is not None:
        merged = _wise(merged, zero_shot, wise_alpha)
    return merged.eval(), bundle, config


def load_run(
    run_dir: str | Path,
    device: str | None = None,
    *,
    model: str | None = None,
    wise_alpha: float | None = None,
) -> ClipBundle:
    """The fine-tuned model of a run as a ClipBundle (usable by every embedding/measure API).

    Rebuilds the base model (`model` overrides where it is looked for; its fingerprint must
    match the run's), applies the method and loads the trained tensors. The bundle's
    fingerprint combines the base fingerprint, method config and trained-tensor digest.
    """
    run_dir = Path(run_dir)
    if wise_alpha is None:
        config, bundle, _, tuned, _ = _rebuild(run_dir, device, model)
    else:
        merged, bundle, config = merged_model(
            run_dir, wise_alpha=wise_alpha, device=device, model=model
        )
        tuned = TunedClip(merged)
    digest = trained_digest(_trained_tensors(run_dir))
    identity = json.dumps(
        [bundle.fingerprint, config["method"], digest, wise_alpha], sort_keys=True
    )
    method_name = config["method"]["name"]
    return ClipBundle(
        model=tuned,
        tokenizer=bundle.tokenizer,
        image_processor=bundle.image_processor,
        device=bundle.device,
        dtype=bundle.dtype,
        name=f"{bundle.name}+{method_name}",
        path=run_dir.resolve(),
        fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:16],
        info={
            "run": str(run_dir.resolve()),
            "method": config["method"],
            "trained_digest": digest,
            "wise_alpha": wise_alpha,
            "base_model": bundle.provenance(),
        },
    )


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    wise_alpha: float | None = None,
    device: str | None = "cpu",
) -> Path:
    """Write the run's model as a full Hugging Face checkpoint (CLIPModel.from_pretrained
    loads it), with the base model's tokenizer and image processor."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} is not empty; give a new folder for the export")
    merged, bundle, config = merged_model(run_dir, wise_alpha=wise_alpha, device=device)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    bundle.tokenizer.save_pretrained(out)
    bundle.image_processor.save_pretrained(out)
    provenance = {
        "run": str(Path(run_dir).resolve()),
        "method": config["method"],
        "wise_alpha": wise_alpha,
        "base_model": config["base_model"],
        "clipgauge_version": __version__,
    }
    _write_json(out / "clipgauge_export.json", provenance)
    return out


def evaluate_run(
    run_dir: str | Path,
    data: str | ImageDataset,
    *,
    domains: Sequence[str] | None = None,
    split: str = "auto",
    templates: str | Sequence[str] | None = None,
    cache: TensorCache | None = None,
    device: str | None = None,
    model: str | None = None,
    wise_alpha: float | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> MeasureReport:
    """Accuracy and every measure per domain for the fine-tuned model of a run.

    `split="auto"` evaluates the run's training domains on the test side of the run's own
    train/test split (images it never saw) and every other domain on all its images;
    `all`, `train` and `test` apply to every domain alike. Templates default to the run's.
    """
    from clipgauge.data.open import open_dataset
    from clipgauge.data.splits import select_split, split_train_test

    bundle = load_run(run_dir, device, model=model, wise_alpha=wise_alpha)
    config = _run_config(Path(run_dir))
    record = config["data"]
    dataset = data if isinstance(data, ImageDataset) else open_dataset(data, domains=domains)
    if isinstance(data, ImageDataset) and domains:
        dataset = dataset.select_domains(domains)
    split_options = {"seed": record["split_seed"], "test_fraction": record["test_fraction"]}
    if split == "auto" and record["split"] == "train":
        trained_on = set(record["train_domains"])
        _, test = split_train_test(dataset, **split_options)
        unseen = {it.path for it in test.items}
        keep = [
            i
            for i, it in enumerate(dataset.items)
            if dataset.domain_names[it.domain] not in trained_on or it.path in unseen
        ]
        dataset = dataset.subset(keep, splits=[{"name": "auto", **split_options}])
    elif split == "auto":
        # The run trained on every image of its domains: no unseen in-domain images exist.
        split_options["note"] = "run trained on all images; its training domains include them"
    else:
        dataset = select_split(dataset, split, **split_options)
    template_list = load_templates(templates) if templates else config["templates"]
    embeddings = embed_dataset(
        bundle,
        dataset,
        template_list,
        cache=cache,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    report = measure_embeddings(embeddings)
    report.provenance["split"] = {"split": split, **split_options}
    report.provenance["run"] = bundle.info
    return report
