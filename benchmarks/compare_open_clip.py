"""Compare clipgauge's open_clip loading with the real open_clip package, where it imports.

    python benchmarks/compare_open_clip.py --arch ViT-B-32                 # random weights
    python benchmarks/compare_open_clip.py --arch ViT-B-32 --pretrained laion2b_s34b_b79k

open_clip needs torchvision built for the installed torch, so this is not part of CI. It builds
the model with open_clip, writes its state dict as safetensors, loads that through
`open_clip:<arch>:<file>`, and prints the largest differences of the token ids, the image
embeddings (`encode_image`) and the text embeddings (`encode_text`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

TEXTS = [
    "a photo of a dog.",
    "A PHOTO of   the  Café &amp; bar",
    "a sketch of a hot-air balloon",
    "schön 日本語 текст",
    "the quick brown fox jumps over the lazy dog " * 12,
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="an open_clip pretrained tag")
    args = parser.parse_args()
    try:
        import open_clip
    except ImportError as err:
        print(f"open_clip cannot be imported here ({err}); nothing to compare", file=sys.stderr)
        return 1
    from clipgauge.models.loading import load_clip

    torch.manual_seed(0)
    reference = open_clip.create_model(args.arch, pretrained=args.pretrained).eval()
    tokenizer = open_clip.get_tokenizer(args.arch)
    arch = args.arch
    if getattr(reference, "transformer", None) is not None and "quickgelu" not in arch:
        act = type(reference.transformer.resblocks[0].mlp.gelu).__name__
        arch = f"{arch}-quickgelu" if act == "QuickGELU" else arch
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "open_clip_model.safetensors"
        state = {k: v.contiguous() for k, v in reference.state_dict().items()}
        save_file(state, weights)
        bundle = load_clip(f"open_clip:{arch}:{weights}", device="cpu")
    ids = tokenizer(TEXTS)
    ours_ids = torch.tensor(bundle.tokenizer.as_open_clip(TEXTS))
    pixels = torch.randn(
        4, 3, *reference.visual.image_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        img_ref, txt_ref = reference.encode_image(pixels), reference.encode_text(ids)
        img = bundle.model.get_image_features(pixel_values=pixels).pooler_output
        txt = bundle.model.get_text_features(**bundle.tokenize(TEXTS)).pooler_output
    print(f"{arch} ({args.pretrained or 'random weights'})")
    print(f"token ids identical: {torch.equal(ids, ours_ids)}")
    print(f"image embeddings: max abs diff {float((img - img_ref).abs().max()):.2e}")
    print(f"text embeddings:  max abs diff {float((txt - txt_ref).abs().max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
