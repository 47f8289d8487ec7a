"""The training engine: loss goes down, determinism, resume, divergence, presets, checkpoints."""

import json

import pytest
import torch
from imagegen import write_image
from safetensors.torch import load_file

from clipgauge.training import (
    TrainConfig,
    TrainingDivergedError,
    engine,
    finetune,
    load_presets,
    resolve_train_config,
)
from clipgauge.training.checkpoint import flatten, unflatten
from clipgauge.training.config import TrainConfigError
from clipgauge.training.engine import is_better

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"batch_size": 4, "epochs": 2, "lr": 1e-3, "val_fraction": 0.25}


@pytest.fixture
def colour_task(tmp_path):
    """photo/art x cat (reddish)/dog (bluish), 8 images each: a task a tiny CLIP can learn."""
    root = tmp_path / "colours"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(8):
                shade = 40 + 20 * i + 10 * d
                colour = (230, shade, 60) if c == 0 else (60, shade, 230)
                write_image(root / domain / name / f"{i}.png", colour)
    return root


def run(tiny_clip_dir, data, out, method="full", resume=False, options=None, **train):
    return finetune(
        str(tiny_clip_dir),
        str(data),
        ["photo"],
        method,
        options or {},
        TrainConfig(**{**FAST, **train}),
        out,
        resume=resume,
        progress=False,
    )


def interrupt_after_epoch(monkeypatch, epoch: int):
    """Make training stop (as Ctrl-C would) right after saving `epoch`'s checkpoint; returns
    the real save_checkpoint."""
    save = engine.save_checkpoint

    def save_then_stop(folder, **kwargs):
        save(folder, **kwargs)
        if kwargs["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", save_then_stop)
    return save


def without_time(metrics):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in metrics]


