"""open_clip's tokenizer without the open_clip package: OpenAI's BPE, cleaned as open_clip cleans.

open_clip (`SimpleTokenizer`, clean="lower") fixes the text with ftfy, unescapes HTML twice,
collapses whitespace and lower-cases it, then applies OpenAI CLIP's byte-level BPE and wraps the
result as <start> ... <end>, truncated to the context length (the last token stays <end>) and
padded with id 0. Here the cleaning is the same Python, and the BPE runs in Hugging Face
`tokenizers` (transformers' `CLIPTokenizer`, which implements the same BPE), over the merges file
that open_clip ships (package data, MIT; see assets/open_clip/NOTICE.md).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "open_clip"
BPE_FILE = ASSETS / "bpe_simple_vocab_16e6.txt.gz"
START, END = "<|startoftext|>", "<|endoftext|>"
# open_clip keeps the first 49152 - 256 - 2 merges: 256 byte symbols and 2 special tokens
# complete a 49408-entry vocabulary.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
PAD_ID = 0


def _bytes_to_unicode() -> list[str]:
    """OpenAI's byte -> printable character table, in byte order of the vocabulary."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in set(printable)]


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(BPE_FILE).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [START, END]
    assert len(tokens) == VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}, merges


def clean(text: str) -> str:
    """open_clip's default text cleaning: ftfy, HTML unescape (twice), whitespace, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class OpenClipTokenizer:
    """Tokenizes as open_clip does; called like a Hugging Face tokenizer.

    Every other attribute (ids of special tokens, `save_pretrained`, ...) is the underlying
    transformers `CLIPTokenizer`'s; saved, it loads as a standard CLIPTokenizer, which differs
    from open_clip only in not unescaping HTML entities and not applying ftfy.
    """

    def __init__(self, context_length: int = 77):
        vocab, merges = _vocab_and_merges()
        self.backend = CLIPTokenizer(
            vocab=vocab,
            merges=merges,
            unk_token=END,
            bos_token=START,
            eos_token=END,
            pad_token="!",  # id 0, open_clip's padding
            model_max_length=context_length,
        )
        self.context_length = context_length

    def __call__(self, texts, *args, **kwargs):
        texts = clean(texts) if isinstance(texts, str) else [clean(t) for t in texts]
        return self.backend(texts, *args, **kwargs)

    def __len__(self) -> int:
        return len(self.backend)

    def __getattr__(self, name):
        return getattr(self.__dict__["backend"], name)

    def as_open_clip(self, texts) -> list[list[int]]:
        """Token ids exactly as open_clip's `tokenize` returns them (padded to the context)."""
        tokens = self(texts, padding="max_length", truncation=True, max_length=self.context_length)
        return tokens["input_ids"]


@lru_cache(maxsize=4)
def open_clip_tokenizer(context_length: int = 77) -> OpenClipTokenizer:
    return OpenClipTokenizer(context_length)
