"""Batched, cached extraction of L2-normalised CLIP image and text embeddings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from clipgauge.cache import TensorCache, atomic_save_tensors, atomic_write_bytes, cache_key
from clipgauge.data.dataset import ImageDataset
from clipgauge.data.images import printable_path
from clipgauge.encoding import encode_class_prompts, features, tokenize_class_prompts
from clipgauge.errors import ClipgaugeError, DataError
from clipgauge.models import backbone
from clipgauge.models.loading import ClipBundle
from clipgauge.pixels import PixelCache, decode_settings, item_pixels, usable_cache
from clipgauge.runtime import AUTO, LoaderSettings, autocast, loader_settings, mixed_precision

PREPROCESSING_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def preprocessing_config(processor) -> dict:
    """The image processor settings that decide pixel values (stored with every result)."""
    cfg = processor.to_dict()
    out = {k: cfg.get(k) for k in PREPROCESSING_KEYS}
    out["processor"] = type(processor).__name__
    # JPEGs much larger than the input are decoded at reduced scale, at least this many times
    # the resize target (pixels differ slightly from a full decode: results must not mix).
    out.update(decode_settings())
    return out


class _PixelDataset(torch.utils.data.Dataset):
    """Preprocessed pixels per item; a bad image yields an error string instead of raising,
    so a worker never dies and the caller decides whether to skip or stop."""

    def __init__(self, dataset: ImageDataset, processor, cache: PixelCache | None = None):
        self.dataset = dataset
        self.processor = processor
        self.cache = cache
        size = processor.crop_size if processor.do_center_crop else processor.size
        self.shape = (3, int(size.get("height", 0) or 0), int(size.get("width", 0) or 0))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return item_pixels(self.dataset, i, self.processor, self.cache), i, ""
        except DataError as err:
            return torch.zeros(self.shape), i, str(err)


def _collate(batch):
    errors = [e for _, _, e in batch]
    ok = [b for b in batch if not b[2]]
    pixels = torch.stack([p for p, _, _ in ok]) if ok else None
    return pixels, [i for _, i, _ in batch], errors


def embedding_loader(n_items: int, num_workers: int | None, device: torch.device):
    """Loader settings for one pass over `n_items` images. Workers only pay off when the model
    runs on an accelerator: on CPU, torch already uses every core for the forward pass and
    decoding workers compete with it (measured in benchmarks/bench_zeroshot.py); below 256
    images starting them costs more than they save."""
    if num_workers is None and n_items < 256:
        num_workers = 0
    return loader_settings(num_workers, device.type)


def embedding_precision(requested: str, bundle: ClipBundle) -> str:
    """The autocast of image embedding: "auto" is bf16 on a GPU that supports it when the
    weights are fp32 (weights loaded in bf16 or fp16 already run at that precision)."""
    if requested == AUTO and bundle.dtype != torch.float32:
        return "no"
    return mixed_precision(requested, bundle.device.type)


@torch.no_grad()
def encode_images(
    bundle: ClipBundle,
    dataset: ImageDataset,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
    pixel_cache: PixelCache | None = None,
    mixed_precision: str = AUTO,
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Normalised image embeddings (float32, CPU) for every readable item.

    Returns (embeddings, indices of the items embedded, [(path, reason)] of skipped items).
    Without `skip_bad_images`, the first unreadable image raises a DataError naming it.
    `mixed_precision`: see `embedding_precision`.
    """
    cache = usable_cache(pixel_cache, bundle.image_processor)
    pixels_ds = _PixelDataset(dataset, bundle.image_processor, cache)
    settings: LoaderSettings = embedding_loader(len(dataset), num_workers, bundle.device)
    loader = torch.utils.data.DataLoader(
        pixels_ds,
        batch_size=batch_size,
        collate_fn=_collate,
        **settings.loader_kwargs(single_pass=True),
    )
    precision = embedding_precision(mixed_precision, bundle)
    model = bundle.model
    chunks, kept, bad = [], [], []
    bar = tqdm(total=len(dataset), desc="images", unit="img", disable=not progress, leave=False)
    for pixels, indices, errors in loader:
        for i, err in zip(indices, errors, strict=True):
            if err and not skip_bad_images:
                raise DataError(err)
            if err:
                bad.append((printable_path(dataset.items[i].path), err))
            else:
                kept.append(i)
        if pixels is not None:
            pixels = pixels.to(bundle.device, bundle.dtype, non_blocking=settings.pin_memory)
            with autocast(bundle.device, precision):
                emb = features(model.get_image_features(pixel_values=pixels))
            chunks.append(F.normalize(emb.float(), dim=-1).cpu())
        bar.update(len(indices))
    bar.close()
    dim = backbone.embed_dim(model)
    embeds = torch.cat(chunks) if chunks else torch.zeros(0, dim)
    return embeds, kept, bad


