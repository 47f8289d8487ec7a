import json
import shutil
import time

import pytest
import torch
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge.errors import ModelError
from clipgauge.models import hub, loading
from clipgauge.models.loading import checkpoint_fingerprint, load_clip


def test_tiny_checkpoint_loads_with_plain_transformers(tiny_clip_dir):
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    proc = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    ids = tok(["a photo of a cat."], return_tensors="pt")
    assert ids["input_ids"][0, 0] == tok.bos_token_id
    assert ids["input_ids"][0, -1] == tok.eos_token_id
    assert tok.unk_token_id not in ids["input_ids"][0].tolist()
    assert model.config.text_config.eos_token_id == tok.eos_token_id != 2
    assert proc.crop_size["height"] == model.config.vision_config.image_size
    # without vision_mlp_width both towers have CLIP's 4 x width MLPs
    vision, text = model.config.vision_config, model.config.text_config
    assert vision.intermediate_size == 4 * vision.hidden_size
    assert text.intermediate_size == 4 * text.hidden_size


def test_load_clip_bundle(tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir), device="cpu")
    assert bundle.dtype == torch.float32
    assert bundle.device.type == "cpu"
    assert len(bundle.fingerprint) == 16
    assert bundle.provenance()["fingerprint"] == bundle.fingerprint
    assert not bundle.model.training


def test_fingerprint_tracks_weights_and_config(tiny_clip_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_clip_dir, copy)
    assert checkpoint_fingerprint(copy) == checkpoint_fingerprint(tiny_clip_dir)
    model = CLIPModel.from_pretrained(copy)
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    model.save_pretrained(copy)
    assert checkpoint_fingerprint(copy) != checkpoint_fingerprint(tiny_clip_dir)


def test_missing_folder_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_clip(str(tmp_path / "nope" / "model"))


def test_not_a_clip_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty is not a CLIP checkpoint.*config\.json"):
        load_clip(str(tmp_path / "empty"))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert' model, not a CLIP"):
        load_clip(str(other))


def test_pickle_only_checkpoint_refused(tiny_clip_dir, tmp_path):
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_clip_dir, copy)
    (copy / "model.safetensors").unlink()
    (copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="no .safetensors weights"):
        load_clip(str(copy))


def test_file_instead_of_folder(tiny_clip_dir):
    with pytest.raises(ModelError, match="is a file"):
        load_clip(str(tiny_clip_dir / "config.json"))


def test_uncached_hub_id_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelError, match="nor in the Hugging Face cache"):
        load_clip("someone/clip-that-is-not-cached")
    assert time.perf_counter() - start < 10


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="cannot be reached"):
        load_clip("someone/clip-that-is-not-cached")


def test_fp16_on_cpu_is_refused(tiny_clip_dir):
    with pytest.raises(ModelError, match="fp16 needs a GPU"):
        load_clip(str(tiny_clip_dir), device="cpu", dtype="fp16")


def test_world_clip_missing_message(monkeypatch):
    monkeypatch.setattr(loading, "named_models", lambda: {})
    with pytest.raises(ModelError, match="world pretrain"):
        load_clip("world-clip")
