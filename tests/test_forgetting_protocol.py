"""The forgetting protocol sees forgetting on world-clip: a small CF drop in a study means little
forgetting, not a blind protocol."""

from pathlib import Path

import pytest

from clipgauge.analysis import load_study, run_outcomes
from clipgauge.study.runner import run_study

# Full fine-tuning of every weight at 40x the preset's learning rate, on one task's photos:
# the other tasks' zero-shot accuracy must fall.
SPEC = """\
name: forgetting-check
world: {per_class: 24}
tasks:
  shapes: {train_domains: [[photo]]}
  colours: {train_domains: []}
  positions: {train_domains: []}
  sizes: {train_domains: []}
methods:
  zeroshot: {}
  full: {}
training:
  per_method:
    full: {lr: 2.0e-3, epochs: 6, batch_size: 32, warmup_ratio: 0.0}
seeds: [0]
split: {test_fraction: 0.5}
"""


@pytest.mark.slow
def test_aggressive_full_fine_tuning_shows_a_forgetting_drop(tmp_path: Path):
    spec = tmp_path / "forgetting.yaml"
    spec.write_text(SPEC)
    result = run_study(spec, tmp_path / "out", progress=False)
    assert result.ok
    outcomes = run_outcomes(load_study(tmp_path / "out"))
    outcomes = outcomes[outcomes["task"] == "shapes"].set_index("method")
    drop = outcomes.loc["full", "cf_drop"]
    assert drop >= 0.05, f"CF drop {100 * drop:.1f} pp"
    assert outcomes.loc["zeroshot", "cf_drop"] == 0.0