@torch.no_grad()
def encode_texts(
    bundle: ClipBundle, texts: Sequence[str], *, batch_size: int = 256
) -> torch.Tensor:
    """Normalised text embeddings (float32, CPU), one row per text."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        tokens = {k: v.to(bundle.device) for k, v in bundle.tokenize(batch).items()}
        emb = features(bundle.model.get_text_features(**tokens))
        out.append(F.normalize(emb.float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_classes(
    bundle: ClipBundle, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """One normalised embedding per class (C x D, float32, CPU): see `clipgauge.encoding`.

    A fine-tuned model's own class encoder (`TunedClip.encode_classes`: a method's head or
    learned prompts) is used when the model has one."""
    prompts = tokenize_class_prompts(bundle.tokenize, class_names, templates).to(bundle.device)
    if hasattr(bundle.model, "encode_classes"):
        return bundle.model.encode_classes(prompts).cpu()

    def encode_text(input_ids, attention_mask):
        return bundle.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

    return encode_class_prompts(encode_text, prompts).cpu()


@dataclass
class TaskEmbeddings:
    """Zero-shot embeddings of a dataset with everything needed to trace them."""

    image_embeds: torch.Tensor  # N x D, L2-normalised
    text_embeds: torch.Tensor  # C x D, L2-normalised
    labels: torch.Tensor  # N
    domains: torch.Tensor  # N, index into domain_names
    class_names: list[str]
    domain_names: list[str]
    paths: list[str]
    templates: list[str]
    preprocessing: dict
    model: dict
    data: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    from_cache: bool = False

    def provenance(self) -> dict:
        return {
            "model": self.model,
            "data": self.data,
            "templates": self.templates,
            "preprocessing": self.preprocessing,
            "skipped_images": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _cache_keys(
    bundle: ClipBundle, dataset: ImageDataset, templates: Sequence[str], image_inputs: tuple
) -> tuple[str, str]:
    """(image key, text key); `image_inputs` is (data fingerprint, preprocessing, autocast,
    skip_bad_images)."""
    data_fingerprint, preprocessing, precision, skip_bad_images = image_inputs
    model_id = {"fingerprint": bundle.fingerprint, "dtype": str(bundle.dtype)}
    # Keys of fp32 embeddings stay as they were; class texts are always encoded in fp32.
    image_model = model_id if precision == "no" else {**model_id, "autocast": precision}
    image_key = cache_key(
        kind="images",
        model=image_model,
        data=data_fingerprint,
        preprocessing=preprocessing,
        skip_bad_images=skip_bad_images,
    )
    text_key = cache_key(
        kind="texts", model=model_id, classes=dataset.class_names, templates=list(templates)
    )
    return image_key, text_key


def embed_dataset(
    bundle: ClipBundle,
    dataset: ImageDataset,
    templates: Sequence[str],
    *,
    cache: TensorCache | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
    pixel_cache: PixelCache | None = None,
    mixed_precision: str = AUTO,
) -> TaskEmbeddings:
    """Image and class-text embeddings of a dataset, read from `cache` when already computed.

    `pixel_cache` keeps preprocessed pixels in memory for the next call (a study's runs);
    `mixed_precision` "auto" embeds images under bf16 autocast on a GPU that supports it
    (recorded in the result's model provenance and cache key), "no" in fp32."""
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.source.get('root', '')} has no images to embed")
    preprocessing = preprocessing_config(bundle.image_processor)
    precision = embedding_precision(mixed_precision, bundle)
    data_fingerprint = dataset.fingerprint()
    image_key, text_key = _cache_keys(
        bundle, dataset, templates, (data_fingerprint, preprocessing, precision, skip_bad_images)
    )
    hit = cache.get("images", image_key) if cache is not None else None
    if hit is not None:
        image_embeds, kept = hit[0]["embeds"], hit[0]["indices"].tolist()
        bad = [tuple(b) for b in hit[1].get("skipped", [])]
    else:
        image_embeds, kept, bad = encode_images(
            bundle,
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            skip_bad_images=skip_bad_images,
            progress=progress,
            pixel_cache=pixel_cache,
            mixed_precision=precision,
        )
        if cache is not None:
            cache.put(
                "images",
                image_key,
                {"embeds": image_embeds, "indices": torch.tensor(kept, dtype=torch.long)},
                {"skipped": bad},
            )
    text_hit = cache.get("texts", text_key) if cache is not None else None
    if text_hit is not None:
        text_embeds = text_hit[0]["embeds"]
    else:
        text_embeds = encode_classes(bundle, dataset.class_names, templates)
        if cache is not None:
            cache.put("texts", text_key, {"embeds": text_embeds}, {})
    if not kept:
        raise DataError(f"no readable images in {dataset.source.get('root', 'the dataset')}")
    items = [dataset.items[i] for i in kept]
    return TaskEmbeddings(
        image_embeds=image_embeds,
        text_embeds=text_embeds,
        labels=torch.tensor([it.label for it in items], dtype=torch.long),
        domains=torch.tensor([it.domain for it in items], dtype=torch.long),
        class_names=list(dataset.class_names),
        domain_names=list(dataset.domain_names),
        paths=[it.path for it in items],
        templates=list(templates),
        preprocessing=preprocessing,
        model={**bundle.provenance(), "autocast": precision},
        data={**dataset.source, "fingerprint": data_fingerprint, "n_items": len(dataset)},
        skipped=bad,
        from_cache=hit is not None,
    )


def check_embeddings_path(out: str | Path) -> Path:
    """The embeddings file to write; it must end in .safetensors."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ClipgaugeError(
            f"--out {out} must end in .safetensors, e.g. --out embeddings.safetensors"
        )
    return out


def save_embeddings(embeddings: TaskEmbeddings, out: str | Path) -> tuple[Path, Path]:
    """Write image_embeds, text_embeds, labels, domains as safetensors plus a sidecar JSON."""
    out = check_embeddings_path(out)
    sidecar = out.with_suffix(".json")
    atomic_save_tensors(
        out,
        {
            "image_embeds": embeddings.image_embeds,
            "text_embeds": embeddings.text_embeds,
            "labels": embeddings.labels,
            "domains": embeddings.domains,
        },
        {"sidecar": sidecar.name},
    )
    meta = {
        "class_names": embeddings.class_names,
        "domain_names": embeddings.domain_names,
        "paths": embeddings.paths,
        **embeddings.provenance(),
    }
    atomic_write_bytes(sidecar, json.dumps(meta, indent=2).encode())
    return out, sidecar


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
