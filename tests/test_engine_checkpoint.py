"""Epoch checkpoints (clipgauge.training.checkpoint) and the engine's best-epoch bookkeeping
(is_better, the learning-rate schedule, fresh start, end of epoch, save and resume), on
hand-built states and stand-in loops: no model trains here. Expected values are written out;
tests/test_training.py checks the same logic through real training runs."""

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from clipgauge.training import engine
from clipgauge.training.checkpoint import (
    STATE_JSON,
    CheckpointError,
    _b64_bytes,
    _bytes_b64,
    flatten,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
    unflatten,
)
from clipgauge.training.engine import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    EpochShuffle,
    _end_epoch,
    _fmt,
    _fresh_start,
    _Progress,
    _resume,
    _save_epoch,
    is_better,
    lr_factor,
)

# --- flatten / unflatten ----------------------------------------------------------------------


def test_flatten_moves_tensors_out_under_path_keys():
    weight = torch.ones(2, requires_grad=True)
    state = {
        "w": weight,
        "groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.999), "flag": True}],
        "state": {0: {"step": torch.tensor(3.0)}, 1: {"none": None, "name": "adam"}},
    }
    tensors = {}
    structure = flatten(state, "opt", tensors)
    assert structure == {
        "w": {"__tensor__": "opt.w"},
        "groups": [
            {"lr": 0.1, "params": [0, 1], "betas": {"__tuple__": [0.9, 0.999]}, "flag": True}
        ],
        "state": {
            "__items__": [[0, {"step": {"__tensor__": "opt.state.0.step"}}], [1, state["state"][1]]]
        },
    }
    assert sorted(tensors) == ["opt.state.0.step", "opt.w"]
    assert tensors["opt.w"].device.type == "cpu" and not tensors["opt.w"].requires_grad
    with torch.no_grad():
        weight.add_(1)
    assert tensors["opt.w"].tolist() == [1.0, 1.0]  # a copy, not a view of the live tensor
    json.dumps(structure)  # the structure is plain JSON


def test_flatten_numbers_list_items_by_position():
    tensors = {}
    assert flatten([torch.zeros(1), (torch.ones(1),)], "p", tensors) == [
        {"__tensor__": "p.0"},
        {"__tuple__": [{"__tensor__": "p.1.0"}]},
    ]
    assert sorted(tensors) == ["p.0", "p.1.0"]


def test_unflatten_restores_int_keys_tuples_and_tensors():
    tensors = {"a.x": torch.tensor([1.0]), "a.s.0": torch.tensor([2.0])}
    structure = {
        "x": {"__tensor__": "a.x"},
        "s": {"__items__": [[0, {"__tensor__": "a.s.0"}], [5, [1, {"__tuple__": [1, 2]}]]]},
        "t": {"__tuple__": [[3], "z", {"__tensor__": "a.x"}]},
        "plain": [None, 1.5, "s", {"__tensor__": "a.s.0"}],
    }
    restored = unflatten(json.loads(json.dumps(structure)), tensors)
    assert restored == {
        "x": tensors["a.x"],
        "s": {0: tensors["a.s.0"], 5: [1, (1, 2)]},
        "t": ([3], "z", tensors["a.x"]),
        "plain": [None, 1.5, "s", tensors["a.s.0"]],
    }
    assert restored["x"] is tensors["a.x"] and isinstance(restored["t"], tuple)


def test_an_unknown_object_is_refused_with_its_type_and_path():
    with pytest.raises(CheckpointError, match=r"^cannot store set at opt\.state\.k in a check"):
        flatten({"state": {"k": {1, 2}}}, "opt", {})
    with pytest.raises(CheckpointError, match=r"^cannot store bytes at x\.1 in a checkpoint$"):
        flatten([0, b"raw"], "x", {})


def test_a_real_optimizer_state_round_trips():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.AdamW([param], lr=0.01)
    param.grad = torch.tensor([0.5, 0.25])
    optimizer.step()
    tensors = {}
    structure = json.loads(json.dumps(flatten(optimizer.state_dict(), "optimizer", tensors)))
    restored = unflatten(structure, tensors)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["lr"] == 0.01
    assert fresh.param_groups[0]["betas"] == (0.9, 0.999)
    assert torch.equal(fresh.state[fresh.param_groups[0]["params"][0]]["exp_avg"], 0.1 * param.grad)


# --- RNG states -------------------------------------------------------------------------------