def test_training_lowers_the_loss_and_writes_metrics(tiny_clip_dir, colour_task, tmp_path):
    result = run(tiny_clip_dir, colour_task, tmp_path / "run", epochs=4, lr=3e-3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.metrics
    assert [m["epoch"] for m in lines] == [0, 1, 2, 3, 4]
    assert lines[0].keys() == {"epoch", "step", "val_accuracy", "val_loss"}
    assert lines[-1]["train_loss"] < 0.6 * lines[1]["train_loss"]
    # photo has 16 images: 4 go to test, 4 of the other 12 to validation, 8 train (2 batches)
    assert result.steps == lines[-1]["step"] == 4 * 2
    assert result.best_val_accuracy == max(m["val_accuracy"] for m in lines[1:])
    # among the epochs with the best accuracy, the one with the lowest validation loss
    tied = [m for m in lines[1:] if m["val_accuracy"] == result.best_val_accuracy]
    assert result.best_epoch == min(tied, key=lambda m: m["val_loss"])["epoch"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["n_train"] == 8 and config["data"]["n_val"] == 4
    assert config["data"]["train_domains"] == ["photo"]
    assert config["train"]["lr"] == 3e-3 and config["seed"] == 0
    assert config["templates"] == ["a photo of a {}."]
    assert config["base_model"]["fingerprint"] and config["preprocessing"]["image_mean"]


def test_same_seed_same_run(tiny_clip_dir, colour_task, tmp_path):
    a = run(tiny_clip_dir, colour_task, tmp_path / "a", method="lora", options={"dropout": 0.1})
    b = run(tiny_clip_dir, colour_task, tmp_path / "b", method="lora", options={"dropout": 0.1})
    c = run(tiny_clip_dir, colour_task, tmp_path / "c", method="lora", seed=1)
    assert without_time(a.metrics) == without_time(b.metrics)
    assert a.trained_digest == b.trained_digest != c.trained_digest


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_equals_an_uninterrupted_run(
    tiny_clip_dir, colour_task, tmp_path, monkeypatch, stop_after
):
    options = {"method": "lora", "warmup_steps": 1, "val_fraction": 0.25, "epochs": 3}
    # This tiny run's validation loss falls every epoch, so every epoch would win a tie on loss;
    # ranking by accuracy alone (which stays flat here) keeps epoch 1 the best, so the epoch-2
    # checkpoint holds a best older than itself, which the resume must carry over.
    monkeypatch.setattr(
        engine, "is_better", lambda acc, _loss, best, _best_loss: best is None or acc > best
    )
    whole = run(tiny_clip_dir, colour_task, tmp_path / "whole", **options)
    if stop_after == 2:  # the checkpoint then holds an earlier best epoch as well
        assert whole.metrics[2]["best_epoch"] == 1

    save = interrupt_after_epoch(monkeypatch, stop_after)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_clip_dir, colour_task, tmp_path / "cut", **options)
    assert not (tmp_path / "cut" / "trained.safetensors").exists()
    monkeypatch.setattr(engine, "save_checkpoint", save)
    resumed = run(tiny_clip_dir, colour_task, tmp_path / "cut", resume=True, **options)

    first = load_file(tmp_path / "whole" / "trained.safetensors")
    second = load_file(tmp_path / "cut" / "trained.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert without_time(resumed.metrics) == without_time(whole.metrics)
    assert not (tmp_path / "cut" / "checkpoint").exists()  # removed once the run finished


def test_resume_refuses_changed_options(tiny_clip_dir, colour_task, tmp_path, monkeypatch):
    from clipgauge.training import RunError

    monkeypatch.setattr(
        engine, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        run(tiny_clip_dir, colour_task, tmp_path / "cut")
    with pytest.raises(RunError, match="train differ"):
        run(tiny_clip_dir, colour_task, tmp_path / "cut", resume=True, lr=1e-2)
    with pytest.raises(RunError, match="already holds a run"):
        run(tiny_clip_dir, colour_task, tmp_path / "cut")
    with pytest.raises(Exception, match="no checkpoint to resume"):
        run(tiny_clip_dir, colour_task, tmp_path / "cut", resume=True)


def test_nan_loss_stops_with_the_step(tiny_clip_dir, colour_task, tmp_path, monkeypatch):
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ \(epoch 1"):
        run(tiny_clip_dir, colour_task, tmp_path / "huge", optimizer="sgd", lr=1e30)

    real = engine.class_loss
    calls = []

    def nan_on_fourth_batch(logits, labels, *args, **kwargs):
        calls.append(1)
        loss = real(logits, labels, *args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(engine, "class_loss", nan_on_fourth_batch)
    # 12 training images in batches of 4: the fourth batch is the first of epoch 2.
    with pytest.raises(TrainingDivergedError, match=r"became nan at step 4 \(epoch 2, batch 1"):
        run(tiny_clip_dir, colour_task, tmp_path / "nan", val_fraction=0)


def test_zeroshot_trains_nothing(tiny_clip_dir, colour_task, tmp_path):
    result = run(tiny_clip_dir, colour_task, tmp_path / "zs", method="zeroshot")
    assert result.steps == 0 and result.trainable_parameters == 0
    assert [m["epoch"] for m in result.metrics] == [0]
    assert load_file(tmp_path / "zs" / "trained.safetensors") == {}


def test_text_features_are_computed_once_when_text_does_not_train(
    tiny_clip_dir, colour_task, tmp_path, monkeypatch
):
    from clipgauge.methods.base import TunedClip

    calls = []
    real = TunedClip.get_text_features

    def counted(self, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TunedClip, "get_text_features", counted)
    run(tiny_clip_dir, colour_task, tmp_path / "img", "bitfit", options={"towers": "image"})
    assert calls == [False, False]  # epoch-0 validation, then the fixed class embeddings
    calls.clear()
    result = run(tiny_clip_dir, colour_task, tmp_path / "both", "bitfit")
    assert calls.count(True) == result.steps  # with gradients, once per step


def test_grad_accum_and_max_steps(tiny_clip_dir, colour_task, tmp_path):
    result = run(tiny_clip_dir, colour_task, tmp_path / "acc", batch_size=2, grad_accum=2)
    assert result.steps == 2 * 2  # 4 batches of 2 -> 2 optimizer steps per epoch
    result = run(tiny_clip_dir, colour_task, tmp_path / "max", batch_size=2, max_steps=6)
    assert result.steps == 6 and [m["epoch"] for m in result.metrics] == [0, 1, 2]


def test_schedule_warms_up_then_decays():
    factors = [engine.lr_factor(s, 2, 10, "cosine") for s in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert engine.lr_factor(9, 0, 10, "constant") == 1.0


def test_presets():
    presets = load_presets()
    paper = presets["paper-vitb32"]["defaults"]
    assert paper == {
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 1e-6,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "epochs": 10,
        "warmup_steps": 0,
        "schedule": "constant",
    }
    for name, preset in presets.items():
        TrainConfig.from_dict(preset["defaults"], name)  # every value has the right type
        for values in (preset.get("methods") or {}).values():
            TrainConfig.from_dict({**preset["defaults"], **values}, name)
    config, used = resolve_train_config("lora", {"epochs": 3}, "auto", "world-clip")
    assert used == "world-clip" and config.epochs == 3
    assert config.lr == presets["world-clip"]["methods"]["lora"]["lr"]
    config, used = resolve_train_config("lora", {}, "auto", "some/other-model")
    assert used is None and config == TrainConfig()
    config, used = resolve_train_config("full", {"lr": "0.5"}, "paper-vitb32")
    assert (config.optimizer, config.lr, config.batch_size) == ("sgd", 0.5, 128)
    with pytest.raises(TrainConfigError, match="unknown preset 'nope'"):
        resolve_train_config("full", {}, "nope")


def test_train_config_checks_values():
    with pytest.raises(TrainConfigError, match="optimizer 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(TrainConfigError, match="not both"):
        TrainConfig(warmup_steps=5, warmup_ratio=0.1)
    with pytest.raises(TrainConfigError, match="unknown option.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(TrainConfigError, match="epochs=2.5 is not a valid int"):
        TrainConfig.from_dict({"epochs": 2.5})


def test_optimizer_state_survives_flattening():
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    for optimizer in (torch.optim.AdamW(params), torch.optim.SGD(params, lr=0.1, momentum=0.9)):
        sum(p.sum() for p in params).backward()
        optimizer.step()
        tensors = {}
        structure = json.loads(json.dumps(flatten(optimizer.state_dict(), "opt", tensors)))
        restored = unflatten(structure, tensors)
        fresh = type(optimizer)(params, lr=0.5)
        fresh.load_state_dict(restored)
        original = optimizer.state_dict()
        assert fresh.state_dict()["param_groups"] == original["param_groups"]
        for key, state in original["state"].items():
            assert all(
                torch.equal(v, fresh.state_dict()["state"][key][k]) for k, v in state.items()
            )


def test_bf16_then_fp32_in_one_process(tiny_clip_dir, colour_task, tmp_path):
    first = run(tiny_clip_dir, colour_task, tmp_path / "a", epochs=1)
    bf16 = run(tiny_clip_dir, colour_task, tmp_path / "b", epochs=1, mixed_precision="bf16")
    again = run(tiny_clip_dir, colour_task, tmp_path / "c", epochs=1)
    assert bf16.steps == first.steps
    assert bf16.trained_digest != first.trained_digest == again.trained_digest


def test_tensorboard_tracker_logs_the_epoch_metrics(tiny_clip_dir, colour_task, tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency: installed in CI
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(tiny_clip_dir, colour_task, tmp_path / "tb", epochs=2, log_with="tensorboard")
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under the run folder"
    logged = EventAccumulator(str(events[0].parent)).Reload()
    for key in ("train_loss", "val_accuracy", "val_loss"):
        values = [e.value for e in logged.Scalars(key)]
        expected = [m[key] for m in result.metrics[1:]]
        assert values == pytest.approx(expected, rel=1e-6), key
    assert [e.step for e in logged.Scalars("train_loss")] == [m["step"] for m in result.metrics[1:]]


def test_missing_tracker_is_a_clear_error(tiny_clip_dir, colour_task, tmp_path, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(TrainConfigError, match="needs the tensorboard package"):
        run(tiny_clip_dir, colour_task, tmp_path / "tb", log_with="tensorboard")


def test_a_bundle_and_dataset_passed_in_are_left_as_they_were(tiny_clip_dir, colour_task, tmp_path):
    from clipgauge.data.open import open_dataset
    from clipgauge.models.loading import load_clip

    bundle = load_clip(str(tiny_clip_dir), device="cpu")
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    dataset = open_dataset(colour_task)
    result = finetune(bundle, dataset, ["photo"], "full", {}, {"epochs": 1}, tmp_path / "r")
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.config["base_model"]["fingerprint"] == bundle.fingerprint
    assert len(dataset.domain_names) == 2


def test_best_epoch_is_higher_accuracy_then_lower_loss():
    assert is_better(0.5, 0.9, None, None)  # the first validated epoch
    assert is_better(None, None, 0.5, 0.1)  # no validation: the latest epoch
    assert is_better(0.6, 2.0, 0.5, 0.1)  # accuracy decides first
    assert not is_better(0.4, 0.01, 0.5, 0.1)
    assert is_better(0.5, 0.09, 0.5, 0.1)  # a tie goes to the lower loss
    assert not is_better(0.5, 0.1, 0.5, 0.1)  # an exact tie keeps the earlier epoch
    assert not is_better(0.5, 0.2, 0.5, 0.1)
    assert is_better(0.5, 0.3, 0.5, None)  # a checkpoint from before losses were kept


@pytest.mark.parametrize("stop_after", [None, 3], ids=["uninterrupted", "resumed-after-epoch-3"])
def test_saved_tensors_are_the_best_epochs_not_the_last(
    tiny_clip_dir, colour_task, tmp_path, monkeypatch, stop_after
):
    """Validation is scripted so epoch 2 of 4 is the best (epochs 3 and 4 have lower accuracy,
    if lower loss). Each time the engine validates, this test copies the model's trainable
    tensors itself: trained.safetensors must equal the copy taken at epoch 2, which training
    changed afterwards. A run cut after epoch 3 and resumed must keep epoch 2 as well."""
    scripted = [(0.25, 2.0), (0.5, 1.0), (1.0, 0.5), (0.75, 0.2), (0.5, 0.1)]  # epochs 0..4
    seen: list[dict[str, torch.Tensor]] = []

    def scripted_validate(accelerator, model, loader, class_embeds, input_key, loss):
        module = getattr(model, "module", model)  # a DistributedDataParallel wrapper, if any
        named = module.named_parameters()
        seen.append({n: p.detach().clone() for n, p in named if p.requires_grad})
        return scripted[len(seen) - 1]

    monkeypatch.setattr(engine, "_validate", scripted_validate)
    out, options = tmp_path / "run", {"epochs": 4, "lr": 3e-3}
    if stop_after is not None:
        save = interrupt_after_epoch(monkeypatch, stop_after)
        with pytest.raises(KeyboardInterrupt):
            run(tiny_clip_dir, colour_task, out, **options)
        monkeypatch.setattr(engine, "save_checkpoint", save)
    result = run(tiny_clip_dir, colour_task, out, resume=stop_after is not None, **options)

    assert len(seen) == 5 and result.best_epoch == 2
    assert [m["best_epoch"] for m in result.metrics[1:]] == [1, 2, 2, 2]
    saved = load_file(out / "trained.safetensors")
    # TunedClip wraps CLIPModel as `clip`; saved keys are plain CLIPModel state-dict names.
    at_epoch = [{n.removeprefix("clip."): t for n, t in copy.items()} for copy in seen]
    assert saved.keys() == at_epoch[2].keys()
    assert all(torch.equal(saved[k], at_epoch[2][k]) for k in saved)
    changed_later = [k for k in saved if not torch.equal(at_epoch[2][k], at_epoch[4][k])]
    assert len(changed_later) > len(saved) // 2  # so the last epoch's tensors would differ


def test_a_frozen_image_tower_trains_on_its_features_once(
    tiny_clip_dir, colour_task, tmp_path, monkeypatch
):
    """CLIP-Adapter trains on the frozen tower's features, computed once: the same adapter
    weights as training on pixels every epoch, with one tower pass instead of one per epoch."""
    from clipgauge.methods.clip_adapter import ClipAdapter
    from clipgauge.training import engine

    calls = []
    real = engine.tower_features
    monkeypatch.setattr(engine, "tower_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    frozen = run(tiny_clip_dir, colour_task, tmp_path / "frozen", "clip-adapter", epochs=3, lr=1e-2)
    assert len(calls) == 2  # the training and the validation images, once each
    monkeypatch.setattr(ClipAdapter, "trains_image_tower", lambda self, tuned: True)
    pixels = run(tiny_clip_dir, colour_task, tmp_path / "pixels", "clip-adapter", epochs=3, lr=1e-2)
    assert len(calls) == 2
    assert frozen.best_epoch == pixels.best_epoch
    a = load_file(tmp_path / "frozen" / "trained.safetensors")
    b = load_file(tmp_path / "pixels" / "trained.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert not torch.equal(a[key], torch.zeros_like(a[key]))


def test_a_run_records_what_auto_resolved_to(tiny_clip_dir, colour_task, tmp_path):
    auto = run(tiny_clip_dir, colour_task, tmp_path / "auto", epochs=1)
    stored = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert stored["train"]["mixed_precision"] == "auto" and stored["train"]["num_workers"] is None
    assert stored["runtime"] == auto.config["runtime"]
    assert stored["runtime"]["mixed_precision"] == "no"
    assert stored["runtime"]["loader"]["num_workers"] == 0
    given = run(
        tiny_clip_dir,
        colour_task,
        tmp_path / "given",
        epochs=1,
        num_workers=1,
        mixed_precision="no",
    )
    assert given.config["runtime"]["loader"] == {
        "num_workers": 1,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": None,
    }
    assert given.trained_digest == auto.trained_digest  # workers change speed, not results
