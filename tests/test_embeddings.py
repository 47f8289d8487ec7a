import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge.cache import TensorCache
from clipgauge.data.folders import from_domainbed
from clipgauge.embeddings import embed_dataset, encode_classes, encode_texts, save_embeddings
from clipgauge.errors import DataError
from clipgauge.models.loading import load_clip

TEMPLATE = ["a photo of a {}."]


@pytest.fixture(scope="module")
def bundle(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir), device="cpu")


def test_embeddings_match_plain_transformers(bundle, tiny_clip_dir, domainbed_root):
    data = from_domainbed(domainbed_root)
    emb = embed_dataset(bundle, data, TEMPLATE, progress=False)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    proc = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        pixels = proc(images=[data.load_image(i) for i in range(len(data))], return_tensors="pt")
        ref_img = model.get_image_features(pixel_values=pixels["pixel_values"])
        ref_img = F.normalize(getattr(ref_img, "pooler_output", ref_img), dim=-1)
        prompts = [TEMPLATE[0].format(c) for c in data.class_names]
        tokens = tok(prompts, padding=True, return_tensors="pt")
        ref_txt = model.get_text_features(**tokens)
        ref_txt = F.normalize(getattr(ref_txt, "pooler_output", ref_txt), dim=-1)
    torch.testing.assert_close(emb.image_embeds, ref_img, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(emb.text_embeds, ref_txt, atol=1e-5, rtol=1e-4)
    assert emb.labels.tolist() == data.labels
    assert emb.domains.tolist() == data.domains
    assert torch.allclose(emb.image_embeds.norm(dim=1), torch.ones(len(data)), atol=1e-5)


def test_padding_does_not_change_text_embedding(bundle):
    alone = encode_texts(bundle, ["a cat"])
    padded = encode_texts(bundle, ["a cat", "a photo of the hot dog"])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-4)


def test_prompt_ensemble_is_renormalised_mean(bundle):
    templates = ["a photo of a {}.", "a sketch of the {}."]
    ensemble = encode_classes(bundle, ["cat", "dog"], templates)
    singles = torch.stack([encode_classes(bundle, ["cat", "dog"], [t]) for t in templates])
    torch.testing.assert_close(ensemble, F.normalize(singles.mean(0), dim=-1))


def test_cache_hit_and_invalidation(bundle, domainbed_root, tmp_path):
    data = from_domainbed(domainbed_root)
    cache = TensorCache(tmp_path / "cache")
    first = embed_dataset(bundle, data, TEMPLATE, cache=cache, progress=False)
    second = embed_dataset(bundle, data, TEMPLATE, cache=cache, progress=False)
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.image_embeds, second.image_embeds)
    assert torch.equal(first.text_embeds, second.text_embeds)
    # a touched file changes the dataset fingerprint: the image cache is not trusted
    path = data.items[0].path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = embed_dataset(
        bundle, from_domainbed(domainbed_root), TEMPLATE, cache=cache, progress=False
    )
    assert not third.from_cache


def test_damaged_cache_entry_is_recomputed(bundle, domainbed_root, tmp_path):
    data = from_domainbed(domainbed_root)
    cache = TensorCache(tmp_path / "cache")
    embed_dataset(bundle, data, TEMPLATE, cache=cache, progress=False)
    for f in (tmp_path / "cache" / "images").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:50])
    again = embed_dataset(bundle, data, TEMPLATE, cache=cache, progress=False)
    assert not again.from_cache
    assert again.image_embeds.shape[0] == len(data)


def test_workers_give_same_embeddings(bundle, domainbed_root):
    data = from_domainbed(domainbed_root)
    a = embed_dataset(bundle, data, TEMPLATE, num_workers=0, batch_size=3, progress=False)
    b = embed_dataset(bundle, data, TEMPLATE, num_workers=2, batch_size=2, progress=False)
    torch.testing.assert_close(a.image_embeds, b.image_embeds)


def test_bad_image_stops_or_is_skipped(bundle, domainbed_root):
    bad = domainbed_root / "photo" / "dog" / "broken.png"
    bad.write_bytes(b"this is not a png")
    data = from_domainbed(domainbed_root)
    with pytest.raises(DataError, match="broken.png"):
        embed_dataset(bundle, data, TEMPLATE, progress=False)
    emb = embed_dataset(bundle, data, TEMPLATE, skip_bad_images=True, progress=False)
    assert len(emb.skipped) == 1 and emb.skipped[0][0].endswith("broken.png")
    assert emb.image_embeds.shape[0] == len(data) - 1
    assert all(not p.endswith("broken.png") for p in emb.paths)


def test_save_embeddings_file_and_sidecar(bundle, domainbed_root, tmp_path):
    data = from_domainbed(domainbed_root)
    emb = embed_dataset(bundle, data, TEMPLATE, progress=False)
    out, sidecar = save_embeddings(emb, tmp_path / "emb.safetensors")
    tensors = load_file(out)
    assert set(tensors) == {"image_embeds", "text_embeds", "labels", "domains"}
    assert tensors["image_embeds"].shape == (len(data), bundle.model.config.projection_dim)
    meta = json.loads(sidecar.read_text())
    assert meta["class_names"] == data.class_names
    assert meta["domain_names"] == data.domain_names
    assert meta["templates"] == TEMPLATE
    assert meta["model"]["fingerprint"] == bundle.fingerprint
    assert meta["preprocessing"]["crop_size"] == {"height": 32, "width": 32}
    assert len(meta["paths"]) == len(data)


def test_atomic_writes_are_world_readable(tmp_path):
    import stat

    from clipgauge.cache import atomic_write_bytes

    target = tmp_path / "report.html"
    atomic_write_bytes(target, b"<html></html>")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH
    assert target.read_bytes() == b"<html></html>"
