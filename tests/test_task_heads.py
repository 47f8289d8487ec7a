"""Methods with task-specific class parts: linear-probe and lp-ft (a zero-shot-initialised head),
coop (learned prompt context); their phases, and how other tasks' classes are embedded."""

import copy
import json

import pytest
import torch
from imagegen import write_image
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPModel

from clipgauge.embeddings import encode_classes
from clipgauge.encoding import tokenize_class_prompts
from clipgauge.methods import MethodError, MethodTask, TunedClip, get_method
from clipgauge.methods.lp_ft import probe_epochs
from clipgauge.models import backbone
from clipgauge.models.loading import load_clip
from clipgauge.training import TrainConfig, engine, evaluate_run, finetune, load_run
from clipgauge.training.load import other_task_bundle

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES, TEMPLATES = ["cat", "dog"], ["a photo of a {}."]


@pytest.fixture(scope="module")
def tokenizer(tiny_clip_dir):
    return AutoTokenizer.from_pretrained(tiny_clip_dir)


@pytest.fixture(scope="module")
def base_clip(tiny_clip_dir):
    return CLIPModel.from_pretrained(tiny_clip_dir).eval()


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads") / "colours"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(CLASSES):
            for i in range(6):
                shade = 40 + 25 * i + 10 * d
                write_image(root / domain / name / f"{i}.png", (230, shade, 60)[:: 1 - 2 * c])
    return root


def prepare(base_clip, tokenizer, name, classes=CLASSES, **options):
    method = get_method(name)
    task = MethodTask.of(classes, TEMPLATES, tokenizer)
    return method, method.prepare(copy.deepcopy(base_clip), method.make_config(options), task)


def prompts_of(tuned, tokenizer, classes, templates=TEMPLATES):
    tokenize = lambda texts: backbone.tokenize(tuned.clip, tokenizer, texts)  # noqa: E731
    return tokenize_class_prompts(tokenize, classes, templates)


def test_linear_probe_starts_as_the_zero_shot_head(base_clip, tokenizer):
    method, tuned = prepare(base_clip, tokenizer, "linear-probe")
    prompts = prompts_of(tuned, tokenizer, CLASSES)
    with torch.no_grad():
        zero_shot = TunedClip(copy.deepcopy(base_clip)).encode_classes(prompts)
        torch.testing.assert_close(tuned.encode_classes(prompts), zero_shot, rtol=0, atol=1e-6)
    assert {n for n, p in tuned.named_parameters() if p.requires_grad} == {"class_encoder.weight"}
    assert tuned.class_encoder.weight.shape == (2, 32)
    # the head is the class side (asked each step) on a frozen image tower (features cached)
    assert method.trains_text_tower(tuned) and not method.trains_image_tower(tuned)
    with pytest.raises(MethodError, match="trained for 2 classes, not 3.*other_task_view"):
        tuned.encode_classes(prompts_of(tuned, tokenizer, ["cat", "dog", "bird"]))


def test_other_task_view_drops_the_class_encoder_and_shares_the_towers(base_clip, tokenizer):
    for name in ("linear-probe", "lp-ft", "coop"):
        method, tuned = (
            prepare(base_clip, tokenizer, name, n_ctx=4)
            if name == "coop"
            else (prepare(base_clip, tokenizer, name))
        )
        view = method.other_task_view(tuned)
        assert view.class_encoder is None and view.clip is tuned.clip
        prompts = prompts_of(tuned, tokenizer, ["cat", "dog", "bird"])
        with torch.no_grad():
            assert torch.equal(view.encode_classes(prompts), tuned.prompt_classes(prompts))
    method, tuned = prepare(base_clip, tokenizer, "full")
    assert method.other_task_view(tuned) is tuned


@pytest.mark.parametrize(
    "fraction, epochs, probing", [(0.5, 4, 2), (0.5, 1, 1), (0.5, 2, 1), (0.9, 10, 9), (0.1, 3, 1)]
)
def test_probe_epochs(fraction, epochs, probing):
    assert probe_epochs(fraction, epochs) == probing


def test_lp_ft_phases(base_clip, tokenizer):
    method, tuned = prepare(base_clip, tokenizer, "lp-ft", ft_lr_scale=0.25)
    saved = set(method.trained_state(tuned))
    assert "class_encoder.weight" in saved and "visual_projection.weight" in saved
    assert not any(k.startswith(("text_model.", "text_projection.", "logit")) for k in saved)
    for epoch, (scale, trains_tower) in enumerate([(1.0, False), (1.0, False), (0.25, True)], 1):
        assert method.on_epoch_start(tuned, epoch, 3 + 1) == scale
        assert method.trains_image_tower(tuned) is trains_tower
        assert tuned.class_encoder.weight.requires_grad
        # whatever trains this epoch, the saved tensors are every phase's
        assert set(method.trained_state(tuned)) == saved
    with pytest.raises(MethodError, match=r"lp_fraction=1.0 must be in \(0, 1\)"):
        method.make_config({"lp_fraction": "1"})


def run(tiny_clip_dir, data, out, method, options=None, resume=False, **train):
    config = TrainConfig(
        **{"batch_size": 4, "epochs": 3, "lr": 1e-2, "val_fraction": 0.25, **train}
    )
    return finetune(
        str(tiny_clip_dir), str(data), ["photo"], method, options or {}, config, out,
        resume=resume, progress=False,
    )  # fmt: skip


