"""Run folders end to end through the CLI: finetune, evaluate, export, WiSE-FT, load_run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from imagegen import write_image
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge.cli import main
from clipgauge.encoding import ClassPrompts
from clipgauge.methods import TunedClip
from clipgauge.training import RunError, export_run, load_run, merged_model

pytestmark = pytest.mark.usefixtures("one_thread")

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@pytest.fixture
def task(tmp_path):
    """photo/art x cat/dog, 5 images each."""
    root = tmp_path / "task"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(5):
                shade = 50 + 30 * i + 15 * d
                write_image(root / domain / name / f"{i}.png", (220, shade, 60)[:: 1 - 2 * c])
    return root


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def finetune_cli(capsys, model, data, out, method, *extra):
    code, stdout, err = cli(
        capsys,
        "finetune",
        "--model",
        model,
        "--data",
        data,
        "--train-domains",
        "photo",
        "--method",
        method,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--out",
        out,
        "--no-progress",
        *extra,
    )
    assert code == 0, err
    return stdout


def logits(model, tokenizer, processor, data: Path):
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted(data.glob("*/*/*.png"))[:6]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = tokenizer(
        ["a photo of a cat.", "a photo of a dog."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        if isinstance(model, TunedClip):
            prompts = ClassPrompts(tokens["input_ids"], tokens["attention_mask"], 1, 2)
            return model(pixels, prompts=prompts)
        return model(
            pixel_values=pixels,
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
        )


def test_finetune_evaluate_export_lora(capsys, tiny_clip_dir, task, tmp_path):
    run_dir = tmp_path / "run"
    out = finetune_cli(capsys, tiny_clip_dir, task, run_dir, "lora", "--method-opt", "rank=4")
    assert "lora: 2,048 trained parameters" in out  # 2 towers x 2 blocks x (q, v) x 4 x (32+32)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == {
        "name": "lora",
        "config": {
            "rank": 4,
            "alpha": 3.2,
            "dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"],
            "towers": "both",
            "init_std": 0.02,
        },
    }
    assert config["preset"] is None  # no preset is named like a tmp folder
    assert all(".lora_" in key for key in load_file(run_dir / "trained.safetensors"))

    code, table, err = cli(
        capsys,
        "evaluate",
        "--run",
        run_dir,
        "--data",
        task,
        "--json",
        tmp_path / "e.json",
        "--cache-dir",
        tmp_path / "cache",
        "--no-progress",
    )
    assert code == 0, err
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["art", "photo", "overall"]
    report = json.loads((tmp_path / "e.json").read_text())
    # auto split: photo (trained on) is scored on its 2 unseen test images, art on all 10
    assert report["domains"]["photo"]["n_images"] == 2
    assert report["domains"]["art"]["n_images"] == 10
    assert report["provenance"]["run"]["method"]["name"] == "lora"
    assert report["provenance"]["model"]["fingerprint"] != config["base_model"]["fingerprint"]

    code, _, err = cli(capsys, "export", "--run", run_dir, "--out", tmp_path / "hf")
    assert code == 0, err
    exported = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "hf")
    tuned = load_run(run_dir, "cpu")
    expected = logits(tuned.model, tokenizer, processor, task)
    got = logits(exported, tokenizer, processor, task).logits_per_image
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not any("lora" in n for n in load_file(tmp_path / "hf" / "model.safetensors"))

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {
        "config.json",
        "metrics.jsonl",
        "result.json",
        "trained.safetensors",
    }
    assert not [p for p in [*files, *(tmp_path / "hf").rglob("*")] if p.suffix in PICKLE_SUFFIXES]


def test_checkpoint_files_are_safetensors_and_json(tiny_clip_dir, task, tmp_path, capsys):
    run_dir = tmp_path / "run"
    finetune_cli(capsys, tiny_clip_dir, task, run_dir, "full", "--keep-checkpoint")
    names = sorted(p.name for p in (run_dir / "checkpoint").iterdir())
    assert names == ["state-epoch2.safetensors", "state.json"]
    assert not [p for p in run_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES]


def test_clip_adapter_cannot_be_exported(capsys, tiny_clip_dir, task, tmp_path):
    run_dir = tmp_path / "run"
    finetune_cli(capsys, tiny_clip_dir, task, run_dir, "clip-adapter")
    code, _, err = cli(capsys, "export", "--run", run_dir, "--out", tmp_path / "hf")
    assert code == 2
    assert "cannot be merged" in err and "non-linear" in err and "Traceback" not in err
    code, _, err = cli(
        capsys, "export", "--run", run_dir, "--out", tmp_path / "hf2", "--wise-alpha", "0.5"
    )
    assert code == 2 and "leaves them unchanged" in err
    code, table, err = cli(
        capsys, "evaluate", "--run", run_dir, "--data", task, "--no-cache", "--no-progress"
    )
    assert code == 0, err
    assert "overall" in table  # the evaluation table still prints for an unmergeable method


@pytest.mark.parametrize("method", ["bitfit", "lora"])
def test_wise_ft_interpolates_with_the_zero_shot_weights(tiny_clip_dir, task, tmp_path, method):
    from clipgauge.training import finetune

    run_dir = tmp_path / "run"
    finetune(
        str(tiny_clip_dir),
        str(task),
        ["photo"],
        method,
        {},
        {"epochs": 1, "lr": 0.05, "batch_size": 4},
        run_dir,
        progress=False,
    )
    base = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    tuned = merged_model(run_dir)[0].state_dict()
    half = merged_model(run_dir, wise_alpha=0.5)[0].state_dict()
    zero = merged_model(run_dir, wise_alpha=0.0)[0].state_dict()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert changed
    for key in base:
        torch.testing.assert_close(zero[key], base[key])
        if base[key].is_floating_point():
            torch.testing.assert_close(half[key], (base[key] + tuned[key]) / 2)
    wise = load_run(run_dir, wise_alpha=0.5)
    assert wise.fingerprint != load_run(run_dir).fingerprint
    with pytest.raises(RunError, match=r"must be in \[0, 1\]"):
        merged_model(run_dir, wise_alpha=1.5)


def test_zeroshot_run_exports_the_base_model_and_refuses_wise(tiny_clip_dir, task, tmp_path):
    from clipgauge.training import finetune

    finetune(str(tiny_clip_dir), str(task), ["photo"], "zeroshot", out_dir=tmp_path / "zs")
    out = export_run(tmp_path / "zs", tmp_path / "hf")
    base = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    exported = CLIPModel.from_pretrained(out).state_dict()
    assert all(torch.equal(base[k], exported[k]) for k in base)
    with pytest.raises(RunError, match="zeroshot .* leaves them unchanged"):
        export_run(tmp_path / "zs", tmp_path / "hf2", wise_alpha=0.5)
    with pytest.raises(RunError, match="not empty"):
        export_run(tmp_path / "zs", out)


def test_load_run_checks_the_base_model(tiny_clip_dir, task, tmp_path):
    from conftest import TINY_WORDS

    from clipgauge.models.build import build_clip
    from clipgauge.training import finetune

    run_dir = tmp_path / "run"
    finetune(str(tiny_clip_dir), str(task), ["photo"], "aclip", {}, {"epochs": 1}, run_dir)
    bundle = load_run(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert bundle.fingerprint != config["base_model"]["fingerprint"]
    assert (
        bundle.info["trained_digest"]
        == json.loads((run_dir / "result.json").read_text())["trained_digest"]
    )
    other = build_clip(tmp_path / "other", TINY_WORDS, seed=1)
    with pytest.raises(RunError, match="is not the one run .* was trained from"):
        load_run(run_dir, model=str(other))
    (run_dir / "trained.safetensors").unlink()
    with pytest.raises(RunError, match="did not finish"):
        load_run(run_dir)


def test_bad_inputs_are_clear_errors(capsys, tiny_clip_dir, task, tmp_path):
    base = ["finetune", "--model", tiny_clip_dir, "--data", task, "--out", tmp_path / "r"]
    code, _, err = cli(capsys, *base, "--method", "lorra")
    assert code == 2 and "unknown method 'lorra'" in err
    code, _, err = cli(capsys, *base, "--method", "lora", "--method-opt", "rank=x")
    assert code == 2 and "rank='x' is not a valid int" in err
    code, _, err = cli(capsys, *base, "--method", "full", "--train-domains", "sketch")
    assert code == 2 and "unknown domain" in err
    code, _, err = cli(capsys, *base, "--method", "full", "--preset", "paper")
    assert code == 2 and "unknown preset 'paper'" in err
    code, _, err = cli(capsys, "evaluate", "--run", tmp_path / "none", "--data", task)
    assert code == 2 and "config.json does not exist" in err


@pytest.mark.slow
def test_accelerate_launch_runs_finetune_unchanged(tiny_clip_dir, task, tmp_path):
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        str(launcher),
        "launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "clipgauge",
        "finetune",
        "--model",
        str(tiny_clip_dir),
        "--data",
        str(task),
        "--train-domains",
        "photo",
        "--method",
        "bitfit",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bitfit:" in done.stdout
    assert (tmp_path / "run" / "trained.safetensors").is_file()
