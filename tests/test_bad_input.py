"""Bad input to every command gets a clear error, never a traceback; unusual input just works.

One table: each case builds its input under tmp_path and returns the argv, then states the exit
code and the substrings the output must contain (for errors: the file or option at fault and
what to do). Inputs that are only unusual (odd class names, image modes, stray files, a domain
missing a class in a CSV) must succeed, and their cases check what was read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import TINY_WORDS
from imagegen import make_domainbed, make_folder, write_image, write_truncated
from permissions import enforced_permissions
from tinystudy import query, write_tiny_study

from clipgauge.cli import main
from clipgauge.models.build import build_clip
from clipgauge.study.runner import run_study

pytestmark = pytest.mark.usefixtures("one_thread")

# The options of the shared run; a --resume must repeat them.
FINETUNE_OPTIONS = ("--train-domains", "photo", "--epochs", "1", "--batch-size", "4")


@dataclass
class Env:
    """What a case builds on: its own folder, the tiny CLIP, and shared finished results."""

    tmp: Path
    model: Path
    other_model: Path  # same shape, other weights: another fingerprint
    run: Path  # a finished bitfit run on `task`, trained from `model`, checkpoint kept
    task: Path  # photo/art x cat/dog
    study: Path  # a finished tiny study folder


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], list]
    code: int
    expect: tuple[str, ...]  # substrings of stderr for errors, of stdout + stderr otherwise
    check: Callable[[Env, str, str], None] | None = None
    # the command runs inside this (e.g. enforced_permissions: chmod 000 holds for root too)
    during: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_clip_dir) -> dict:
    base = tmp_path_factory.mktemp("bad-input")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        other = build_clip(base / "other-clip", TINY_WORDS, seed=1)
        task = make_domainbed(base / "task", ["photo", "art"], ["cat", "dog"], per_class=5)
        run = base / "run"
        argv = ["finetune", "--model", tiny_clip_dir, "--data", task, "--method", "bitfit"]
        argv += [*FINETUNE_OPTIONS, "--keep-checkpoint", "--out", run, "--no-progress"]
        assert main([str(a) for a in argv]) == 0
        spec = write_tiny_study(base / "study", tiny_clip_dir, methods=["bitfit"], epochs=1)
        study = base / "study" / "out"
        assert run_study(spec, study, progress=False).ok
    finally:
        torch.set_num_threads(threads)
    return dict(other_model=other, run=run, task=task, study=study)


@pytest.fixture
def env(tmp_path, tiny_clip_dir, shared) -> Env:
    return Env(tmp=tmp_path, model=tiny_clip_dir, **shared)


# Builders: measure and embed ----------------------------------------------------------------------


def measure(env: Env, data, *extra) -> list:
    return ["measure", "--model", env.model, "--data", data, "--no-cache", "--no-progress", *extra]


def measure_json(env: Env, data, *extra) -> list:
    return measure(env, data, "--json", env.tmp / "measure.json", *extra)


def read_measure_json(env: Env) -> dict:
    return json.loads((env.tmp / "measure.json").read_text())


def two_classes(env: Env, name: str = "data") -> Path:
    """<name>/{cat,dog}/img{0,1}.png, one domain."""
    return make_folder(env.tmp / name, ["cat", "dog"])


def empty_folder(env: Env) -> list:
    (env.tmp / "empty-data").mkdir()
    return measure(env, env.tmp / "empty-data")


def extra_class(env: Env, *files: str) -> list:
    """Two classes plus a class folder `wolf` holding only `files` (no images)."""
    root = two_classes(env)
    (root / "wolf").mkdir()
    for name in files:
        (root / "wolf" / name).write_text("not an image")
    return measure(env, root)


def with_image(env: Env, name: str, write: Callable[[Path], object]) -> Path:
    """Two classes, plus one more file `cat/<name>` written by `write(path)`."""
    root = two_classes(env)
    write(root / "cat" / name)
    return root


def bomb_png(path: Path) -> None:
    """A 20000 x 20000 PNG header (400 M pixels, over twice Pillow's limit) in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def mode_image(mode: str, ext: str, color) -> Callable[[Env], list]:
    def build(env: Env) -> list:
        return measure_json(
            env, with_image(env, f"odd{ext}", lambda p: write_image(p, color, mode=mode))
        )

    return build


def locked(path: Path) -> None:
    """An image no one may read (see `enforced_permissions` for root)."""
    write_image(path)
    path.chmod(0)


def locked_folder(env: Env) -> Path:
    root = two_classes(env)
    write_image(root / "cat" / "more" / "img.png")
    (root / "cat" / "more").chmod(0)
    return root


def broken_link(env: Env) -> Path:
    """Two classes plus `cat/gone.png`, a symbolic link to a file that does not exist."""
    return with_image(env, "gone.png", lambda p: p.symlink_to(env.tmp / "deleted.png"))


def linked_dataset(env: Env) -> Path:
    """`cat` holds links to three images elsewhere; `dog` is a link to a folder elsewhere."""
    store = make_folder(env.tmp / "store", ["cat", "dog"], per_class=3)
    root = env.tmp / "data"
    (root / "cat").mkdir(parents=True)
    for i in range(3):
        (root / "cat" / f"link{i}.png").symlink_to(store / "cat" / f"img{i}.png")
    (root / "dog").symlink_to(store / "dog", target_is_directory=True)
    return root


def with_link(env: Env, link: str, target: str) -> Path:
    """photo/art x cat/dog, two images each, plus the folder link `link` -> `target` (in root)."""
    root = make_domainbed(env.tmp / "data", ["photo", "art"], ["cat", "dog"])
    (root / link).symlink_to(root / target, target_is_directory=True)
    return root


def broken_class_link(env: Env) -> Path:
    """Two classes plus `wolf`, a link to a class folder on a drive that is not there."""
    root = two_classes(env)
    (root / "wolf").symlink_to(env.tmp / "unmounted" / "wolf", target_is_directory=True)
    return root


def not_utf8(folder: Path, name: bytes) -> Path:
    """`folder`/`name` where `name` holds bytes that are not UTF-8 (a latin-1 `é`)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def not_utf8_file(env: Env) -> Path:
    root = two_classes(env)
    write_image(not_utf8(root / "cat", b"caf\xe9.png"))
    return root


def not_utf8_class(env: Env) -> Path:
    root = two_classes(env)
    write_image(not_utf8(root, b"caf\xe9") / "img0.png")
    return root


def read_five(env: Env, out: str, err: str) -> None:
    report = read_measure_json(env)
    assert report["overall"]["n_images"] == 5 and report["provenance"]["skipped_images"] == []


def check_images(count: int) -> Callable[[Env, str, str], None]:
    def check(env: Env, out: str, err: str) -> None:
        assert read_measure_json(env)["overall"]["n_images"] == count

    return check


def odd_names(env: Env) -> Path:
    return make_domainbed(
        env.tmp / "odd", ["été", "photo"], ["ice cream", "café", "St. Bernard", "v1.2"]
    )


ODD_CLASSES = ["St. Bernard", "café", "ice cream", "v1.2"]


def check_odd_names(env: Env, out: str, err: str) -> None:
    report = read_measure_json(env)
    assert report["provenance"]["class_names"] == ODD_CLASSES
    assert list(report["domains"]) == ["photo", "été"]  # sorted by code point
    assert report["overall"]["n_images"] == 16


def stray_files(env: Env) -> list:
    root = two_classes(env)
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "cat" / "._img0.png").write_bytes(b"AppleDouble junk")  # macOS resource fork
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "labels.csv").write_text("a,b\n")
    (root / "Thumbs.db").write_bytes(b"\0")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "broken.png").write_bytes(b"")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "img0.png").write_bytes(b"junk")
    return measure_json(env, root)


def check_strays_ignored(env: Env, out: str, err: str) -> None:
    report = read_measure_json(env)
    assert report["overall"]["n_images"] == 4
    assert report["provenance"]["class_names"] == ["cat", "dog"]
    assert report["provenance"]["data"]["ignored_files"] == 3  # notes.txt, labels.csv, Thumbs.db


def manifest(env: Env, text: str, *extra) -> list:
    two_classes(env)
    path = env.tmp / "data" / "list.csv"
    path.write_text(text)
    return measure_json(env, path, *extra)


def class_map_file(env: Env) -> Path:
    path = env.tmp / "classes.json"
    path.write_text(json.dumps({"cat": "tabby cat", "dog": "dog"}))
    return path


def check_domains(env: Env, out: str, err: str) -> None:
    assert list(read_measure_json(env)["domains"]) == ["a", "b"]


def check_mapped_names(env: Env, out: str, err: str) -> None:
    assert read_measure_json(env)["provenance"]["class_names"] == ["tabby cat", "dog"]


def template_file(env: Env, name: str, text: str) -> list:
    (env.tmp / name).write_text(text)
    return measure(env, two_classes(env), "--template", env.tmp / name)


def embed(env: Env, data, out: str = "e.safetensors") -> list:
    argv = ["embed", "--model", env.model, "--data", data, "--out", env.tmp / out]
    return [*argv, "--no-cache", "--no-progress"]


def check_nothing_written(env: Env, out: str, err: str) -> None:
    assert not (env.tmp / "e.npy").exists() and not (env.tmp / "e.json").exists()


def check_sidecar_names(env: Env, out: str, err: str) -> None:
    assert json.loads((env.tmp / "e.json").read_text())["class_names"] == ODD_CLASSES


# Builders: models ---------------------------------------------------------------------------------


def broken_model(env: Env, change: Callable[[Path], object]) -> Path:
    folder = env.tmp / "broken-clip"
    shutil.copytree(env.model, folder)
    change(folder)
    return folder


def edit_config(**values) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(values)
        (folder / "config.json").write_text(json.dumps(config))

    return change


def truncate(path: Path, keep: int = 64) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def only_bin_weights(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)


# Builders: finetune and evaluate ------------------------------------------------------------------


def finetune(env: Env, out: Path | None = None, *extra, method: str = "bitfit") -> list:
    argv = ["finetune", "--model", env.model, "--data", env.task, "--method", method]
    return [*argv, *FINETUNE_OPTIONS, "--out", out or env.tmp / "new-run", "--no-progress", *extra]


def unfinished_run(env: Env, change: Callable[[Path], object] = lambda run: None) -> Path:
    """A copy of the shared run as if it stopped after its checkpoint was written."""
    run = env.tmp / "stopped-run"
    shutil.copytree(env.run, run)
    (run / "result.json").unlink()
    (run / "trained.safetensors").unlink()
    change(run)
    return run


def corrupt_checkpoint(run: Path) -> None:
    (state,) = (run / "checkpoint").glob("state-epoch*.safetensors")
    truncate(state)


def check_diverged_run(env: Env, out: str, err: str) -> None:
    run = env.tmp / "new-run"
    assert (run / "config.json").is_file() and not (run / "trained.safetensors").exists()


def evaluate(env: Env, run, *extra) -> list:
    argv = ["evaluate", "--run", run, "--data", env.task, "--no-cache", "--no-progress"]
    return [*argv, *extra]


def copied_run(env: Env, change: Callable[[Path], object]) -> Path:
    run = env.tmp / "copied-run"
    shutil.copytree(env.run, run)
    change(run)
    return run


def drop_base_model(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    del config["base_model"]
    (run / "config.json").write_text(json.dumps(config))


# Builders: study, report and advise ---------------------------------------------------------------


def spec_file(env: Env, edit: Callable[[str], str] = lambda text: text) -> list:
    spec = write_tiny_study(env.tmp, env.model, methods=["bitfit"], epochs=1)
    spec.write_text(edit(spec.read_text()))
    return ["study", spec, "--out", env.tmp / "out", "--no-progress"]


def check_diverged_study(env: Env, out: str, err: str) -> None:
    db = env.tmp / "out" / "study.sqlite"
    rows = query(db, "SELECT method, status, error FROM runs ORDER BY task, method")
    assert [(m, s) for m, s, _ in rows] == [
        (m, s)
        for _ in ("food", "pets")
        for m, s in [("bitfit", "finished"), ("full", "failed"), ("zeroshot", "finished")]
    ]
    assert all("the loss became nan at step 2" in e for m, _, e in rows if m == "full")
    (failed_id,) = query(db, "SELECT run_id FROM runs WHERE status = 'failed' LIMIT 1")[0]
    log = env.tmp / "out" / "runs" / failed_id / "error.log"
    assert "TrainingDivergedError" in log.read_text()  # the traceback goes to the log only
    finished = "SELECT count(DISTINCT run_id) FROM metrics"
    assert query(db, finished) == [(4,)]


def advise(env: Env, data, *extra) -> list:
    return ["advise", "--study", env.study, "--data", data, "--no-cache", "--no-progress", *extra]


def study_without_database(env: Env) -> Path:
    folder = env.tmp / "no-db-study"
    folder.mkdir()
    return folder


def study_with_junk_database(env: Env) -> Path:
    folder = env.tmp / "junk-study"
    folder.mkdir()
    (folder / "study.sqlite").write_text("not a database")
    return folder


SKIP = "--skip-bad-images"
FIX = "fix or delete the file"

CASES = [
    # Paths and folders ---------------------------------------------------------------------
    Case(
        "measure-missing-data",
        lambda e: measure(e, e.tmp / "no-such-data"),
        2,
        ("no-such-data", "give a folder in <domain>/<class>/<image>"),
    ),
    Case(
        "measure-missing-model",
        lambda e: ["measure", "--model", e.tmp / "no-such-model", "--data", two_classes(e)],
        2,
        ("no-such-model", "does not exist", "--model"),
    ),
    Case(
        "measure-empty-folder",
        empty_folder,
        2,
        ("empty-data", "found no images", "<root>/<class>/<image>"),
    ),
    Case(
        "measure-class-folder-without-images",
        extra_class,
        2,
        ("wolf contains no image files", "add images or remove the folder"),
    ),
    Case(
        "measure-class-folder-with-only-other-files",
        lambda e: extra_class(e, "notes.txt", ".DS_Store"),
        2,
        ("wolf contains no image files", "add images or remove the folder"),
    ),
    Case(
        "measure-domain-with-fewer-classes",
        lambda e: measure(
            e, make_domainbed(e.tmp / "d", {"photo": ["cat", "dog"], "art": ["cat"]})
        ),
        2,
        ("art: missing ['dog']", "add or remove class folders", "--domains"),
    ),
    Case(
        "measure-domain-with-fewer-classes-left-out",
        lambda e: measure(
            e,
            make_domainbed(e.tmp / "d", {"photo": ["cat", "dog"], "art": ["cat"]}),
            "--domains",
            "photo",
        ),
        0,
        ("photo",),
    ),
    Case(
        "measure-odd-class-names",
        lambda e: measure_json(e, odd_names(e)),
        0,
        ("été",),
        check_odd_names,
    ),
    Case(
        "measure-hidden-and-non-image-files",
        stray_files,
        0,
        ("overall",),
        check_strays_ignored,
    ),
    Case(
        "measure-json-into-a-folder",
        lambda e: measure(e, two_classes(e), "--json", e.tmp),
        2,
        ("Is a directory", "check that the path exists and is writable"),
    ),
    # Image files -----------------------------------------------------------------------------
    Case(
        "measure-zero-byte-image",
        lambda e: measure(e, with_image(e, "empty.png", lambda p: p.write_bytes(b""))),
        2,
        ("empty.png", "file is empty (0 bytes)", FIX, SKIP),
    ),
    Case(
        "measure-zero-byte-image-skipped",
        lambda e: measure_json(e, with_image(e, "empty.png", lambda p: p.write_bytes(b"")), SKIP),
        0,
        ("skipped 1 unreadable image(s)", "empty.png"),
        check_images(4),
    ),
    Case(
        "measure-truncated-png",
        lambda e: measure(e, with_image(e, "cut.png", lambda p: write_truncated(p, "PNG"))),
        2,
        ("cut.png", "truncated", FIX, SKIP),
    ),
    Case(
        "measure-truncated-jpeg",
        lambda e: measure(e, with_image(e, "cut.jpg", lambda p: write_truncated(p, "JPEG"))),
        2,
        ("cut.jpg", "decoding failed", FIX, SKIP),
    ),
    Case(
        "measure-text-under-an-image-extension",
        lambda e: measure(e, with_image(e, "text.png", lambda p: p.write_text("hello"))),
        2,
        ("text.png", "not an image file Pillow can identify", FIX, SKIP),
    ),
    Case(
        "measure-decompression-bomb",
        lambda e: measure(e, with_image(e, "bomb.png", bomb_png)),
        2,
        ("bomb.png", "decompression bomb", "MAX_IMAGE_PIXELS", SKIP),
    ),
    Case("measure-grayscale-image", mode_image("L", ".png", 90), 0, ("overall",), read_five),
    Case("measure-palette-image", mode_image("P", ".gif", 7), 0, ("overall",), read_five),
    Case(
        "measure-cmyk-jpeg", mode_image("CMYK", ".jpg", (0, 90, 90, 0)), 0, ("overall",), read_five
    ),
    Case(
        "measure-rgba-image",
        mode_image("RGBA", ".png", (9, 90, 9, 100)),
        0,
        ("overall",),
        read_five,
    ),
    Case("measure-16-bit-image", mode_image("I;16", ".png", 40000), 0, ("overall",), read_five),
    # Links, permissions and file names ----------------------------------------------------------
    Case(
        "measure-broken-symlink",
        lambda e: measure(e, broken_link(e)),
        2,
        ("gone.png", "broken symbolic link", "deleted.png does not exist", "point the link", SKIP),
    ),
    Case(
        "measure-broken-symlink-skipped",
        lambda e: measure_json(e, broken_link(e), SKIP),
        0,
        ("skipped 1 unreadable image(s)", "gone.png", "broken symbolic link"),
        check_images(4),
    ),
    Case(
        "embed-broken-symlink-skipped",
        lambda e: [*embed(e, broken_link(e)), SKIP],
        0,
        ("skipped 1 unreadable image(s)", "broken symbolic link", "4 images"),
    ),
    Case(
        "measure-broken-link-to-a-class-folder",
        lambda e: measure(e, broken_class_link(e)),
        2,
        ("data/wolf, where class or domain folders are expected, is a broken symbolic link",),
    ),
    Case(
        "measure-symlinked-images-and-class-folder",
        lambda e: measure_json(e, linked_dataset(e)),
        0,
        ("overall",),
        check_images(6),
    ),
    Case(
        "measure-link-back-to-the-root",
        lambda e: measure(e, with_link(e, "photo/cat/loop", ".")),
        2,
        ("data/photo/cat/loop leads back to", "a link loop", "remove the link"),
    ),
    Case(
        "measure-class-folder-linked-to-another",
        lambda e: measure(e, with_link(e, "art/wolf", "art/dog")),
        2,
        ("art/wolf leads to", "art/dog already read", "count twice", "remove one of the links"),
    ),
    Case(
        "measure-unreadable-image",
        lambda e: measure(e, with_image(e, "locked.png", locked)),
        2,
        ("locked.png", "permission denied", "chmod a+r", SKIP),
        during=enforced_permissions,
    ),
    Case(
        "measure-unreadable-image-skipped",
        lambda e: measure_json(e, with_image(e, "locked.png", locked), SKIP),
        0,
        ("skipped 1 unreadable image(s)", "locked.png", "permission denied"),
        check_images(4),
        during=enforced_permissions,
    ),
    Case(
        "measure-unreadable-folder",
        lambda e: measure(e, locked_folder(e)),
        2,
        ("cannot list folder", "cat/more: permission denied", "chmod a+rx"),
        during=enforced_permissions,
    ),
    Case(
        "measure-file-name-not-utf8",
        lambda e: measure(e, not_utf8_file(e)),
        2,
        ("cat/caf\\xe9.png", "file name is not valid UTF-8", "rename the file", SKIP),
    ),
    Case(
        "measure-file-name-not-utf8-skipped",
        lambda e: measure_json(e, not_utf8_file(e), SKIP),
        0,
        ("skipped 1 unreadable image(s)", "cat/caf\\xe9.png", "not valid UTF-8"),
    ),
    Case(
        "measure-class-folder-name-not-utf8",
        lambda e: measure(e, not_utf8_class(e)),
        2,
        ("data/caf\\xe9 has a name that is not valid UTF-8", "rename it"),
    ),
    # CSV manifests ---------------------------------------------------------------------------
    Case(
        "manifest-missing-column",
        lambda e: manifest(e, "path,domain\ncat/img0.png,a\n"),
        2,
        ("list.csv, line 1", "missing column(s) ['label']", "`path,label[,domain]`"),
    ),
    Case(
        "manifest-unknown-label",
        lambda e: manifest(
            e, "path,label\ncat/img0.png,cat\ndog/img0.png,owl\n", "--class-map", class_map_file(e)
        ),
        2,
        ("list.csv, line 3", "unknown label 'owl'", "classes.json", "add it to the class map"),
    ),
    Case(
        "manifest-duplicate-path",
        lambda e: manifest(e, "path,label\ncat/img0.png,cat\n./cat/img0.png,cat\n"),
        2,
        ("list.csv, line 3", "duplicate path './cat/img0.png'", "line 2", "list each image once"),
    ),
    Case(
        "manifest-path-outside-the-root",
        lambda e: manifest(e, "path,label\ncat/img0.png,cat\n../escape.png,dog\n"),
        2,
        ("list.csv, line 3", "'../escape.png' is outside the root", "give a path inside it"),
    ),
    Case(
        "manifest-missing-image",
        lambda e: manifest(e, "path,label\ncat/img0.png,cat\ncat/gone.png,dog\n"),
        2,
        ("list.csv, line 3", "gone.png not found", "fix the path or remove the row"),
    ),
    Case(
        "manifest-domain-with-fewer-classes",
        lambda e: manifest(
            e, "path,label,domain\ncat/img0.png,cat,a\ndog/img0.png,dog,a\ncat/img1.png,cat,b\n"
        ),
        0,
        ("overall",),
        check_domains,
    ),
    Case(
        "manifest-with-class-map",
        lambda e: manifest(
            e, "path,label\ncat/img0.png,cat\ndog/img0.png,dog\n", "--class-map", class_map_file(e)
        ),
        0,
        ("overall",),
        check_mapped_names,
    ),
    # Templates -------------------------------------------------------------------------------
    Case(
        "template-file-invalid-json",
        lambda e: template_file(e, "prompts.json", '["a {}", '),
        2,
        ("prompts.json", "not valid JSON", "list of template strings"),
    ),
    Case(
        "template-without-slot",
        lambda e: measure(e, two_classes(e), "--template", "a photo"),
        2,
        ("--template", "'a photo' needs exactly one '{}'"),
    ),
    # embed -------------------------------------------------------------------------------
    Case(
        "embed-missing-data",
        lambda e: embed(e, e.tmp / "no-such-data"),
        2,
        ("no-such-data", "give a folder"),
    ),
    Case(
        "embed-out-not-safetensors",
        lambda e: embed(e, two_classes(e), "e.npy"),
        2,
        ("--out", "e.npy must end in .safetensors"),
        check_nothing_written,
    ),
    Case(
        "embed-odd-class-names",
        lambda e: embed(e, odd_names(e)),
        0,
        ("16 images", "4 classes"),
        check_sidecar_names,
    ),
    # Models ----------------------------------------------------------------------------------
    Case(
        "model-folder-without-config",
        lambda e: measure(
            e, two_classes(e), "--model", broken_model(e, lambda f: (f / "config.json").unlink())
        ),
        2,
        ("broken-clip is not a CLIP checkpoint", "no config.json", "model_type 'clip'"),
    ),
    Case(
        "model-of-another-type",
        lambda e: measure(
            e, two_classes(e), "--model", broken_model(e, edit_config(model_type="bert"))
        ),
        2,
        ("broken-clip holds a 'bert' model", "model_type must be 'clip'"),
    ),
    Case(
        "model-path-is-a-file",
        lambda e: measure(e, two_classes(e), "--model", e.model / "config.json"),
        2,
        ("config.json is a file", "give the checkpoint FOLDER"),
    ),
    Case(
        "model-pickle-weights-only",
        lambda e: measure(e, two_classes(e), "--model", broken_model(e, only_bin_weights)),
        2,
        ("broken-clip has no .safetensors weights", "safe_serialization=True"),
    ),
    Case(
        "model-corrupted-safetensors",
        lambda e: measure(
            e,
            two_classes(e),
            "--model",
            broken_model(e, lambda f: truncate(f / "model.safetensors")),
        ),
        2,
        ("broken-clip cannot be loaded", "damaged", "download or save the checkpoint again"),
    ),
    Case(
        "model-weights-unlike-config",
        lambda e: measure(
            e, two_classes(e), "--model", broken_model(e, edit_config(projection_dim=48))
        ),
        2,
        ("broken-clip cannot be loaded", "does not match config.json"),
    ),
    Case(
        "model-without-tokenizer",
        lambda e: measure(e, two_classes(e), "--model", broken_model(e, no_tokenizer)),
        2,
        ("broken-clip has no tokenizer files", "tokenizer.save_pretrained"),
    ),
    # finetune ------------------------------------------------------------------------------
    Case(
        "finetune-missing-data",
        lambda e: [*finetune(e), "--data", e.tmp / "no-such-data"],
        2,
        ("no-such-data", "give a folder"),
    ),
    Case(
        "finetune-unknown-method",
        lambda e: finetune(e, method="lorra"),
        2,
        ("unknown method 'lorra'", "available: zeroshot, full, bitfit, lora"),
    ),
    Case(
        "finetune-bad-method-option",
        lambda e: finetune(e, None, "--method-opt", "rnk=4", method="lora"),
        2,
        ("method lora has no option(s) rnk", "options: rank=16"),
    ),
    Case(
        "finetune-unknown-train-domain",
        lambda e: [*finetune(e), "--train-domains", "sketch"],
        2,
        ("unknown domain(s) ['sketch']", "available: ['art', 'photo']"),
    ),
    Case(
        "finetune-out-holds-a-run",
        lambda e: finetune(e, e.run),
        2,
        ("already holds a run", "--resume", "new --out"),
    ),
    Case(
        "finetune-resume-nothing",
        lambda e: finetune(e, None, "--resume"),
        2,
        ("nothing to resume", "new-run has no config.json"),
    ),
    Case(
        "finetune-resume-other-base-model",
        lambda e: finetune(e, unfinished_run(e), "--resume", "--model", e.other_model),
        2,
        ("cannot resume", "base_model.fingerprint", "resume with the same options"),
    ),
    Case(
        "finetune-resume-corrupted-checkpoint",
        lambda e: finetune(e, unfinished_run(e, corrupt_checkpoint), "--resume"),
        2,
        ("stopped-run/checkpoint is unreadable", "without --resume"),
    ),
    Case(
        "finetune-loss-diverges",
        lambda e: finetune(e, None, "--lr", "1e30", "--epochs", "2", method="full"),
        2,
        ("the loss became nan at step 2", "lower --lr"),
        check_diverged_run,
    ),
    # evaluate --------------------------------------------------------------------------------
    Case(
        "evaluate-missing-run",
        lambda e: evaluate(e, e.tmp / "no-such-run"),
        2,
        ("no-such-run/config.json does not exist", "clipgauge run folder"),
    ),
    Case(
        "evaluate-run-of-another-base-model",
        lambda e: evaluate(e, e.run, "--model", e.other_model),
        2,
        (
            "other-clip (fingerprint",
            "is not the one run",
            "pass the original checkpoint with --model",
        ),
    ),
    Case(
        "evaluate-corrupted-run-weights",
        lambda e: evaluate(e, copied_run(e, lambda r: truncate(r / "trained.safetensors"))),
        2,
        (
            "copied-run/trained.safetensors is not a readable safetensors file",
            "train the run again",
        ),
    ),
    Case(
        "evaluate-unfinished-run",
        lambda e: evaluate(e, unfinished_run(e)),
        2,
        ("stopped-run has no trained.safetensors", "--resume"),
    ),
    Case(
        "evaluate-damaged-run-config",
        lambda e: evaluate(e, copied_run(e, drop_base_model)),
        2,
        ("copied-run/config.json lacks base_model.path", "train the run again"),
    ),
    Case(
        "evaluate-missing-data",
        lambda e: [*evaluate(e, e.run), "--data", e.tmp / "no-such-data"],
        2,
        ("no-such-data", "give a folder"),
    ),
    Case(
        "evaluate-wise-alpha-out-of-range",
        lambda e: evaluate(e, e.run, "--wise-alpha", "2"),
        2,
        ("--wise-alpha 2.0 must be in [0, 1]",),
    ),
    # study specs -----------------------------------------------------------------------------
    Case(
        "study-unknown-key",
        lambda e: spec_file(e, lambda t: t + "metods: {}\n"),
        2,
        ("study.yaml:16: unknown key 'metods'", "did you mean 'methods'?"),
    ),
    Case(
        "study-unknown-task-key",
        lambda e: spec_file(e, lambda t: t.replace("    data: pets", "    dta: pets")),
        2,
        ("study.yaml:5: unknown key 'dta' in tasks.pets", "did you mean 'data'?"),
    ),
    Case(
        "study-wrong-type",
        lambda e: spec_file(e, lambda t: t.replace("seeds: [0]", "seeds: 3")),
        2,
        ("study.yaml:15: seeds must be a non-empty list of integers", "e.g. [0, 1]"),
    ),
    Case(
        "study-wrong-type-of-training-value",
        lambda e: spec_file(e, lambda t: t.replace("epochs: 1", "epochs: many")),
        2,
        ("study.yaml:13: training: epochs='many' is not a valid int",),
    ),
    Case(
        "study-unknown-method",
        lambda e: spec_file(e, lambda t: t.replace("bitfit", "lorra")),
        2,
        ("study.yaml:11: methods: unknown method 'lorra'", "did you mean 'lora'?"),
    ),
    Case(
        "study-unknown-forgetting-task",
        lambda e: spec_file(e, lambda t: t + "forgetting: [pets, cars]\n"),
        2,
        ("study.yaml:16: forgetting: unknown task 'cars'", "tasks of this spec: pets, food"),
    ),
    Case(
        "study-unknown-world-task",
        lambda e: spec_file(e, lambda t: t.replace("data: food", "data: world:cars")),
        2,
        ("study.yaml:8: tasks.food.data: unknown world task 'cars'", "known tasks: shapes"),
    ),
    Case(
        "study-invalid-yaml",
        lambda e: spec_file(e, lambda t: t.replace("data: pets", "data: pets: photos")),
        2,
        ("study.yaml:5: invalid YAML: mapping values are not allowed here",),
    ),
    Case(
        "study-duplicate-key",
        lambda e: spec_file(e, lambda t: t + "seeds: [1]\n"),
        2,
        ("study.yaml:16: key 'seeds' is given twice (first on line 15)", "give it once"),
    ),
    Case(
        "study-missing-spec",
        lambda e: ["study", e.tmp / "no-such-spec.yaml", "--out", e.tmp / "out"],
        2,
        ("no study spec", "no-such-spec.yaml", "shipped: paper, world"),
    ),
    Case(
        "study-missing-data",
        lambda e: spec_file(e, lambda t: t.replace("data: food", "data: no-such-data")),
        2,
        ("study.yaml:8: tasks.food.data: no such dataset path", "no-such-data", "give a folder"),
    ),
    Case(
        "study-model-not-clip",
        lambda e: spec_file(e, lambda t: t.replace(str(e.model), str(e.task))),
        2,
        ("study.yaml:2: model:", "is not a CLIP checkpoint", "config.json"),
    ),
    Case(
        "study-a-run-diverges",
        lambda e: spec_file(
            e,
            lambda t: t.replace("  bitfit: {}", "  bitfit: {}\n  full: {}").replace(
                "epochs: 1", "epochs: 2\n  per_method:\n    full: {lr: 1.0e+30}"
            ),
        ),
        1,
        (
            "run failed: pets [photo] full seed 0: the loss became nan at step 2",
            "rerun the same command",
        ),
        check_diverged_study,
    ),
    # report and advise -----------------------------------------------------------------------
    Case(
        "report-missing-folder",
        lambda e: ["report", e.tmp / "no-such-study"],
        2,
        ("no-such-study does not exist", "run `clipgauge study` first"),
    ),
    Case(
        "report-folder-without-database",
        lambda e: ["report", study_without_database(e)],
        2,
        ("no-db-study holds no study database", "run `clipgauge study` first"),
    ),
    Case(
        "report-junk-database",
        lambda e: ["report", study_with_junk_database(e)],
        2,
        (
            "junk-study/study.sqlite is not a clipgauge study database",
            "remove it from the study folder",
        ),
    ),
    Case(
        "advise-missing-study",
        lambda e: [*advise(e, e.task), "--study", e.tmp / "no-such-study"],
        2,
        ("no-such-study does not exist", "run `clipgauge study` first"),
    ),
    Case(
        "advise-junk-database",
        lambda e: [*advise(e, e.task), "--study", study_with_junk_database(e)],
        2,
        ("junk-study/study.sqlite is not a clipgauge study database", "remove it"),
    ),
    Case(
        "advise-missing-data",
        lambda e: advise(e, e.tmp / "no-such-data"),
        2,
        ("no-such-data", "give a folder"),
    ),
    Case(
        "advise-model-not-clip",
        lambda e: advise(e, e.task, "--model", e.task),
        2,
        ("task is not a CLIP checkpoint", "config.json"),
    ),
    Case(
        "advise-with-another-model",
        lambda e: advise(e, e.task, "--model", e.other_model),
        0,
        ("recommended:", "measures of different models are not comparable"),
    ),
]


def test_the_table_covers_every_command():
    commands = {case.id.split("-")[0] for case in CASES}
    assert {"measure", "embed", "finetune", "evaluate", "study", "report", "advise"} <= commands
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, env: Env, capsys):
    argv = [str(arg) for arg in case.build(env)]
    capsys.readouterr()
    with case.during():
        code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    text = err if code == 2 else out + err
    if code == 2:
        assert err.startswith(f"clipgauge {argv[0]}: error: "), err
    for needle in case.expect:
        assert needle in text, f"{needle!r} not in:\n{text}"
    if case.check is not None:
        case.check(env, out, err)
