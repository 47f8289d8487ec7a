import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from clipgauge.cli import main
from clipgauge.measures import MEASURE_FIELDS


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_measure_table_and_json(capsys, tiny_clip_dir, domainbed_root, tmp_path):
    out_json = tmp_path / "m.json"
    code, out, err = _run(
        capsys,
        "measure",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--json",
        out_json,
        "--cache-dir",
        tmp_path / "cache",
        "--no-progress",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["domain", "images", "classes"]
    names = [line.split()[0] for line in lines[2:] if line and not line.startswith("wrote")]
    assert names == ["art", "photo", "overall"]
    report = json.loads(out_json.read_text())
    assert set(report["domains"]) == {"art", "photo"}
    for row in [*report["domains"].values(), report["overall"]]:
        assert list(row) == list(MEASURE_FIELDS)
    assert report["overall"]["n_images"] == 8
    assert report["overall"]["n_classes"] == 2
    prov = report["provenance"]
    assert prov["templates"] == ["a photo of a {}."]
    assert prov["model"]["path"] == str(tiny_clip_dir)
    assert prov["data"]["kind"] == "domainbed"
    assert prov["preprocessing"]["image_mean"][0] == pytest.approx(0.48145466)


def test_measure_domains_split_and_ensemble(capsys, tiny_clip_dir, domainbed_root, tmp_path):
    out_json = tmp_path / "m.json"
    code, out, err = _run(
        capsys,
        "measure",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--domains",
        "photo",
        "--template",
        "a photo of a {}.",
        "--template",
        "a sketch of a {}.",
        "--split",
        "test",
        "--seed",
        "3",
        "--json",
        out_json,
        "--no-cache",
        "--no-progress",
    )
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert list(report["domains"]) == ["photo"]
    assert report["provenance"]["templates"] == ["a photo of a {}.", "a sketch of a {}."]
    assert report["provenance"]["split"] == {"split": "test", "seed": 3, "test_fraction": 0.2}
    assert report["overall"]["n_images"] == 2  # one test image per class of 2


def test_embed_export(capsys, tiny_clip_dir, domainbed_root, tmp_path):
    out = tmp_path / "emb.safetensors"
    code, stdout, err = _run(
        capsys,
        "embed",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--out",
        out,
        "--no-cache",
        "--no-progress",
    )
    assert code == 0, err
    tensors = load_file(out)
    assert tensors["image_embeds"].shape[0] == 8
    assert tensors["text_embeds"].shape[0] == 2
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["domain_names"] == ["art", "photo"]


@pytest.mark.parametrize("template", [None, "a photo of a {} thing."])
def test_measure_on_world_data_uses_the_tasks_own_prompts(
    capsys, tiny_clip_dir, tmp_path, template
):
    from clipgauge.world.tasks import get_task

    out_json = tmp_path / "m.json"
    argv = ["measure", "--model", tiny_clip_dir, "--data", "world:sizes?per_class=1&size=32"]
    argv += ["--json", out_json, "--no-cache", "--no-progress"]
    argv += ["--template", template] if template else []
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    templates = json.loads(out_json.read_text())["provenance"]["templates"]
    assert templates == ([template] if template else list(get_task("sizes").templates))
    assert len(templates) == 1 if template else len(templates) == 4


def test_missing_data_is_a_clear_error(capsys, tiny_clip_dir, tmp_path):
    code, out, err = _run(
        capsys, "measure", "--model", tiny_clip_dir, "--data", tmp_path / "nowhere", "--no-cache"
    )
    assert code == 2
    assert "nowhere" in err and "Traceback" not in err


def test_bad_template_is_a_clear_error(capsys, tiny_clip_dir, domainbed_root):
    code, out, err = _run(
        capsys,
        "measure",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--template",
        "a photo without slot",
        "--no-cache",
    )
    assert code == 2 and "--template" in err and "{}" in err


def test_skip_bad_images_reports(capsys, tiny_clip_dir, domainbed_root, tmp_path):
    (domainbed_root / "art" / "dog" / "zero.jpg").write_bytes(b"")
    code, out, err = _run(
        capsys,
        "measure",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--no-cache",
        "--no-progress",
    )
    assert code == 2 and "zero.jpg" in err and "--skip-bad-images" in err
    code, out, err = _run(
        capsys,
        "measure",
        "--model",
        tiny_clip_dir,
        "--data",
        domainbed_root,
        "--no-cache",
        "--no-progress",
        "--skip-bad-images",
    )
    assert code == 0
    assert "skipped 1 unreadable image(s)" in err and "zero.jpg" in err


@pytest.mark.slow
def test_console_entry_point_runs(tiny_clip_dir, domainbed_root, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipgauge",
            "measure",
            "--model",
            str(tiny_clip_dir),
            "--data",
            str(domainbed_root),
            "--no-cache",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "overall" in proc.stdout
