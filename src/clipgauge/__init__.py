"""clipgauge: measure CLIP task misalignment, fine-tune with PEFT methods, study the trade-offs."""

__version__ = "0.1.0"
