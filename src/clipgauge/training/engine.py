"""The one training loop every method shares.

loss = cross-entropy over logit_scale.exp() * cos(image, class prompt), one prompt per class and
template (templates averaged per class). The method decides what trains; this loop only asks it
whether the text side trains (then class prompts are re-encoded every step, with gradients) and
how to copy out and restore its trained tensors (best epoch, checkpoints).

Hugging Face accelerate places the model, runs mixed precision and gradient accumulation, and
shards batches across processes, so `accelerate launch -m clipgauge finetune ...` works as is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from clipgauge.cache import atomic_write_bytes
from clipgauge.data.dataset import ImageDataset
from clipgauge.errors import ClipgaugeError
from clipgauge.interruption import pause_point
from clipgauge.methods.base import Method, TunedClip
from clipgauge.prompts import class_prompts
from clipgauge.training.checkpoint import load_checkpoint, save_checkpoint, set_rng_states
from clipgauge.training.config import TrainConfig, TrainConfigError

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"


class TrainingDivergedError(ClipgaugeError):
    """The loss became NaN or infinite."""


class LabelledPixels(torch.utils.data.Dataset):
    """(preprocessed pixels, class index) per item, with the model's own image processor."""

    def __init__(self, dataset: ImageDataset, image_processor):
        self.dataset = dataset
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.dataset.load_image(index)
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixels, self.dataset.items[index].label


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch): resuming at any epoch sees the same
    order as an uninterrupted run, and every process draws the same one."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


