"""clipgauge: measure CLIP task misalignment, fine-tune with PEFT methods, study the trade-offs."""

__version__ = "0.1.0"

# The model every default uses: the embedded world-clip, so everything works offline.
DEFAULT_MODEL = "world-clip"
