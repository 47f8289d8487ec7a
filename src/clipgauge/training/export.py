"""`export_run`: a run's model as a full Hugging Face checkpoint."""

from __future__ import annotations

from pathlib import Path

from clipgauge import __version__
from clipgauge.training.load import merged_model
from clipgauge.training.run_folder import RunError, write_json


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    wise_alpha: float | None = None,
    device: str | None = "cpu",
) -> Path:
    """Write the run's model as a full Hugging Face checkpoint (CLIPModel.from_pretrained
    loads it), with the base model's tokenizer and image processor."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} is not empty; give a new folder for the export")
    merged, bundle, config = merged_model(run_dir, wise_alpha=wise_alpha, device=device)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    bundle.tokenizer.save_pretrained(out)
    bundle.image_processor.save_pretrained(out)
    provenance = {
        "run": str(Path(run_dir).resolve()),
        "method": config["method"],
        "wise_alpha": wise_alpha,
        "base_model": config["base_model"],
        "clipgauge_version": __version__,
    }
    write_json(out / "clipgauge_export.json", provenance)
    return out
