"""People's pictures -> MNIST-style inputs: checked against MNIST itself and against the same digit
drawn cleanly, for each way a real picture differs (borders, noise, light, formats, transparency)."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lenet5.images import ImageError, load_digit, open_image, prepare, save_input
from conftest import peak_memory
from people import render


def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def on_paper(digit: torch.Tensor, scale: int = 5, size=(300, 240), at=(40, 70)) -> np.ndarray:
    """An MNIST digit drawn dark on white paper, scaled up and off-centre: uint8 (h, w)."""
    big = Image.fromarray(255 - digit.numpy(), "L").resize((28 * scale, 28 * scale), Image.BICUBIC)
    sheet = Image.new("L", size, 255)
    sheet.paste(big, at)
    return np.asarray(sheet)


@pytest.fixture(scope="module")
def seven(mnist):
    return mnist.test_images[0]  # a 7


@pytest.fixture(scope="module")
def clean(seven):
    """The reference: the digit on plain paper, prepared."""
    return load_digit(png(Image.fromarray(on_paper(seven))))


def test_an_mnist_digit_comes_back_as_itself(mnist):
    # Already MNIST-style: centring and scaling should leave it (almost) as it was.
    for i in range(20):
        digit = mnist.test_images[i]
        got = load_digit(png(Image.fromarray(digit.numpy())))
        assert similarity(got, digit) > 0.9, i


def test_dark_on_light_scaled_off_centre_is_the_mnist_digit(seven, clean):
    assert similarity(clean, seven) > 0.9


def test_fits_a_20_box_keeping_aspect_with_centre_of_mass_at_the_centre():
    sheet = Image.new("L", (400, 300), 255)
    ImageDraw.Draw(sheet).rectangle([30, 40, 69, 239], fill=0)  # a bar 40 wide, 200 tall, top-left
    x = load_digit(png(sheet)).double()
    rows, cols = torch.nonzero(x > 64, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20
    assert 3 <= cols.max() - cols.min() + 1 <= 5  # 40/200 of 20 pixels, give or take the blur
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    m = x.sum()
    assert abs((ys * x).sum() / m - 14) <= 0.5 and abs((xs * x).sum() / m - 14) <= 0.5


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_format_and_colour_gives_the_same_digit(seven, clean, fmt):
    rgb = np.stack([on_paper(seven)] * 3, -1).astype(np.float64)
    rgb = rgb * np.array([0.95, 0.9, 1.0]) + np.array([0, 0, 40]) * (rgb < 128)  # blue pen, tinted paper
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")
    assert similarity(load_digit(png(img, fmt)), clean) > 0.9


def test_a_frame_and_the_edge_of_the_page_are_ignored(seven, clean):
    sheet = Image.fromarray(on_paper(seven))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([12, 12, 287, 227], outline=0, width=4)  # a box drawn round the digit
    draw.rectangle([0, 0, 299, 6], fill=40)  # the table showing along the top
    assert similarity(load_digit(png(sheet)), clean) > 0.9


def test_salt_and_pepper_noise_and_specks_are_ignored(seven, clean):
    rng = np.random.default_rng(0)
    a = on_paper(seven).copy()
    noise = rng.random(a.shape)
    a[noise < 0.03], a[noise > 0.97] = 0, 255
    a[5:9, 280:284] = 0  # a speck of dirt far from the digit
    assert similarity(load_digit(png(Image.fromarray(a))), clean) > 0.9


def test_uneven_light_and_gray_paper(seven, clean):
    a = on_paper(seven).astype(np.float64)
    shade = np.linspace(1.0, 0.6, a.shape[1])[None, :]  # 40 % darker on the right
    a = (a * 0.85 + 20) * shade
    assert similarity(load_digit(png(Image.fromarray(a.astype(np.uint8)))), clean) > 0.9


def test_light_ink_on_dark_is_read_without_inverting(seven, clean):
    assert similarity(load_digit(png(Image.fromarray(255 - on_paper(seven)))), clean) > 0.9


def bold_dark_on_light(digit: torch.Tensor, grow: int = 9) -> np.ndarray:
    """A marker-thick version of an MNIST digit, dark on white, cropped tight to its ink."""
    from PIL import ImageFilter

    big = Image.fromarray(digit.numpy(), "L").resize((112, 112), Image.BICUBIC).filter(ImageFilter.MaxFilter(grow))
    a = np.asarray(big)
    ys, xs = np.nonzero(a > 128)
    return 255 - a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def test_a_tight_crop_of_bold_ink_is_read_the_right_way_round(mnist):
    """Ink can cover most of a tight crop: the edges, mostly paper, say which side is the paper."""
    inky = 0
    for i in range(10):
        tight = bold_dark_on_light(mnist.test_images[i])
        inky += (tight < 128).mean() > 0.5
        with_margin = np.pad(tight, 40, constant_values=255)  # the same ink with paper round it
        got, ref = load_digit(png(Image.fromarray(tight))), load_digit(png(Image.fromarray(with_margin)))
        assert similarity(got, ref) > 0.85, i  # the same digit, give or take a pixel of centring
    assert inky >= 5  # most of these crops are more ink than paper


def test_a_dark_sheet_in_a_light_margin_stays_a_dark_sheet(mnist):
    """MNIST-style light ink on a dark sheet, inside a white margin that nothing dark reaches."""
    for i in range(5):
        digit = mnist.test_images[i]
        framed = np.pad(np.asarray(Image.fromarray(digit.numpy()).resize((112, 112), Image.BICUBIC)), 8,
                        constant_values=255)
        assert similarity(load_digit(png(Image.fromarray(framed))), digit) > 0.9, i


def test_a_fine_pen_on_a_big_sheet_is_thickened_to_mnist_strokes():
    sheet = Image.new("L", (1000, 1000), 255)
    ImageDraw.Draw(sheet).line([(300, 250), (700, 250), (480, 800)], fill=0, width=3)  # a 7
    x = load_digit(png(sheet)).double() / 255
    # MNIST digits carry 60-150 "pixels" of ink; a 3-pixel line scaled by 1/40 would carry ~10.
    assert 40 < x.sum() < 200, x.sum()


def test_16_bit_gives_the_same_digit(seven, clean):
    a = on_paper(seven).astype(np.uint16)
    for peak in (65535, 4095):  # full 16-bit, and a 12-bit scan stored in 16 bits
        img = Image.fromarray((a * (peak / 255)).astype(np.uint16))
        assert img.mode.startswith("I;16")
        assert open_image(png(img)).mode == "L"
        assert similarity(load_digit(png(img)), clean) > 0.9, peak


@pytest.mark.parametrize("ink", ["dark", "light"])
def test_transparency_is_composited_like_paper(seven, clean, ink):
    strokes = 255 - on_paper(seven)  # how much ink
    colour = 20 if ink == "dark" else 240
    rgba = np.zeros(strokes.shape + (4,), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = strokes  # ink only: the sheet is transparent
    assert similarity(load_digit(png(Image.fromarray(rgba, "RGBA"))), clean) > 0.9


def test_an_animated_picture_gives_its_first_frame(mnist, clean, seven):
    first = Image.fromarray(on_paper(seven))
    second = Image.fromarray(on_paper(mnist.test_images[1]))  # a 2
    for fmt in ("GIF", "WEBP"):
        data = png(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)
        assert Image.open(io.BytesIO(data)).n_frames == 2
        assert similarity(load_digit(data), clean) > 0.9, fmt


def test_a_phone_photo_is_turned_upright_by_its_exif(seven, clean):
    stored = Image.fromarray(on_paper(seven)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    assert similarity(load_digit(png(stored, "JPEG", exif=exif, quality=90)), clean) > 0.9


def test_people_like_renders_match_mnist(mnist):
    rng = np.random.default_rng(0)
    for i in range(10):
        got = load_digit(render(mnist.test_images[i].numpy(), rng, frame=i % 2 == 1))
        assert similarity(got, mnist.test_images[i]) > 0.85, i


def bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (decoding it would take gigabytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, message", [
    (b"", "file is empty"),
    (b"hello, this is text", "not an image file lenet5 reads"),
    (png(Image.new("L", (50, 50), 255), "JPEG")[:200], "not a readable image"),
    (bomb(30000, 30000), "too large"),
    (bomb(200000, 200000), "too large"),
    (png(Image.new("L", (200, 200), 255)), "no ink found"),
    (png(Image.new("RGBA", (200, 200), (0, 0, 0, 0))), "no ink found"),
    (png(Image.fromarray(np.random.default_rng(0).normal(200, 4, (200, 200)).astype(np.uint8))),
     "no ink found"),
    (png(Image.new("L", (200, 200), 128)), "no ink found"),
])
def test_unusable_pictures_raise_a_clear_image_error(data, message):
    with pytest.raises(ImageError, match=message) as e:
        load_digit(data, "pic.png")
    assert str(e.value).startswith("pic.png: ") and "\n" not in str(e.value)


def test_a_lone_speck_is_not_a_digit():
    sheet = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(sheet).rectangle([100, 100, 101, 101], fill=0)
    with pytest.raises(ImageError, match="speck"):
        load_digit(png(sheet), "dot.png")


def test_files_and_bytes_and_pil_images_agree(tmp_path, seven):
    data = png(Image.fromarray(on_paper(seven)))
    (tmp_path / "a.png").write_bytes(data)
    from_file = load_digit(tmp_path / "a.png")
    assert from_file.dtype == torch.uint8 and from_file.shape == (28, 28)
    assert torch.equal(from_file, load_digit(data, "a.png"))
    assert torch.equal(from_file, prepare(Image.open(tmp_path / "a.png"), "a.png"))
    with pytest.raises(ImageError, match="missing.png: no such file"):
        load_digit(tmp_path / "missing.png")


def test_save_input_writes_the_pixels_the_model_saw(tmp_path, clean):
    path = save_input(clean, tmp_path / "in" / "seven-input.png")
    img = Image.open(path)
    assert img.size == (224, 224) and img.mode == "L"
    assert torch.equal(torch.from_numpy(np.array(img.resize((28, 28), Image.NEAREST))), clean)


def test_tiny_pictures_and_specks_are_image_errors():
    """2x2 and other pictures with no region big enough to be a stroke: an ImageError, never a crash."""
    for a in ([[0, 255], [255, 0]], [[0]], [[0, 255, 0]], [[255, 0], [0, 0]]):
        with pytest.raises(ImageError, match="tiny.png: no (digit|ink) found"):
            load_digit(png(Image.fromarray(np.array(a, np.uint8))), "tiny.png")
    rng = np.random.default_rng(0)
    for i in range(200):  # small random specks: about half of these crashed
        shape = rng.integers(1, 16, 2)
        a = np.where(rng.random(shape) < rng.uniform(0.05, 0.5), 0, 255).astype(np.uint8)
        try:
            assert load_digit(png(Image.fromarray(a)), "speck.png").shape == (28, 28)
        except ImageError as e:
            assert str(e).startswith("speck.png: "), i


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_float_pictures_with_infinities_or_nan(seven, clean, special):
    a = on_paper(seven).astype(np.float32) / 255
    a[0, 0] = special  # one bad pixel in a corner: the digit is still there
    assert similarity(load_digit(png(Image.fromarray(a, "F"), "TIFF")), clean) > 0.9
    blank = np.full((40, 40), special, np.float32)
    with pytest.raises(ImageError, match="no ink"):
        load_digit(png(Image.fromarray(blank, "F"), "TIFF"), "f.tif")


@pytest.mark.parametrize("fmt", ["SGI", "PCX", "ICO", "TGA", "PPM", "QOI", "DDS", "EPS"])
def test_formats_outside_the_list_are_refused_unopened(fmt):
    if fmt == "EPS":  # Pillow hands EPS to Ghostscript; a header is enough for it to try
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    else:
        data = png(Image.new("RGB", (64, 64), "white"), fmt)
        assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would read it
    with pytest.raises(ImageError) as e:
        load_digit(data, f"pic.{fmt.lower()}")
    assert str(e.value) == f"pic.{fmt.lower()}: not an image file lenet5 reads (PNG, JPEG, BMP, GIF, WebP, TIFF)"


def test_any_other_failure_on_a_picture_becomes_its_image_error(monkeypatch, seven):
    from lenet5 import images

    def broken(*args):
        raise RuntimeError("a bug met on a strange picture")

    monkeypatch.setattr(images, "_ink", broken)
    with pytest.raises(ImageError, match="odd.png: cannot be read as a digit picture .RuntimeError") as e:
        load_digit(png(Image.fromarray(on_paper(seven))), "odd.png")
    assert isinstance(e.value.__cause__, RuntimeError)  # kept, for a server to log with its traceback


@pytest.fixture(scope="module")
def big_16_bit_png(tmp_path_factory):
    """A 16-megapixel 16-bit gray PNG of a 7 (45 KB on disk)."""
    sheet = Image.new("I;16", (4000, 4000), 60000)
    ImageDraw.Draw(sheet).line([(1200, 1000), (2800, 1000), (1900, 3200)], fill=2000, width=120)
    path = tmp_path_factory.mktemp("big") / "big16.png"
    sheet.save(path)
    return path


def test_a_big_picture_costs_bounded_memory(big_16_bit_png):
    """All of it counted, Pillow's decoding too: the decoded picture is 32 MB (2 bytes a pixel);
    float copies of the whole of it used to add 400 MB more."""
    data = big_16_bit_png.read_bytes()
    with peak_memory() as used:
        digit = load_digit(data, "big16.png")
    assert used["bytes"] < 100 << 20, used
    sheet = Image.new("L", (400, 400), 255)  # the same 7 drawn small: the same digit
    ImageDraw.Draw(sheet).line([(120, 100), (280, 100), (190, 320)], fill=8, width=12)
    assert similarity(digit, load_digit(png(sheet))) > 0.95


def test_the_gray_levels_median_and_otsu_are_numpys_to_the_bit():
    """`_level_stats` counts 256 levels instead of sorting and binning the pixels; the values it
    gives must be exactly those of np.median and `_otsu` on the pixels, before and after inverting."""
    from lenet5.images import GRAYS, _level_stats, _otsu

    rng = np.random.default_rng(3)
    for i in range(300):
        shape = tuple(rng.integers(1, 40, 2))
        levels = rng.integers(0, 256, int(rng.integers(1, 6))) if i % 2 else np.arange(256)
        gray = rng.choice(levels, shape).astype(np.uint8)  # few levels: ties at the middle
        counts = np.array(Image.fromarray(gray).histogram())
        for values in (GRAYS, 1.0 - GRAYS):
            pixels = values[gray]  # as `gray / 255.0` (and `1.0 - that`) give them
            assert _level_stats(values, counts) == (float(np.median(pixels)), _otsu(pixels))


def test_the_percentile_is_numpys_to_the_bit():
    """`images._percentile` stands in for np.percentile in every picture: the same float, every
    size and fraction, ties and repeats included."""
    from lenet5.images import _percentile

    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 4, 5, 10, 11, 99, 100, 101, 1000, 4097]:
        for values in (rng.random(n), rng.integers(0, 4, n).astype(np.float64) / 3, np.full(n, 0.7)):
            for q in (0, 10, 50, 89.5, 90, 99.9, 100):
                assert _percentile(values, q) == np.percentile(values, q), (n, q)
