"""CLIP checkpoints: loading, fingerprints, and building small ones from scratch."""

from transformers.utils import logging as _hf_logging

# Without torchvision, transformers maps CLIPImageProcessor and SiglipImageProcessor to their PIL
# backends and says so once; that is the expected set-up here, so resolve the names once with the
# notice silenced.
_verbosity = _hf_logging.get_verbosity()
_hf_logging.set_verbosity_error()
try:
    from transformers import CLIPImageProcessor, SiglipImageProcessor  # noqa: F401
finally:
    _hf_logging.set_verbosity(_verbosity)
