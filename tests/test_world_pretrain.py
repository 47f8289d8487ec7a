import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tinyworld import TINY_PRETRAIN
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge.cli import main
from clipgauge.errors import ClipgaugeError
from clipgauge.world import pretraining_stream, vocabulary
from clipgauge.world.captions import COUNT_WORDS, POSITION_PHRASES, caption_words
from clipgauge.world.pretrain import (
    PretrainConfig,
    _pixels,
    pretrain,
    sincos_grid,
    text_lr_scale_at,
)
from clipgauge.world.scene import SHAPES, SIZES, TEXTURES
from clipgauge.world.zeroshot import markdown_table, world_zeroshot

TINY = TINY_PRETRAIN


def test_pretrain_writes_a_plain_hf_checkpoint(tmp_path):
    out = pretrain(PretrainConfig(**TINY), tmp_path / "wc", progress=False)
    model = CLIPModel.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    proc = CLIPImageProcessor.from_pretrained(out)
    assert model.config.vision_config.image_size == 32
    assert proc.crop_size == {"height": 32, "width": 32}
    # the activation is a plain config field: transformers alone builds the same MLPs
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == "gelu"
    assert type(model.vision_model.encoder.layers[0].mlp.activation_fn).__name__ == "GELUActivation"
    # the image tower's MLP width is the config's; the text tower keeps CLIP's 4 x width
    assert model.config.vision_config.intermediate_size == TINY["vision_mlp_width"] == 48
    assert model.vision_model.encoder.layers[0].mlp.fc1.out_features == 48
    assert model.config.text_config.intermediate_size == 4 * TINY["text_width"]
    record = json.loads((out / "pretraining.json").read_text())
    assert record["config"]["steps"] == 3 and len(record["log"]) >= 2
    # every caption word is in the tokenizer: nothing maps to <unk>
    ids = tok(vocabulary())["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    assert not any(tmp_path.glob(".*tmp"))


def test_pretrain_is_deterministic(tmp_path):
    a = pretrain(PretrainConfig(**TINY), tmp_path / "a", progress=False)
    b = pretrain(PretrainConfig(**TINY), tmp_path / "b", progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = pretrain(PretrainConfig(**{**TINY, "seed": 1}), tmp_path / "c", progress=False)
    wc = load_file(c / "model.safetensors")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_training_pixels_equal_the_image_processor(tmp_path):
    out = pretrain(PretrainConfig(**{**TINY, "steps": 1}), tmp_path / "wc", progress=False)
    proc = CLIPImageProcessor.from_pretrained(out)
    images, _ = next(pretraining_stream(0, 4, size=32))
    ours = _pixels(images)
    ref = proc(images=list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_world_zeroshot_table(tmp_path):
    out = pretrain(PretrainConfig(**{**TINY, "steps": 1}), tmp_path / "wc", progress=False)
    reports = world_zeroshot(out, per_class=2)
    assert set(reports) >= {"shapes", "colours", "textures", "counts", "positions"}
    table = markdown_table(reports)
    assert table.count("\n") > 2 * len(reports)
    for report in reports.values():
        accs = [row["zero_shot_accuracy"] for row in report.rows.values()]
        assert all(0.0 <= a <= 1.0 for a in accs)


def test_world_cli_commands(tmp_path, capsys):
    assert main(["world", "tasks", "--json", str(tmp_path / "tasks.json")]) == 0
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert "shapes" in tasks and tasks["shapes"]["classes"]
    assert main(["world", "show", "--out", str(tmp_path / "grid.png"), "--per-domain", "3"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    out = tmp_path / "export"
    args = ["world", "export", "--task", "sizes", "--per-class", "2", "--out", str(out)]
    assert main(args) == 0
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 2 * 2 * len(tasks["sizes"]["domains"])
    code = main(["measure", "--model", "nope/not-here", "--data", "world:unknown-task"])
    assert code == 2


def test_world_data_through_measure(tmp_path, capsys):
    model = pretrain(PretrainConfig(**{**TINY, "steps": 1}), tmp_path / "wc", progress=False)
    code = main(
        [
            "measure",
            "--model",
            str(model),
            "--data",
            "world:sizes?per_class=3",
            "--no-cache",
            "--no-progress",
            "--json",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["overall"]["n_classes"] == 2
    assert report["provenance"]["data"]["kind"] == "world"
    assert np.isfinite(report["overall"]["acs"])


def test_sincos_grid_codes_rows_and_columns():
    codes = sincos_grid(4, 16).view(4, 4, 16)
    # the first half depends on the row only, the second half on the column only
    assert torch.equal(codes[:, 0, :8], codes[:, 3, :8])
    assert torch.equal(codes[0, :, 8:], codes[3, :, 8:])
    assert not torch.equal(codes[0, 0, :8], codes[1, 0, :8])
    # the lowest frequency is pos * 1: sin(1) for row 1
    assert codes[1, 0, 0].item() == pytest.approx(np.sin(1.0), abs=1e-6)
    flat = codes.view(16, 16)
    assert len({tuple(row.tolist()) for row in flat}) == 16  # every patch has its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_grid(4, 10)


def test_sincos_position_init_reaches_the_saved_model(tmp_path):
    cfg = PretrainConfig(**{**TINY, "steps": 1, "lr": 1e-9, "position_init": "sincos"})
    out = pretrain(cfg, tmp_path / "wc", progress=False)
    weight = CLIPModel.from_pretrained(out).vision_model.embeddings.position_embedding.weight
    grid = cfg.image_size // cfg.patch_size
    expected = cfg.position_scale * sincos_grid(grid, cfg.vision_width)
    torch.testing.assert_close(weight[1:], expected, atol=1e-5, rtol=0)
    assert weight[0].abs().max() < 1e-5
    with pytest.raises(ValueError, match="position_init"):
        pretrain(PretrainConfig(**{**TINY, "position_init": "learned"}), tmp_path / "x")


def _text_weights(path) -> dict[str, torch.Tensor]:
    weights = load_file(path / "model.safetensors")
    return {k: v for k, v in weights.items() if k.startswith("text_")}


def test_primer_locks_the_text_tower_then_the_main_mix_trains_it(tmp_path):
    start = pretrain(
        PretrainConfig(**{**TINY, "steps": 1, "lr": 0.0}), tmp_path / "s", progress=False
    )
    primed = pretrain(PretrainConfig(**{**TINY, "primer_steps": 3}), tmp_path / "p", progress=False)
    mixed = pretrain(PretrainConfig(**{**TINY, "primer_steps": 0}), tmp_path / "m", progress=False)
    s, p, m = _text_weights(start), _text_weights(primed), _text_weights(mixed)
    assert all(torch.equal(s[k], p[k]) for k in s)  # three primer steps: text untouched
    assert not all(torch.equal(s[k], m[k]) for k in s)
    vision_s = load_file(start / "model.safetensors")["visual_projection.weight"]
    vision_p = load_file(primed / "model.safetensors")["visual_projection.weight"]
    assert not torch.equal(vision_s, vision_p)  # while the image tower learns


def test_text_lr_scale_slows_only_the_text_tower(tmp_path):
    start = pretrain(
        PretrainConfig(**{**TINY, "steps": 1, "lr": 0.0}), tmp_path / "s", progress=False
    )
    frozen = pretrain(
        PretrainConfig(
            **{**TINY, "primer_steps": 0, "text_lr_scale": 0.0, "text_lr_scale_end": 0.0}
        ),
        tmp_path / "f",
        progress=False,
    )
    s, f = _text_weights(start), _text_weights(frozen)
    assert all(torch.equal(s[k], f[k]) for k in s)  # lr 0 for the text: AdamW leaves it be
    vision_s = load_file(start / "model.safetensors")["visual_projection.weight"]
    vision_f = load_file(frozen / "model.safetensors")["visual_projection.weight"]
    assert not torch.equal(vision_s, vision_f)


def test_text_lr_scale_rises_from_the_primers_end_to_the_last_step():
    cfg = PretrainConfig(steps=11, primer_steps=1, text_lr_scale=0.1, text_lr_scale_end=1.0)
    scales = [text_lr_scale_at(step, cfg) for step in range(cfg.steps)]
    assert scales[:2] == [0.1, 0.1]  # the primer (text locked anyway) and the first main step
    assert scales[-1] == pytest.approx(1.0) and scales[6] == pytest.approx(0.1 + 5 / 9 * 0.9)
    assert all(b > a for a, b in zip(scales[1:], scales[2:], strict=False))
    flat = replace(cfg, text_lr_scale_end=0.1)
    assert {text_lr_scale_at(s, flat) for s in range(flat.steps)} == {0.1}


def test_pretrain_gives_the_text_groups_the_rising_scale(monkeypatch, tmp_path):
    from clipgauge.world import pretrain as module

    seen, real = [], module.train_step

    def spy(model, tokenizer, optimizer, images, captions, lr):
        text = {g["lr_scale"] for g in optimizer.param_groups if g["text"]}
        vision = {g["lr_scale"] for g in optimizer.param_groups if not g["text"]}
        seen.append((text, vision))
        return real(model, tokenizer, optimizer, images, captions, lr)

    monkeypatch.setattr(module, "train_step", spy)
    cfg = PretrainConfig(**{**TINY, "steps": 4, "primer_steps": 1, "text_lr_scale_end": 0.7})
    pretrain(cfg, tmp_path / "wc", progress=False)
    assert [text for text, _ in seen] == [{text_lr_scale_at(s, cfg)} for s in range(4)]
    (last,) = seen[-1][0]
    assert last == pytest.approx(0.7) and all(vision == {1.0} for _, vision in seen)


def test_negative_text_lr_scale_is_a_clear_error(tmp_path):
    with pytest.raises(ClipgaugeError, match="text_lr_scale_end must be >= 0"):
        pretrain(PretrainConfig(**{**TINY, "text_lr_scale_end": -1.0}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_primer_captions_name_only_where_one_or_two_objects_are(monkeypatch, tmp_path):
    from clipgauge.world import pretrain as module

    seen, original = [], module.pretraining_stream

    def spy(*args, **kwargs):
        for images, captions in original(*args, **kwargs):
            seen.append((kwargs.get("start", 0), captions))
            yield images, captions

    monkeypatch.setattr(module, "pretraining_stream", spy)
    pretrain(PretrainConfig(**{**TINY, "primer_steps": 2}), tmp_path / "wc", progress=False)
    primer = [c for start, batch in seen if start == 0 for c in batch]
    main_mix = [c for start, batch in seen if start > 0 for c in batch]
    assert len(primer) == 2 * TINY["batch_size"] and main_mix
    where = {w for phrases in POSITION_PHRASES.values() for p in phrases for w in p.split()[2:3]}
    # colour is named at its usual odds (PretrainConfig.primer_mention); these never are
    named = set(SHAPES) | set(TEXTURES) | set(SIZES) | set(COUNT_WORDS.values())
    for caption in primer:
        words = set(caption_words(caption))
        assert words & where and not words & named, caption
    assert any(set(caption_words(c)) & named for c in main_mix)


def test_pretrain_cli_rejects_a_negative_primer(tmp_path, capsys):
    code = main(["world", "pretrain", "--out", str(tmp_path / "wc"), "--primer-steps", "-1"])
    assert code == 2
    assert "--primer-steps" in capsys.readouterr().err
    assert not (tmp_path / "wc").exists()


def test_pretrain_cli_rejects_a_zero_mlp_width(tmp_path, capsys):
    code = main(["world", "pretrain", "--out", str(tmp_path / "wc"), "--vision-mlp-width", "0"])
    assert code == 2
    assert "--vision-mlp-width" in capsys.readouterr().err
    assert not (tmp_path / "wc").exists()
