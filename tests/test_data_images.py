import warnings

import numpy as np
import pytest
from imagegen import encoded, write_image, write_truncated
from PIL import Image

from clipgauge.data.images import IMAGE_EXTENSIONS, is_image_file, load_rgb, to_rgb
from clipgauge.errors import DataError


def rgb_at(path, xy=(0, 0)):
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.resize((3, 3)).size == (3, 3)  # still usable after its file is closed
    return image.getpixel(xy)


def stored_mode(path):
    with Image.open(path) as image:
        return image.mode


def save_array(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_extensions_are_case_insensitive():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} <= IMAGE_EXTENSIONS
    assert {".ppm", ".pgm", ".pbm"} <= IMAGE_EXTENSIONS
    assert is_image_file("a/B.JPG") and is_image_file("x.Png")
    assert not is_image_file("notes.txt") and not is_image_file("labels.csv")


@pytest.mark.parametrize(
    ("mode", "color", "ext", "expected"),
    [
        ("RGB", (10, 200, 30), ".png", (10, 200, 30)),
        ("L", 77, ".png", (77, 77, 77)),
        ("L", 77, ".pgm", (77, 77, 77)),
        ("RGB", (10, 200, 30), ".ppm", (10, 200, 30)),
        ("1", 1, ".pbm", (255, 255, 255)),
        ("1", 0, ".png", (0, 0, 0)),
        ("LA", (77, 0), ".png", (255, 255, 255)),
        ("LA", (77, 255), ".png", (77, 77, 77)),
        ("RGBA", (10, 200, 30, 0), ".png", (255, 255, 255)),
        ("RGBA", (10, 200, 30, 0), ".webp", (255, 255, 255)),
        ("RGB", (10, 200, 30), ".bmp", (10, 200, 30)),
        ("RGB", (10, 200, 30), ".tiff", (10, 200, 30)),
        ("YCbCr", (128, 128, 128), ".tiff", (128, 128, 128)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, color, ext, expected):
    path = write_image(tmp_path / f"img{ext}", color, mode=mode)
    assert rgb_at(path) == expected


def test_rgba_half_transparent_blends_onto_white(tmp_path):
    path = write_image(tmp_path / "half.png", (0, 0, 0, 128), mode="RGBA")
    assert all(abs(c - 127) <= 1 for c in rgb_at(path))


def test_palette_colours_and_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    opaque = tmp_path / "palette.png"
    image.save(opaque)
    assert rgb_at(opaque, (0, 0)) == (255, 0, 0)
    assert rgb_at(opaque, (1, 0)) == (0, 0, 255)
    keyed = tmp_path / "keyed.gif"
    image.save(keyed, transparency=1)
    assert rgb_at(keyed, (0, 0)) == (255, 0, 0)
    assert rgb_at(keyed, (1, 0)) == (255, 255, 255)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_gray_scales_by_bit_depth(tmp_path, ext):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = save_array(tmp_path / f"gray16{ext}", values)
    assert stored_mode(path).startswith("I;16")
    image = load_rgb(path)
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (128,) * 3, (255,) * 3]


def test_declared_12_bit_depth_is_used():
    image = Image.fromarray(np.array([[0, 4095]], dtype=np.uint16))
    image.tag_v2 = {258: (12,)}  # TIFF BitsPerSample, as a 12-bit camera TIFF declares it
    assert to_rgb(image).getpixel((1, 0)) == (255, 255, 255)


def test_16_bit_big_endian_gray(tmp_path):
    values = np.array([[0, 65535]], dtype=">u2")
    path = tmp_path / "big.tiff"
    Image.frombytes("I;16B", (2, 1), values.tobytes()).save(path)
    image = load_rgb(path)
    assert image.getpixel((1, 0)) == (255, 255, 255)


def test_32_bit_int_and_float_gray(tmp_path):
    ints = save_array(tmp_path / "int.tiff", np.array([[0, 65535]], dtype=np.int32))
    assert stored_mode(ints) == "I"
    assert rgb_at(ints, (1, 0)) == (255, 255, 255)
    floats = save_array(tmp_path / "float.tiff", np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert stored_mode(floats) == "F"
    image = load_rgb(floats)
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_cmyk_is_roughly_right(tmp_path):
    path = write_image(tmp_path / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK", quality=95)
    red, green, blue = rgb_at(path, (4, 4))
    assert red > 200 and green < 50 and blue < 50


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    red, green, blue = rgb_at(path)
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    upright = load_rgb(path)
    assert upright.size == (2, 4)
    assert upright.getpixel((1, 0)) == (255, 255, 255)


def test_bomb_warning_size_still_loads(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", size=(10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # 100 px: over the limit, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert load_rgb(path).size == (10, 10)


def assert_bad_image(path, *reason_words):
    with pytest.raises(DataError) as caught:
        load_rgb(path)
    message = str(caught.value)
    assert path.name in message and "--skip-bad-images" in message
    for word in reason_words:
        assert word in message
    return message


def test_bomb_error_names_the_file(tmp_path, monkeypatch):
    path = write_image(tmp_path / "bomb.png", size=(10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 100 px > twice the limit
    assert_bad_image(path, "MAX_IMAGE_PIXELS")


def test_missing_empty_and_non_image_files(tmp_path):
    assert_bad_image(tmp_path / "gone.jpg", "not found")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_bad_image(empty, "empty")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    assert_bad_image(text, "not an image")


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, format):
    path = write_truncated(tmp_path / f"cut.{format.lower()}", format)
    assert_bad_image(path, "decoding failed")


def test_corrupt_bytes_after_valid_header(tmp_path):
    data = bytearray(encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "PNG"))
    data[40:60] = b"\xff" * 20
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    assert_bad_image(path)