def test_bytes_travel_as_base64_text():
    assert _bytes_b64(torch.tensor([0, 1, 255], dtype=torch.uint8)) == "AAH/"
    restored = _b64_bytes("AAH/")
    assert restored.dtype == torch.uint8 and restored.tolist() == [0, 1, 255]
    restored[0] = 7  # a tensor of its own, writable
    assert _b64_bytes("AAH/").tolist() == [0, 1, 255]


def draws() -> tuple:
    return (
        random.random(),
        random.gauss(0, 1),
        float(np.random.rand()),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
    )


def test_rng_states_restore_every_generator_through_json():
    random.seed(1)
    np.random.seed(2)
    random.gauss(0, 1)  # leaves a cached second normal in Python's state
    np.random.standard_normal()  # and in NumPy's
    states = json.loads(json.dumps(rng_states()))
    version, state, gauss = states["python"]
    assert version == random.getstate()[0] and isinstance(state, list) and gauss is not None
    kind, keys, pos, has_gauss, cached = states["numpy"]
    assert kind == "MT19937" and len(keys) == 624 and has_gauss == 1 and isinstance(cached, float)
    assert isinstance(pos, int) and isinstance(states["torch"], str)
    assert states["cuda"] == ([] if not torch.cuda.is_available() else states["cuda"])
    expected = draws()
    draws()
    set_rng_states(states)
    assert draws() == expected


def test_set_rng_states_restores_the_exact_python_and_numpy_states():
    random.seed(5)
    np.random.seed(6)
    random.gauss(0, 1)
    np.random.standard_normal()
    python, numpy_state = random.getstate(), np.random.get_state()
    states = json.loads(json.dumps(rng_states()))
    random.seed(0)
    np.random.seed(0)
    set_rng_states(states)
    assert random.getstate() == python
    restored = np.random.get_state()
    assert restored[0] == numpy_state[0] and np.array_equal(restored[1], numpy_state[1])
    assert restored[1].dtype == np.uint32
    assert restored[2:] == numpy_state[2:]


# --- save / load ------------------------------------------------------------------------------


def saved(folder, epoch=2, **changes):
    options = dict(
        epoch=epoch,
        trained={"w": torch.tensor([1.0, 2.0])},
        best={"w": torch.tensor([0.5, 0.5])},
        optimizer={"state": {0: {"m": torch.tensor([3.0])}}, "param_groups": [{"lr": 0.1}]},
        scheduler={"last_epoch": 4, "base_lrs": [0.1], "scale": torch.tensor([0.5])},
        scalars={"step": 8, "best_epoch": 1, "best_val_accuracy": 0.5, "best_val_loss": 0.7},
    )
    options.update(changes)
    return save_checkpoint(folder, **options)


