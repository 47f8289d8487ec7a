"""Reading any image file Pillow can decode as 8-bit RGB, with errors that name the file."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clipgauge.data.dataset import Item
from clipgauge.errors import DataError

# Formats a dataset folder plausibly holds; vector, scientific and video formats Pillow also
# registers (.eps, .pdf, .fits, .mpeg, ...) are left out so stray files there are ignored, not read.
_CANDIDATE_EXTENSIONS = (
    ".jpg .jpeg .jpe .jfif .png .apng .bmp .dib .gif .tif .tiff .webp .ppm .pgm .pbm .pnm "
    ".tga .ico .qoi .avif .jp2 .j2k .jpx .jpf"
).split()
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ext
    for ext, fmt in Image.registered_extensions().items()
    if ext in _CANDIDATE_EXTENSIONS and fmt in Image.OPEN
)

# measure, embed and evaluate have --skip-bad-images; finetune and study do not.
SKIP_HINT = (
    "fix or delete the file (measure, embed and evaluate can skip unreadable images with "
    "--skip-bad-images)"
)
_WHITE = (255, 255, 255)


class UnreadableImageError(DataError):
    """One image file cannot be decoded; callers that skip bad images catch exactly this."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = printable_path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}; {SKIP_HINT}")


def printable_path(path: str | os.PathLike) -> str:
    """`path` as text that prints and encodes as UTF-8: file-name bytes that are not valid
    UTF-8 (which Python holds as lone surrogates) are shown as `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def link_problem(path: str | os.PathLike) -> str:
    """What is wrong with a symbolic link whose target cannot be read: broken, or a loop."""
    try:
        target = printable_path(os.readlink(path))
    except OSError:
        return "a broken symbolic link"
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"a symbolic link loop (to {target}, which leads back to itself)"
    return f"a broken symbolic link (its target {target} does not exist)"


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file name has an image extension (case-insensitive); the content is not read."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Decode an image file as 8-bit RGB, upright by its EXIF orientation.

    Transparency is composited onto white, 16/32-bit and float grayscale are scaled to 8 bits,
    animated images give their first frame. Any failure is an `UnreadableImageError` (a DataError).
    With `min_side`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale whose shorter side
    is still >= `min_side` (Pillow's draft mode: much faster; other formats decode in full).
    """
    return to_rgb(_decode(Path(path), min_side), path)


def load_item_rgb(item: Item, min_side: int | None = None) -> Image.Image:
    """The loader of file datasets; a module-level function so datasets pickle to workers."""
    return load_rgb(item.path, min_side)


load_item_rgb.decodes_at_scale = True  # ImageDataset.load_image passes it min_side


def _decode(path: Path, min_side: int | None = None) -> Image.Image:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UnreadableImageError(
            path,
            "the file name is not valid UTF-8, so results could not name it; rename the file "
            "(e.g. with convmv -f latin1 -t utf-8)",
        ) from None
    try:
        size = path.stat().st_size
    except OSError as error:
        if path.is_symlink():
            raise UnreadableImageError(
                path, f"it is {link_problem(path)}; point the link at an image or delete it"
            ) from None
        if isinstance(error, FileNotFoundError):
            raise UnreadableImageError(path, "file not found") from None
        raise UnreadableImageError(path, f"cannot access the file ({error})") from None
    if path.is_dir():
        raise UnreadableImageError(path, "is a folder, not an image file")
    if size == 0:
        raise UnreadableImageError(path, "file is empty (0 bytes)")
    try:
        # Images over MAX_IMAGE_PIXELS only warn and are read; over twice that Pillow raises.
        # The warning is silenced here so a `-W error` setting cannot turn it into a failure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # The `with` closes the file (multi-frame formats keep it open otherwise) while
            # keeping the decoded first frame.
            with Image.open(path) as image:
                if min_side is not None and image.format == "JPEG":
                    image.draft(image.mode, (min_side, min_side))
                image.load()
                _apply_exif_orientation(image)
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(
            path,
            f"{error} (if the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS before loading)",
        ) from None
    except Image.UnidentifiedImageError:
        raise UnreadableImageError(path, "not an image file Pillow can identify") from None
    except PermissionError:
        raise UnreadableImageError(
            path, "permission denied when opening it; make the file readable (e.g. chmod a+r)"
        ) from None
    except Exception as error:  # decoders raise OSError, SyntaxError, struct.error, ...
        reason = str(error) or type(error).__name__
        raise UnreadableImageError(path, f"decoding failed ({reason})") from None
    return image


def _apply_exif_orientation(image: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a corrupt EXIF block should not cost the pixels
        pass


def to_rgb(image: Image.Image, path: str | os.PathLike = "<image>") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see `load_rgb`); `path` is only for messages."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _high_depth_to_uint8(image)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "La":
        image, mode = image.convert("LA"), "LA"
    # PNG/GIF can also mark one palette entry, gray value or colour transparent (tRNS).
    keyed = mode in ("P", "L", "RGB") and "transparency" in image.info
    if mode in ("RGBA", "RGBa", "LA", "PA") or keyed:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise UnreadableImageError(path, f"unsupported image mode {mode} ({error})") from None


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16/32-bit integer or float grayscale to 0..255 by the image's bit depth.

    Integer modes use their declared bit depth (TIFF BitsPerSample, e.g. 12) when the values
    fit it, else 16 bits when they fit that, else min-max scaling. Float images in [0, 1] are
    scaled by 255, in [0, 255] kept, otherwise min-max scaled.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        else:
            scaled = _min_max(values, low, high)
    else:
        # Declared depth first (a 32-bit container says nothing about the range used), then 16.
        declared = _declared_bits(image)
        depths = [b for b in (declared, 16) if b is not None and 0 < b < 32]
        fitting = [b for b in depths if low >= 0.0 and high <= 2.0**b - 1]
        if fitting:
            scaled = values * (255.0 / (2.0 ** fitting[0] - 1))
        else:
            scaled = _min_max(values, low, high)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _min_max(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _declared_bits(image: Image.Image) -> int | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(258)  # TIFF BitsPerSample, e.g. 12 for 12-bit sensor data in 16-bit words
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) else None
