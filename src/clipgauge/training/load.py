"""A finished run read back: its fine-tuned model as a bundle, merged, or WiSE-FT interpolated."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from transformers import CLIPModel

from clipgauge.methods import Method, MethodTask, TunedClip, get_method
from clipgauge.models.loading import DTYPES, ClipBundle, load_clip
from clipgauge.training.run_folder import (
    CONFIG_FILE,
    TRAINED_FILE,
    RunError,
    read_run_config,
    read_trained_tensors,
    trained_digest,
)


def rebuild_run(
    run_dir: Path, device: str | None, model: str | None
) -> tuple[dict, ClipBundle, Method, TunedClip, dict[str, torch.Tensor]]:
    """(run config, base bundle, method, tuned model with trained weights, zero-shot state)."""
    config = read_run_config(run_dir)
    if not (run_dir / TRAINED_FILE).is_file():
        raise RunError(
            f"{run_dir} has no {TRAINED_FILE}: the run did not finish; continue it with "
            "`clipgauge finetune ... --resume`"
        )
    base = config["base_model"]
    if base.get("format") == "open_clip":
        source = model or base["spec"]
    else:
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
    task = MethodTask.of(config["data"]["class_names"], config["templates"], bundle.tokenizer)
    tuned = method.prepare(bundle.model, method.make_config(config["method"]["config"]), task)
    method.load_trained(tuned, read_trained_tensors(run_dir))
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


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise RunError(f"--wise-alpha {alpha} must be in [0, 1] (0 = zero-shot)")


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
    config, bundle, method, tuned, zero_shot = rebuild_run(run_dir, device, model)
    if wise_alpha is not None:
        if not method.changes_base_weights:
            raise RunError(
                f"--wise-alpha interpolates CLIP's own weights with the zero-shot ones, but "
                f"method {method.name} ({method.description}) leaves them unchanged, so there is "
                "nothing to interpolate"
            )
        _check_alpha(wise_alpha)
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
    config, bundle, method, tuned, zero_shot = rebuild_run(run_dir, device, model)
    trained = read_trained_tensors(run_dir)
    if wise_alpha is not None:
        _check_alpha(wise_alpha)
        method.interpolate(tuned, zero_shot, trained.keys(), wise_alpha)
    digest = trained_digest(trained)
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


def other_task_bundle(bundle: ClipBundle) -> ClipBundle:
    """The bundle that embeds OTHER tasks' classes with a run's model (forgetting, a run
    evaluated on another dataset): its method's `other_task_view`, which leaves out what the
    method learned for its own task's classes (a head, learned prompt context). Any other
    bundle comes back as is."""
    method = bundle.info.get("method") if isinstance(bundle.model, TunedClip) else None
    if not method:
        return bundle
    view = get_method(method["name"]).other_task_view(bundle.model)
    if view is bundle.model:
        return bundle
    identity = json.dumps([bundle.fingerprint, "other-task-view"])
    return dataclasses.replace(
        bundle,
        model=view,
        fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:16],
        info={**bundle.info, "other_task_view": True},
    )
