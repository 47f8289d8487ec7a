"""The one training loop every method shares.

loss = cross-entropy (or, with TrainConfig.loss, SigLIP's sigmoid) over logit_scale.exp() *
cos(image, class prompt), one prompt per class and template (templates averaged per class).
The method decides what trains; this loop only asks it whether the text side trains (then
class prompts are re-encoded every step, with gradients) and how to copy out and restore its
trained tensors (best epoch, checkpoints).

Hugging Face accelerate places the model, runs mixed precision and gradient accumulation, and
shards batches across processes, so `accelerate launch -m clipgauge finetune ...` works as is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from clipgauge.cache import atomic_write_bytes
from clipgauge.data.dataset import ImageDataset
from clipgauge.encoding import ClassPrompts, features, tokenize_class_prompts
from clipgauge.errors import ClipgaugeError
from clipgauge.interruption import pause_point
from clipgauge.methods.base import Method, TunedClip
from clipgauge.models import backbone
from clipgauge.pixels import PixelCache, item_pixels, usable_cache
from clipgauge.runtime import LoaderSettings, accelerator_type, loader_settings, mixed_precision
from clipgauge.training.checkpoint import load_checkpoint, save_checkpoint, set_rng_states
from clipgauge.training.config import TrainConfig, TrainConfigError
from clipgauge.training.losses import class_loss

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"


class TrainingDivergedError(ClipgaugeError):
    """The loss became NaN or infinite."""


class LabelledPixels(torch.utils.data.Dataset):
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """(preprocessed pixels, class index) per item, with the model's own image processor."""

    def __init__(self, dataset: ImageDataset, image_processor, cache: PixelCache | None = None):
        self.dataset = dataset
        self.image_processor = image_processor
        self.cache = usable_cache(cache, image_processor)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = item_pixels(self.dataset, index, self.image_processor, self.cache)
        return pixels, self.dataset.items[index].label


@torch.no_grad()
def tower_features(
    tuned: TunedClip,
    pixels: LabelledPixels,
    device,
    batch_size: int = 256,
    loader: LoaderSettings | None = None,
) -> torch.utils.data.TensorDataset:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """(image tower features, class index) of every item: what a frozen tower always gives.

    Computed in fp32 whatever the run's mixed precision: it is done once, so it costs little,
    and every epoch trains on these features."""
    options = loader.loader_kwargs(single_pass=True) if loader is not None else {}
    batches = torch.utils.data.DataLoader(pixels, batch_size=batch_size, **options)
    out, labels = [], []
    for batch, label in batches:
        out.append(features(tuned.clip.get_image_features(pixel_values=batch.to(device))).cpu())
        labels.append(label)
    return torch.utils.data.TensorDataset(torch.cat(out), torch.cat(labels))


