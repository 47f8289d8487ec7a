"""Every Python block of docs/python-api.md runs as written, in order, in an empty folder."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_page_has_examples_for_each_part():
    blocks = python_blocks(DOC.read_text())
    joined = "\n".join(blocks)
    assert len(blocks) >= 5
    for name in ["measure(", "embed_dataset(", "finetune(", "evaluate_run(", "run_study("]:
        assert name in joined


@pytest.mark.slow
def test_every_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIPGAUGE_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    for i, block in enumerate(python_blocks(DOC.read_text())):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "shapes-lora" / "trained.safetensors").is_file()
    assert (tmp_path / "merged-lora" / "config.json").is_file()
    assert (tmp_path / "studies" / "tiny" / "report.html").is_file()
    assert (
        namespace["result"].finished == 3 and not namespace["result"].failed
    )  # + measuring colours
