import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge import embeddings
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


def plain_class_embeddings(model_dir, class_names, templates) -> torch.Tensor:
    """Per template, normalised text embeddings with plain transformers; their mean, normalised."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    per_template = []
    with torch.no_grad():
        for template in templates:
            prompts = [template.format(name) for name in class_names]
            out = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt"))
            per_template.append(F.normalize(getattr(out, "pooler_output", out), dim=-1))
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


def test_new_templates_get_a_new_text_cache_key_and_fresh_embeddings(
    bundle, tiny_clip_dir, domainbed_root, tmp_path, monkeypatch
):
    data = from_domainbed(domainbed_root)
    cache = TensorCache(tmp_path / "cache")
    encoded = []  # the templates of every class-text encoding that really ran
    encode = embeddings.encode_classes

    def counted(bundle, class_names, templates):
        encoded.append(list(templates))
        return encode(bundle, class_names, templates)

    monkeypatch.setattr(embeddings, "encode_classes", counted)

    def text_entries() -> set[str]:
        return {p.name for p in (tmp_path / "cache" / "texts").glob("*.safetensors")}

    photo, ensemble = ["a photo of a {}."], ["a photo of a {}.", "a sketch of the {}."]
    first = embed_dataset(bundle, data, photo, cache=cache, progress=False)
    entries_first = text_entries()
    second = embed_dataset(bundle, data, ensemble, cache=cache, progress=False)
    assert len(entries_first) == 1 and len(text_entries()) == 2  # a second key, a second entry
    assert encoded == [photo, ensemble]  # recomputed, not the photo-only entry reused
    assert second.from_cache  # while the images, which no template touches, came from the cache
    assert second.templates == ensemble
    reference = plain_class_embeddings(tiny_clip_dir, data.class_names, ensemble)
    torch.testing.assert_close(second.text_embeds, reference, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(second.text_embeds, first.text_embeds, atol=1e-3)
    third = embed_dataset(bundle, data, photo, cache=cache, progress=False)
    assert encoded == [photo, ensemble]  # the first templates again: their entry is read
    assert torch.equal(third.text_embeds, first.text_embeds)
    assert len(text_entries()) == 2