@dataclass
class TrainOutcome:
    """What training produced: the kept (best-epoch) trained tensors and the history."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float | None
    metrics: list[dict]
    steps: int
    device: str


def is_better(
    accuracy: float | None, loss: float | None, best_accuracy: float | None, best_loss: float | None
) -> bool:
    """Whether an epoch beats the best so far: higher validation accuracy, or the same accuracy
    and a lower validation loss (small validation sets tie often; the first epoch of a tie is
    rarely the better model). Without validation every epoch wins: the last one is kept."""
    if accuracy is None or best_accuracy is None:
        return True
    if accuracy != best_accuracy:
        return accuracy > best_accuracy
    return best_loss is None or (loss is not None and loss < best_loss)


def tokenize_prompts(
    tokenizer, class_names: Sequence[str], templates: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of every class prompt, template-major (T*C rows)."""
    prompts = [p for row in class_prompts(class_names, templates) for p in row]
    tokens = tokenizer(
        prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total` (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _loader(dataset: ImageDataset, image_processor, config: TrainConfig, sampler=None):
    return torch.utils.data.DataLoader(
        LabelledPixels(dataset, image_processor),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
    )


@torch.no_grad()
def _validate(accelerator, model, loader, class_embeds) -> tuple[float, float]:
    """(accuracy, mean loss) over a validation loader, gathered over processes."""
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    for pixels, labels in loader:
        logits = model(pixels, class_embeds=class_embeds).float()
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
    return correct / max(count, 1), loss_sum / max(count, 1)


def _check_tracker(log_with: str | None) -> None:
    """accelerate only warns when a tracker is missing and then logs nowhere: fail instead."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {
        "tensorboard": is_tensorboard_available(),
        "wandb": is_wandb_available(),
        "mlflow": is_mlflow_available(),
    }
    if log_with == "all" and not any(available.values()):
        raise TrainConfigError("--log-with all: none of tensorboard, wandb, mlflow is installed")
    if log_with in available and not available[log_with]:
        raise TrainConfigError(
            f"--log-with {log_with} needs the {log_with} package; install it (pip install "
            f"{log_with}) or leave --log-with out (metrics.jsonl is always written)"
        )


def _accelerator(config: TrainConfig, run_dir: Path, cpu: bool) -> Accelerator:
    options = {
        "cpu": cpu,
        "mixed_precision": config.mixed_precision,
        "gradient_accumulation_steps": config.grad_accum,
        "log_with": config.log_with,
        "project_dir": str(run_dir),
    }
    try:
        return Accelerator(**options)
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        # A second run in the same Python process (a notebook) with another mixed precision:
        # accelerate keeps per-process settings in a singleton. Reset those, keeping the
        # distributed state (process group) as it is.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**options)


def _write_metrics(path: Path, metrics: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(m) + "\n" for m in metrics).encode())


def train(
    tuned: TunedClip,
    method: Method,
    train_set: ImageDataset,
    val_set: ImageDataset | None,
    *,
    tokenizer,
    image_processor,
    templates: Sequence[str],
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    cpu: bool = False,
    progress: bool = True,
    tracker_config: dict | None = None,
) -> TrainOutcome:
    """Train `tuned` (already prepared by `method`, seeded) and keep the best epoch's tensors.

    Writes `metrics.jsonl` and an epoch checkpoint into `run_dir`. With `resume`, continues
    from that checkpoint. Best epoch = highest validation accuracy (the first on ties); without
    a validation set, the last epoch. `cpu` keeps training on the CPU even when a GPU exists.
    """
    run_dir = Path(run_dir)
    _check_tracker(config.log_with)
    accelerator = _accelerator(config, run_dir, cpu)
    if config.log_with:
        hparams = tracker_config or config.to_dict()
        # Trackers (TensorBoard hparams) take only scalars.
        hparams = {
            k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
            for k, v in hparams.items()
            if v is not None
        }
        accelerator.init_trackers("clipgauge", config=hparams)
    main = accelerator.is_main_process
    class_names = train_set.class_names
    max_length = int(tuned.config.text_config.max_position_embeddings)
    prompts = tokenize_prompts(tokenizer, class_names, templates, max_length)
    prompts = {k: v.to(accelerator.device) for k, v in prompts.items()}
    num_templates = len(templates)

    sampler = EpochShuffle(len(train_set), config.seed)
    train_loader = _loader(train_set, image_processor, config, sampler)
    val_loader = _loader(val_set, image_processor, config) if val_set is not None else None
    params = [p for p in tuned.parameters() if p.requires_grad]
    raw_optimizer = make_optimizer(params, config) if params else None

    if params:
        model, optimizer, train_loader = accelerator.prepare(tuned, raw_optimizer, train_loader)
    else:
        model, optimizer = accelerator.prepare(tuned), None
    # Counted on the prepared loader: with N processes each sees 1/N of the batches.
    steps_per_epoch = max(1, math.ceil(len(train_loader) / config.grad_accum))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch) if params else 0
    warmup = config.warmup_steps or int(config.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        return lr_factor(step, warmup, total_steps, config.schedule)

    # Stepped by hand once per optimizer step (not prepared: accelerate would step it once
    # per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(raw_optimizer, schedule) if params else None
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    unwrapped: TunedClip = accelerator.unwrap_model(model)
    trains_text = method.trains_text_tower(unwrapped)

    def class_embeds_now() -> torch.Tensor:
        with torch.no_grad(), accelerator.autocast():
            return unwrapped.encode_classes(**prompts, num_templates=num_templates)

    metrics_path = run_dir / METRICS_FILE
    start_epoch, step, metrics = 0, 0, []
    # Replaced after the first epoch; kept as is only when nothing trains (zeroshot).
    best_state, best_epoch, best_val = ({} if params else method.trained_state(unwrapped)), 0, None
    best_loss = None
    if resume:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_DIR)
        method.load_trained(unwrapped, checkpoint["trained"])
        if optimizer is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, step = checkpoint["epoch"], checkpoint["scalars"]["step"]
        best_epoch = checkpoint["scalars"]["best_epoch"]
        best_state = checkpoint["trained"] if best_epoch == start_epoch else checkpoint["best"]
        best_val = checkpoint["scalars"]["best_val_accuracy"]
        best_loss = checkpoint["scalars"].get("best_val_loss")
        if metrics_path.is_file():
            lines = metrics_path.read_text().splitlines()
            metrics = [m for m in map(json.loads, lines) if m["epoch"] <= start_epoch]
        set_rng_states(checkpoint["rng"])
    elif val_loader is not None:
        # Epoch 0: the untrained model's validation accuracy, for reference.
        accuracy, loss = _validate(accelerator, model, val_loader, class_embeds_now())
        metrics.append({"epoch": 0, "step": 0, "val_accuracy": accuracy, "val_loss": loss})
        if main:
            _write_metrics(metrics_path, metrics)

    fixed_class_embeds = None if trains_text else class_embeds_now()
    pause_point("train-start")
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=step,
        desc=f"{method.name}",
        unit="step",
        disable=not (progress and main),
    )
    for epoch in range(start_epoch + 1, epochs + 1):
        started = time.perf_counter()
        model.train()
        train_loader.set_epoch(epoch)
        loss_sum, batches = torch.zeros((), device=accelerator.device), 0
        for batch, (pixels, labels) in enumerate(train_loader):
            if step >= total_steps:
                break
            with accelerator.accumulate(model):
                if trains_text:
                    logits = model(pixels, **prompts, num_templates=num_templates)
                else:
                    logits = model(pixels, class_embeds=fixed_class_embeds)
                loss = F.cross_entropy(logits.float(), labels)
                # Every process checks every process's loss, so all stop together.
                if not torch.isfinite(accelerator.gather(loss.detach().reshape(1))).all():
                    raise TrainingDivergedError(
                        f"the loss became {loss.item()} at step {step + 1} (epoch {epoch}, "
                        f"batch {batch + 1}, lr {scheduler.get_last_lr()[0]:.3g}); "
                        "lower --lr, add --warmup, or use fp32"
                    )
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                    step += 1
                    bar.update(1)
                optimizer.zero_grad()
            loss_sum += loss.detach()
            batches += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", val_acc=_fmt(best_val))

        train_loss = float(accelerator.reduce(loss_sum, "mean")) / max(batches, 1)
        record = {"epoch": epoch, "step": step, "train_loss": train_loss}
        record["lr"] = scheduler.get_last_lr()[0]
        val_accuracy = val_loss = None
        if val_loader is not None:
            class_embeds = class_embeds_now() if trains_text else fixed_class_embeds
            val_accuracy, val_loss = _validate(accelerator, model, val_loader, class_embeds)
            record.update(val_accuracy=val_accuracy, val_loss=val_loss)
        if is_better(val_accuracy, val_loss, best_val, best_loss):
            best_state = method.trained_state(unwrapped)
            best_epoch, best_val, best_loss = epoch, val_accuracy, val_loss
        record["best_epoch"] = best_epoch
        record["epoch_seconds"] = round(time.perf_counter() - started, 3)
        metrics.append(record)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=_fmt(val_accuracy))
        if config.log_with:
            accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=step)
        if main:
            # Metrics first: a resume drops lines of epochs its checkpoint does not have.
            _write_metrics(metrics_path, metrics)
            save_checkpoint(
                run_dir / CHECKPOINT_DIR,
                epoch=epoch,
                trained=method.trained_state(unwrapped),
                best={} if best_epoch == epoch else best_state,  # no second copy of the same
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scalars={
                    "step": step,
                    "best_epoch": best_epoch,
                    "best_val_accuracy": best_val,
                    "best_val_loss": best_loss,
                },
            )
            pause_point("epoch-end")
        accelerator.wait_for_everyone()
        if step >= total_steps:
            break
    bar.close()
    if epochs == 0 and main:
        _write_metrics(metrics_path, metrics)
    if config.log_with:
        accelerator.end_training()
    return TrainOutcome(best_state, best_epoch, best_val, metrics, step, str(accelerator.device))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