def test_lp_ft_trains_the_head_first_then_the_tower_at_a_lower_lr(
    tiny_clip_dir, colours, tmp_path, monkeypatch
):
    epochs_seen = []
    original = engine._train_epoch

    def spy(loop, epoch, progress, class_embeds, bar):
        tower = loop.unwrapped.clip.vision_model.encoder.layers[0].self_attn.q_proj.weight
        before = tower.detach().clone()
        lr = loop.optimizer.param_groups[0]["lr"]
        loss = original(loop, epoch, progress, class_embeds, bar)
        epochs_seen.append((epoch, lr, not torch.equal(before, tower)))
        return loss

    monkeypatch.setattr(engine, "_train_epoch", spy)
    run(
        tiny_clip_dir, colours, tmp_path / "run", "lp-ft", {"ft_lr_scale": 0.1}, schedule="constant"
    )
    assert [(e, moved) for e, _, moved in epochs_seen] == [(1, False), (2, False), (3, True)]
    lrs = [lr for _, lr, _ in epochs_seen]
    assert lrs[0] == lrs[1] == pytest.approx(1e-2) and lrs[2] == pytest.approx(1e-3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("lr") for m in lines[1:]] == pytest.approx([1e-2, 1e-2, 1e-3])


@pytest.mark.parametrize("stop_after", [1, 2])
def test_lp_ft_resume_equals_an_uninterrupted_run(
    tiny_clip_dir, colours, tmp_path, monkeypatch, stop_after
):
    whole = run(tiny_clip_dir, colours, tmp_path / "whole", "lp-ft", warmup_steps=1)
    save = engine.save_checkpoint

    def save_then_stop(folder, **kwargs):
        save(folder, **kwargs)
        if kwargs["epoch"] == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_clip_dir, colours, tmp_path / "cut", "lp-ft", warmup_steps=1)
    monkeypatch.setattr(engine, "save_checkpoint", save)
    resumed = run(tiny_clip_dir, colours, tmp_path / "cut", "lp-ft", resume=True, warmup_steps=1)
    first = load_file(tmp_path / "whole" / "trained.safetensors")
    second = load_file(tmp_path / "cut" / "trained.safetensors")
    assert first.keys() == second.keys() and "class_encoder.weight" in first
    assert all(torch.equal(first[k], second[k]) for k in first)
    drop = lambda ms: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in ms]  # noqa: E731
    assert drop(resumed.metrics) == drop(whole.metrics)


def test_coop_context_sits_where_the_placeholders_were(base_clip, tokenizer):
    method, tuned = prepare(base_clip, tokenizer, "coop", n_ctx=4)
    encoder = tuned.class_encoder
    assert encoder.start == 1 and encoder.context.shape == (4, 32)
    assert {n for n, p in tuned.named_parameters() if p.requires_grad} == {"class_encoder.context"}
    # context vectors equal to the placeholder's own token embedding: the plain text tower
    embedding = tuned.clip.text_model.embeddings.token_embedding
    placeholder = encoder.input_ids[0, 1]
    with torch.no_grad():
        encoder.context.copy_(embedding.weight[placeholder].expand(4, -1))
        plain = tuned.get_text_features(encoder.input_ids, encoder.attention_mask)
        learned = encoder.learned_classes(tuned)
    torch.testing.assert_close(learned, torch.nn.functional.normalize(plain, dim=-1))
    assert method.trains_text_tower(tuned) and not method.trains_image_tower(tuned)


def test_coop_init_from_words_is_the_hand_written_prompt(base_clip, tokenizer):
    _, tuned = prepare(base_clip, tokenizer, "coop", n_ctx=4, init="a photo of a")
    prompts = prompts_of(tuned, tokenizer, CLASSES, ["a photo of a {}."])
    with torch.no_grad():
        learned = tuned.class_encoder.learned_classes(tuned)
        torch.testing.assert_close(learned, tuned.prompt_classes(prompts))
    with pytest.raises(MethodError, match="is 4 tokens; set n_ctx=4"):
        prepare(base_clip, tokenizer, "coop", init="a photo of a")
    with pytest.raises(MethodError, match="more than the text tower's 16 positions; lower n_ctx"):
        prepare(base_clip, tokenizer, "coop")  # 16 context vectors do not fit the tiny tower


def test_forgetting_and_other_datasets_use_the_other_task_view(tiny_clip_dir, colours, tmp_path):
    """A head (linear-probe) changes nothing shared: other tasks see the zero-shot model."""
    run(tiny_clip_dir, colours, tmp_path / "run", "linear-probe", epochs=2)
    tuned = load_run(tmp_path / "run", device="cpu")
    base = load_clip(str(tiny_clip_dir), device="cpu")
    other = ["dog", "cat", "bird"]
    view = other_task_bundle(tuned)
    assert view.fingerprint != tuned.fingerprint and view.info["other_task_view"]
    assert torch.equal(
        encode_classes(view, other, TEMPLATES), encode_classes(base, other, TEMPLATES)
    )
    assert other_task_bundle(base) is base
    # the run's own classes: the head, which training moved
    assert not torch.equal(
        encode_classes(tuned, CLASSES, TEMPLATES), encode_classes(base, CLASSES, TEMPLATES)
    )
    renamed = tmp_path / "renamed"
    for path in colours.rglob("*.png"):
        target = renamed / path.relative_to(colours).as_posix().replace("cat", "bird")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    report = evaluate_run(tmp_path / "run", str(renamed), device="cpu", progress=False)
    assert report.provenance["run"]["other_task_view"] is True
