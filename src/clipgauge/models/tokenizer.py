"""A word-level tokenizer for tiny and embedded CLIP models, saved as a standard HF tokenizer."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, BOS, UNK, EOS = "<pad>", "<bos>", "<unk>", "<eos>"
# EOS deliberately not id 2: transformers' CLIP text tower treats eos_token_id == 2 as the legacy
# "pool at argmax(input_ids)" rule, which only suits OpenAI's BPE vocabulary.
SPECIAL_TOKENS = [PAD, BOS, UNK, EOS]


def build_word_tokenizer(words: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over `words` that wraps text as <bos> ... <eos>."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted({w.lower() for w in words} | {".", ","}):
        if word not in vocab:
            vocab[word] = len(vocab)
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
    )