def resolve_runtime(config: TrainConfig, cpu: bool = False) -> dict:
    """What the config's "auto" values settle to on this machine (config.json's `runtime`):
    the device type, mixed precision and DataLoader settings."""
    device_type = accelerator_type(cpu)
    return {
        "device_type": device_type,
        "mixed_precision": mixed_precision(config.mixed_precision, device_type),
        "loader": loader_settings(config.num_workers, device_type).to_dict(),
    }


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


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total` (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _loader(
    inputs: torch.utils.data.Dataset, batch_size: int, settings: LoaderSettings, sampler=None
):
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    if isinstance(inputs, torch.utils.data.TensorDataset):  # in memory: nothing to decode
        settings = LoaderSettings(0, settings.pin_memory, False, None)
    return torch.utils.data.DataLoader(
        inputs, batch_size=batch_size, sampler=sampler, **settings.loader_kwargs()
    )


@torch.no_grad()
def _validate(
    accelerator, model, loader, class_embeds, input_key, loss: str = "cross-entropy"
) -> tuple[float, float]:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """(accuracy, mean loss) over a validation loader, gathered over processes."""
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    for inputs, labels in loader:
        logits = model(**{input_key: inputs}, class_embeds=class_embeds).float()
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss_sum += float(class_loss(logits, labels, loss, reduction="sum"))
        count += len(labels)
    return correct / max(count, 1), loss_sum / max(count, 1)


def _check_tracker(log_with: str | None) -> None:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
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


def _accelerator(config: TrainConfig, run_dir: Path, cpu: bool, precision: str) -> Accelerator:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    options = {
        "cpu": cpu,
        "mixed_precision": precision,
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


def _start_accelerator(
    config: TrainConfig, run_dir: Path, cpu: bool, tracker_config: dict | None, runtime: dict
) -> Accelerator:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    _check_tracker(config.log_with)
    accelerator = _accelerator(config, run_dir, cpu, runtime["mixed_precision"])
    if config.log_with:
        hparams = tracker_config or config.to_dict()
        # Trackers (TensorBoard hparams) take only scalars.
        hparams = {
            k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
            for k, v in hparams.items()
            if v is not None
        }
        accelerator.init_trackers("clipgauge", config=hparams)
    return accelerator


def _write_metrics(path: Path, metrics: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(m) + "\n" for m in metrics).encode())


@dataclass
class _Loop:
    """The prepared pieces of one training run and its step budget."""

    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by accelerate (maybe wrapped)
    unwrapped: TunedClip
    optimizer: torch.optim.Optimizer | None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    prompts: ClassPrompts
    input_key: str  # what the loaders yield: "pixel_values", or frozen "tower_features"
    steps_per_epoch: int
    total_steps: int
    epochs: int
    loss: str = "cross-entropy"  # TrainConfig.loss
    # The current epoch's learning-rate multiplier (Method.on_epoch_start); the schedule reads it.
    lr_scale: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class _Progress:
    """Where training stands: finished epochs, steps, the history and the best epoch."""

    start_epoch: int = 0
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    best_val: float | None = None
    best_loss: float | None = None

    def outcome(self, device: str) -> TrainOutcome:
        return TrainOutcome(
            self.best_state, self.best_epoch, self.best_val, self.metrics, self.step, device
        )

    def scalars(self) -> dict:
        return {
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val,
            "best_val_loss": self.best_loss,
        }


def _prepare_loop(
    accelerator: Accelerator,
    tuned: TunedClip,
    method: Method,
    data: tuple[ImageDataset, ImageDataset | None],
    text: tuple[object, Sequence[str]],
    image_processor,
    config: TrainConfig,
    pixel_cache: PixelCache | None,
    runtime: dict,
) -> _Loop:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """Loaders, optimizer, schedule and step budget, with the model placed by accelerate.

    `data` is (training, validation or None) images, `text` (tokenizer, templates), `runtime`
    what `resolve_runtime` gives."""
    settings = LoaderSettings(**runtime["loader"])
    # A frozen image tower (CLIP-Adapter, head-only methods): train on its features, once.
    tokenizer, templates = text
    prompts = tokenize_class_prompts(
        partial(backbone.tokenize, tuned, tokenizer), data[0].class_names, templates
    )
    frozen_tower = trains_anything(tuned) and not method.trains_image_tower(tuned)

    def inputs(dataset: ImageDataset) -> torch.utils.data.Dataset:
        pixels = LabelledPixels(dataset, image_processor, pixel_cache)
        if frozen_tower:  # one pass through the tower instead of one per epoch
            device = accelerator.device
            return tower_features(tuned.to(device), pixels, device, loader=settings)
        return pixels

    train_set, val_set = data
    sampler = EpochShuffle(len(train_set), config.seed)
    train_loader = _loader(inputs(train_set), config.batch_size, settings, sampler)
    val_loader = None
    if val_set is not None:
        val_loader = _loader(inputs(val_set), config.batch_size, settings)
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
    lr_scale = [1.0]

    def schedule(step: int) -> float:
        return lr_factor(step, warmup, total_steps, config.schedule) * lr_scale[0]

    # Stepped by hand once per optimizer step (not prepared: accelerate would step it once
    # per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(raw_optimizer, schedule) if params else None
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    return _Loop(
        accelerator=accelerator,
        model=model,
        unwrapped=accelerator.unwrap_model(model),
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        prompts=prompts.to(accelerator.device),
        input_key="tower_features" if frozen_tower else "pixel_values",
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        epochs=epochs,
        loss=config.loss,
        lr_scale=lr_scale,
    )


def _resume(loop: _Loop, method: Method, run_dir: Path) -> _Progress:
    """The progress saved in the run's epoch checkpoint, with model and optimizer restored."""
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_DIR)
    method.load_trained(loop.unwrapped, checkpoint["trained"])
    if loop.optimizer is not None:
        loop.optimizer.load_state_dict(checkpoint["optimizer"])
        loop.scheduler.load_state_dict(checkpoint["scheduler"])
    scalars = checkpoint["scalars"]
    epoch = checkpoint["epoch"]
    progress = _Progress(start_epoch=epoch, step=scalars["step"])
    progress.best_epoch = scalars["best_epoch"]
    progress.best_state = (
        checkpoint["trained"] if progress.best_epoch == epoch else checkpoint["best"]
    )
    progress.best_val = scalars["best_val_accuracy"]
    progress.best_loss = scalars.get("best_val_loss")
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file():
        lines = metrics_path.read_text().splitlines()
        progress.metrics = [m for m in map(json.loads, lines) if m["epoch"] <= epoch]
    set_rng_states(checkpoint["rng"])
    return progress


def _start_epoch(loop: _Loop, method: Method, epoch: int) -> None:
    """The method's phase for `epoch`: what trains, and the learning rate of its next step."""
    loop.lr_scale[0] = method.on_epoch_start(loop.unwrapped, epoch, loop.epochs)
    scheduler = loop.scheduler
    # The lr of the next step is base * schedule(last_epoch): set it as the scheduler would.
    for group, base, schedule in zip(
        loop.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * schedule(scheduler.last_epoch)


def _train_epoch(loop: _Loop, epoch: int, progress: _Progress, class_embeds, bar) -> float:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """One pass over the training batches (stopping at the step budget); the mean loss."""
    accelerator, model, scheduler = loop.accelerator, loop.model, loop.scheduler
    model.train()
    loop.train_loader.set_epoch(epoch)
    loss_sum, batches = torch.zeros((), device=accelerator.device), 0
    for batch, (inputs, labels) in enumerate(loop.train_loader):
        if progress.step >= loop.total_steps:
            break
        with accelerator.accumulate(model):
            if class_embeds is None:  # the text side trains: class prompts with gradients
                logits = model(**{loop.input_key: inputs}, prompts=loop.prompts)
            else:
                logits = model(**{loop.input_key: inputs}, class_embeds=class_embeds)
            loss = class_loss(logits.float(), labels, loop.loss)
            # Every process checks every process's loss, so all stop together.
            if not torch.isfinite(accelerator.gather(loss.detach().reshape(1))).all():
                raise TrainingDivergedError(
                    f"the loss became {loss.item()} at step {progress.step + 1} (epoch {epoch}, "
                    f"batch {batch + 1}, lr {scheduler.get_last_lr()[0]:.3g}); "
                    "lower --lr, add --warmup, or use fp32"
                )
            accelerator.backward(loss)
            loop.optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
                progress.step += 1
                bar.update(1)
            loop.optimizer.zero_grad()
        loss_sum += loss.detach()
        batches += 1
        bar.set_postfix(loss=f"{loss.item():.4f}", val_acc=_fmt(progress.best_val))
    return float(accelerator.reduce(loss_sum, "mean")) / max(batches, 1)


def _save_epoch(loop: _Loop, method: Method, run_dir: Path, epoch: int, progress: _Progress):
    # Metrics first: a resume drops lines of epochs its checkpoint does not have.
    _write_metrics(run_dir / METRICS_FILE, progress.metrics)
    save_checkpoint(
        run_dir / CHECKPOINT_DIR,
        epoch=epoch,
        trained=method.trained_state(loop.unwrapped),
        best={} if progress.best_epoch == epoch else progress.best_state,  # no second copy
        optimizer=loop.optimizer.state_dict(),
        scheduler=loop.scheduler.state_dict(),
        scalars=progress.scalars(),
    )
    pause_point("epoch-end")


def trains_anything(tuned: TunedClip) -> bool:
    return any(p.requires_grad for p in tuned.parameters())


def _fresh_start(loop: _Loop, method: Method, run_dir: Path, validate) -> _Progress:
    """Progress of a new run; with validation, epoch 0 records the untrained model."""
    # best_state is replaced after the first epoch; kept as is only when nothing trains.
    state = _Progress(best_state={} if loop.epochs else method.trained_state(loop.unwrapped))
    if loop.val_loader is not None:
        accuracy, loss = validate()
        state.metrics.append({"epoch": 0, "step": 0, "val_accuracy": accuracy, "val_loss": loss})
        if loop.accelerator.is_main_process:
            _write_metrics(run_dir / METRICS_FILE, state.metrics)
    return state


def _end_epoch(loop: _Loop, method: Method, state: _Progress, record: dict, validate) -> None:
    """Validate, keep the epoch if it is the best so far, and append its record."""
    val_accuracy = val_loss = None
    if loop.val_loader is not None:
        val_accuracy, val_loss = validate()
        record.update(val_accuracy=val_accuracy, val_loss=val_loss)
    if is_better(val_accuracy, val_loss, state.best_val, state.best_loss):
        state.best_state = method.trained_state(loop.unwrapped)
        state.best_epoch, state.best_val, state.best_loss = record["epoch"], val_accuracy, val_loss
    record["best_epoch"] = state.best_epoch
    state.metrics.append(record)


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
    pixel_cache: PixelCache | None = None,
    runtime: dict | None = None,
) -> TrainOutcome:
    # pragma: no mutate block - training plumbing, run by tests/test_training.py
    """Train `tuned` (already prepared by `method`, seeded) and keep the best epoch's tensors.

    Writes `metrics.jsonl` and an epoch checkpoint into `run_dir`; `resume` continues from it.
    Best epoch: the highest validation accuracy (see `is_better`), else the last. `cpu` keeps
    training on the CPU; `pixel_cache` keeps preprocessed images across epochs and calls.
    `runtime` is `resolve_runtime(config, cpu)`, resolved here when not given.
    """
    run_dir = Path(run_dir)
    runtime = runtime or resolve_runtime(config, cpu)
    accelerator = _start_accelerator(config, run_dir, cpu, tracker_config, runtime)
    data, text = (train_set, val_set), (tokenizer, templates)
    loop = _prepare_loop(
        accelerator, tuned, method, data, text, image_processor, config, pixel_cache, runtime
    )
    trains_text = method.trains_text_tower(loop.unwrapped)
    fixed_class_embeds = None

    def validate() -> tuple[float, float]:
        embeds = fixed_class_embeds
        if embeds is None:
            with torch.no_grad(), accelerator.autocast():
                embeds = loop.unwrapped.encode_classes(loop.prompts)
        return _validate(
            accelerator, loop.model, loop.val_loader, embeds, loop.input_key, loop.loss
        )

    state = (
        _resume(loop, method, run_dir) if resume else _fresh_start(loop, method, run_dir, validate)
    )
    if not trains_text:  # the class embeddings cannot change: encode them once
        with torch.no_grad(), accelerator.autocast():
            fixed_class_embeds = loop.unwrapped.encode_classes(loop.prompts)
    pause_point("train-start")
    bar = _progress_bar(loop, method, state, show=progress and accelerator.is_main_process)
    for epoch in range(state.start_epoch + 1, loop.epochs + 1):
        started = time.perf_counter()
        _start_epoch(loop, method, epoch)
        train_loss = _train_epoch(loop, epoch, state, fixed_class_embeds, bar)
        record = {"epoch": epoch, "step": state.step, "train_loss": train_loss}
        record["lr"] = loop.scheduler.get_last_lr()[0]
        _end_epoch(loop, method, state, record, validate)
        record["epoch_seconds"] = round(time.perf_counter() - started, 3)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=_fmt(record.get("val_accuracy")))
        if config.log_with:
            accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=state.step)
        if accelerator.is_main_process:
            _save_epoch(loop, method, run_dir, epoch, state)
        accelerator.wait_for_everyone()
        if state.step >= loop.total_steps:
            break
    bar.close()
    if loop.epochs == 0 and accelerator.is_main_process:
        _write_metrics(run_dir / METRICS_FILE, state.metrics)
    if config.log_with:
        accelerator.end_training()
    return state.outcome(str(accelerator.device))


def _progress_bar(loop: _Loop, method: Method, state: _Progress, show: bool):
    total = loop.epochs * loop.steps_per_epoch
    return tqdm(total=total, initial=state.step, desc=method.name, unit="step", disable=not show)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
