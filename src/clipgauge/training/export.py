"""`export_run`: a run's model as a full checkpoint, in Hugging Face or open_clip format."""

from __future__ import annotations

from pathlib import Path

from clipgauge import __version__
from clipgauge.models.convert import save_model
from clipgauge.training.load import merged_model
from clipgauge.training.run_folder import RunError, write_json


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    wise_alpha: float | None = None,
    device: str | None = "cpu",
    fmt: str | None = None,
) -> Path:
    """Write the run's model as a full checkpoint with the base model's tokenizer and image
    processor: a Hugging Face folder (`fmt="hf"`, CLIPModel/SiglipModel.from_pretrained loads
    it) or an open_clip folder (`fmt="open_clip"`); by default the base model's format."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} is not empty; give a new folder for the export")
    merged, bundle, config = merged_model(run_dir, wise_alpha=wise_alpha, device=device)
    fmt = fmt or bundle.source
    save_model(merged, bundle.tokenizer, bundle.image_processor, out, fmt)
    provenance = {
        "run": str(Path(run_dir).resolve()),
        "method": config["method"],
        "wise_alpha": wise_alpha,
        "format": fmt,
        "base_model": config["base_model"],
        "clipgauge_version": __version__,
    }
    write_json(out / "clipgauge_export.json", provenance)
    return out