def test_a_checkpoint_is_a_tensor_file_and_state_json(tmp_path):
    assert saved(tmp_path / "ckpt") == tmp_path / "ckpt"
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["state-epoch2.safetensors", STATE_JSON] and STATE_JSON == "state.json"
    record = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert record["epoch"] == 2 and record["tensors"] == "state-epoch2.safetensors"
    assert record["scalars"] == {
        "step": 8,
        "best_epoch": 1,
        "best_val_accuracy": 0.5,
        "best_val_loss": 0.7,
    }
    assert record["structure"] == {
        "trained": {"w": {"__tensor__": "trained.w"}},
        "best": {"w": {"__tensor__": "best.w"}},
        "optimizer": {
            "state": {"__items__": [[0, {"m": {"__tensor__": "optimizer.state.0.m"}}]]},
            "param_groups": [{"lr": 0.1}],
        },
        "scheduler": {
            "last_epoch": 4,
            "base_lrs": [0.1],
            "scale": {"__tensor__": "scheduler.scale"},
        },
    }
    assert set(record["rng"]) == {"python", "numpy", "torch", "cuda"}
    tensors = load_file(tmp_path / "ckpt" / "state-epoch2.safetensors")
    assert sorted(tensors) == ["best.w", "optimizer.state.0.m", "scheduler.scale", "trained.w"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ckpt" / "state-epoch2.safetensors"), "pt") as f:
        assert f.metadata() == {"epoch": "2"}


def test_load_returns_what_was_saved(tmp_path):
    saved(tmp_path)
    state = load_checkpoint(tmp_path)
    assert sorted(state) == ["best", "epoch", "optimizer", "rng", "scalars", "scheduler", "trained"]
    assert state["epoch"] == 2 and state["scalars"]["best_val_loss"] == 0.7
    assert state["trained"]["w"].tolist() == [1.0, 2.0]
    assert state["best"]["w"].tolist() == [0.5, 0.5]
    assert list(state["optimizer"]["state"]) == [0]
    assert state["optimizer"]["state"][0]["m"].tolist() == [3.0]
    assert state["scheduler"]["scale"].tolist() == [0.5]
    assert state["scheduler"]["base_lrs"] == [0.1] and state["scheduler"]["last_epoch"] == 4


def test_a_new_epoch_replaces_the_older_tensor_file(tmp_path):
    saved(tmp_path, epoch=1)
    (tmp_path / "state-epoch0.safetensors").write_bytes(b"left by a killed run")
    saved(tmp_path, epoch=3, optimizer=None, scheduler=None, best={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-epoch3.safetensors", STATE_JSON]
    state = load_checkpoint(tmp_path)
    assert state["epoch"] == 3 and state["optimizer"] is None and state["best"] == {}
    saved(tmp_path, epoch=3)  # the same epoch again keeps its file
    assert (tmp_path / "state-epoch3.safetensors").is_file()


def test_no_state_json_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == (
        f"no checkpoint to resume in {tmp_path} (state.json is missing); the run stopped "
        "before its first epoch ended: start it again without --resume"
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: "{not json",
        lambda record: json.dumps({**record, "tensors": "missing.safetensors"}),
        lambda record: json.dumps({**record, "tensors": ""}),
        lambda record: json.dumps({**record, "tensors": "."}),
        lambda record: json.dumps({**record, "tensors": ".."}),
        lambda record: json.dumps({**record, "tensors": "sub/state-epoch2.safetensors"}),
        lambda record: json.dumps({**record, "tensors": 5}),
        lambda record: json.dumps({k: v for k, v in record.items() if k != "scalars"}),
        lambda record: json.dumps({k: v for k, v in record.items() if k != "tensors"}),
        lambda record: json.dumps([1]),
        lambda record: json.dumps({**record, "structure": [1]}),
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    saved(tmp_path)
    (tmp_path / "sub").mkdir()
    save_file({"trained.w": torch.ones(1)}, str(tmp_path / "sub" / "state-epoch2.safetensors"))
    record = json.loads((tmp_path / STATE_JSON).read_text())
    (tmp_path / STATE_JSON).write_text(damage(record))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert message.startswith(f"checkpoint in {tmp_path} is unreadable (")
    assert message.endswith("); start the run again without --resume (into a new --out)")
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize("name", ["../x", "", ".", "..", "a/b"])
def test_a_tensor_name_outside_the_folder_names_the_rule(tmp_path, name):
    saved(tmp_path)
    record = json.loads((tmp_path / STATE_JSON).read_text())
    (tmp_path / STATE_JSON).write_text(json.dumps({**record, "tensors": name}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert f"(tensors {name!r} is not a file name inside the checkpoint folder)" in str(err.value)


def test_a_truncated_tensor_file_is_a_clear_error(tmp_path):
    saved(tmp_path)
    path = tmp_path / "state-epoch2.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="is unreadable"):
        load_checkpoint(tmp_path)


# --- best epoch and the schedule --------------------------------------------------------------


def test_is_better_without_any_validation_or_loss():
    assert is_better(0.2, None, None, None)
    assert is_better(None, 0.1, 0.9, 0.01)
    assert not is_better(0.5, None, 0.5, 0.1)  # a tie without a loss keeps the earlier epoch
    assert is_better(0.5, None, 0.5, None)  # no loss stored for the best: the later wins
    assert is_better(0.75, None, 0.5, None)


def test_lr_factor_warms_up_then_follows_a_cosine_to_zero():
    assert lr_factor(0, 2, 10, "cosine") == pytest.approx(1 / 3)
    assert lr_factor(1, 2, 10, "cosine") == pytest.approx(2 / 3)
    assert lr_factor(2, 2, 10, "cosine") == 1.0
    assert lr_factor(4, 2, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(14, 2, 10, "cosine") == pytest.approx(0.0)  # past the end: stays at 0
    assert lr_factor(1, 2, 10, "constant") == pytest.approx(2 / 3)
    assert lr_factor(7, 2, 10, "constant") == 1.0
    assert lr_factor(0, 0, 4, "cosine") == 1.0
    assert lr_factor(2, 0, 4, "cosine") == pytest.approx(0.5)
    # A budget all warmup: cosine from its end, one step at a time.
    assert lr_factor(3, 3, 3, "cosine") == 1.0
    assert lr_factor(4, 3, 3, "cosine") == pytest.approx(0.0)


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    sampler = EpochShuffle(20, seed=3)
    assert len(sampler) == 20
    first = list(sampler)
    assert sorted(first) == list(range(20)) and list(sampler) == first
    sampler.set_epoch(2)
    second = list(sampler)
    assert sorted(second) == list(range(20)) and second != first
    other = EpochShuffle(20, seed=3)
    other.set_epoch(2)
    assert list(other) == second
    assert list(EpochShuffle(20, seed=4)) != first


def test_trains_anything():
    model = torch.nn.Linear(2, 2)
    assert engine.trains_anything(model)
    model.weight.requires_grad_(False)
    assert engine.trains_anything(model)
    model.bias.requires_grad_(False)
    assert not engine.trains_anything(model)


def test_fmt():
    assert _fmt(None) == "-" and _fmt(0.51249) == "0.512" and _fmt(1) == "1.000"


# --- fresh start, end of epoch, save, resume: stand-in loops ----------------------------------


class Method:
    """Trained tensors are the model's `w`, copied out and back as a method does."""

    def trained_state(self, model):
        return {"w": model.w.detach().clone()}

    def load_trained(self, model, state):
        with torch.no_grad():
            model.w.copy_(state["w"])


def stand_in_loop(epochs=3, validates=True, optimizer=True):
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = torch.optim.SGD([model.w], lr=0.1, momentum=0.9) if optimizer else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0) if optimizer else None
    return SimpleNamespace(
        unwrapped=model,
        optimizer=opt,
        scheduler=scheduler,
        epochs=epochs,
        val_loader=[] if validates else None,
        accelerator=SimpleNamespace(is_main_process=True),
    )


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def test_fresh_start_records_the_untrained_model_as_epoch_zero(tmp_path):
    loop = stand_in_loop()
    state = _fresh_start(loop, Method(), tmp_path, lambda: (0.25, 1.5))
    assert (state.start_epoch, state.step, state.best_epoch) == (0, 0, 0)
    assert state.best_state == {} and state.best_val is None and state.best_loss is None
    expected = [{"epoch": 0, "step": 0, "val_accuracy": 0.25, "val_loss": 1.5}]
    assert state.metrics == expected and metrics_lines(tmp_path) == expected


def test_fresh_start_of_a_run_that_trains_nothing_keeps_the_model(tmp_path):
    state = _fresh_start(stand_in_loop(epochs=0, validates=False), Method(), tmp_path, None)
    assert state.best_state["w"].tolist() == [1.0, 1.0]
    assert state.metrics == [] and not (tmp_path / METRICS_FILE).exists()


def test_only_the_main_process_writes_metrics(tmp_path):
    loop = stand_in_loop()
    loop.accelerator.is_main_process = False
    state = _fresh_start(loop, Method(), tmp_path, lambda: (0.5, 1.0))
    assert len(state.metrics) == 1 and not (tmp_path / METRICS_FILE).exists()


def end(loop, state, epoch, validation, w):
    with torch.no_grad():
        loop.unwrapped.w.fill_(w)
    record = {"epoch": epoch, "step": 2 * epoch}
    _end_epoch(loop, Method(), state, record, lambda: validation)
    return record


def test_end_of_epoch_keeps_the_best_validated_epoch():
    loop, state = stand_in_loop(), _Progress()
    assert end(loop, state, 1, (0.5, 1.0), 1.0) == {
        "epoch": 1,
        "step": 2,
        "val_accuracy": 0.5,
        "val_loss": 1.0,
        "best_epoch": 1,
    }
    end(loop, state, 2, (0.75, 0.9), 2.0)
    end(loop, state, 3, (0.5, 0.1), 3.0)  # lower loss, lower accuracy: not better
    end(loop, state, 4, (0.75, 0.9), 4.0)  # an exact tie keeps epoch 2
    assert [m["best_epoch"] for m in state.metrics] == [1, 2, 2, 2]
    assert (state.best_epoch, state.best_val, state.best_loss) == (2, 0.75, 0.9)
    assert state.best_state["w"].tolist() == [2.0, 2.0]
    end(loop, state, 5, (0.75, 0.5), 5.0)  # same accuracy, lower loss
    assert (state.best_epoch, state.best_loss) == (5, 0.5)
    assert state.best_state["w"].tolist() == [5.0, 5.0]


def test_end_of_epoch_without_validation_keeps_the_last():
    loop, state = stand_in_loop(validates=False), _Progress()
    record = end(loop, state, 1, None, 1.0)
    assert record == {"epoch": 1, "step": 2, "best_epoch": 1}
    end(loop, state, 2, None, 2.0)
    assert (state.best_epoch, state.best_val, state.best_loss) == (2, None, None)
    assert state.best_state["w"].tolist() == [2.0, 2.0]


def test_progress_scalars_and_outcome():
    state = _Progress(start_epoch=1, step=7, best_epoch=2, best_val=0.5, best_loss=0.25)
    state.best_state, state.metrics = {"w": torch.ones(1)}, [{"epoch": 1}]
    assert state.scalars() == {
        "step": 7,
        "best_epoch": 2,
        "best_val_accuracy": 0.5,
        "best_val_loss": 0.25,
    }
    outcome = state.outcome("cpu")
    assert (outcome.best_epoch, outcome.best_val_accuracy, outcome.steps) == (2, 0.5, 7)
    assert outcome.best_state is state.best_state and outcome.metrics is state.metrics
    assert outcome.device == "cpu"


@pytest.fixture
def no_pause(monkeypatch):
    paused = []
    monkeypatch.setattr(engine, "pause_point", paused.append)
    return paused


def train_one_step(loop, w):
    loop.unwrapped.w.grad = torch.tensor([1.0, -1.0])
    loop.optimizer.step()
    loop.scheduler.step()
    with torch.no_grad():
        loop.unwrapped.w.fill_(w)


def test_save_epoch_writes_metrics_then_a_checkpoint(tmp_path, no_pause):
    loop = stand_in_loop()
    train_one_step(loop, 3.0)
    state = _Progress(step=4, best_epoch=1, best_val=0.5, best_loss=0.8)
    state.best_state, state.metrics = {"w": torch.tensor([9.0, 9.0])}, [{"epoch": 1}, {"epoch": 2}]
    _save_epoch(loop, Method(), tmp_path, 2, state)
    assert no_pause == ["epoch-end"]
    assert metrics_lines(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    saved_state = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert saved_state["epoch"] == 2 and saved_state["scalars"] == state.scalars()
    assert saved_state["trained"]["w"].tolist() == [3.0, 3.0]
    assert saved_state["best"]["w"].tolist() == [9.0, 9.0]
    assert saved_state["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert saved_state["scheduler"]["last_epoch"] == 1
    state.best_epoch = 3
    _save_epoch(loop, Method(), tmp_path, 3, state)  # the best epoch is this one: no copy
    assert load_checkpoint(tmp_path / CHECKPOINT_DIR)["best"] == {}


@pytest.mark.parametrize("best_epoch", [1, 2])
def test_resume_restores_model_optimizer_progress_and_rng(tmp_path, no_pause, best_epoch):
    loop = stand_in_loop()
    train_one_step(loop, 3.0)
    momentum = loop.optimizer.state[loop.unwrapped.w]["momentum_buffer"].clone()
    state = _Progress(step=4, best_epoch=best_epoch, best_val=0.5, best_loss=0.8)
    state.best_state = {"w": torch.tensor([9.0, 9.0])}
    state.metrics = [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
    _save_epoch(loop, Method(), tmp_path, 2, state)
    (tmp_path / METRICS_FILE).write_text(
        "\n".join(json.dumps({"epoch": e}) for e in (0, 1, 2, 3)) + "\n"
    )  # epoch 3 was logged, then the run died before its checkpoint
    expected = torch.rand(2)
    torch.rand(5)

    fresh = stand_in_loop()
    progress = _resume(fresh, Method(), tmp_path)
    assert torch.equal(torch.rand(2), expected)  # the RNG state saved with the checkpoint
    assert fresh.unwrapped.w.tolist() == [3.0, 3.0]
    assert torch.equal(fresh.optimizer.state[fresh.unwrapped.w]["momentum_buffer"], momentum)
    assert fresh.scheduler.last_epoch == 1
    assert (progress.start_epoch, progress.step, progress.best_epoch) == (2, 4, best_epoch)
    assert (progress.best_val, progress.best_loss) == (0.5, 0.8)
    assert progress.metrics == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
    best_w = [3.0, 3.0] if best_epoch == 2 else [9.0, 9.0]
    assert progress.best_state["w"].tolist() == best_w


def test_resume_without_metrics_file_or_stored_loss(tmp_path, no_pause):
    loop = stand_in_loop(optimizer=False)
    scalars = {"step": 3, "best_epoch": 1, "best_val_accuracy": None}  # an older checkpoint
    save_checkpoint(
        tmp_path / CHECKPOINT_DIR,
        epoch=1,
        trained={"w": torch.tensor([2.0, 2.0])},
        best={},
        optimizer=None,
        scheduler=None,
        scalars=scalars,
    )
    progress = _resume(loop, Method(), tmp_path)
    assert progress.metrics == [] and progress.best_loss is None and progress.best_val is None
    assert progress.best_state["w"].tolist() == [2.0, 2.0]
    assert loop.unwrapped.w.tolist() == [2.0, 2.0]
