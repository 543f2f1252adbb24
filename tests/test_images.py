"""Users' digit images (handgrad.images): transparency, and errors that name the file."""

import numpy as np
import pytest

from handgrad.datasets import DataError

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
from PIL import ImageDraw  # noqa: E402

from handgrad.images import flatten_alpha, load_digit_image, read_image  # noqa: E402

SEVEN = [(30, 30), (110, 30), (60, 140)]  # the top bar, then the diagonal


def seven(mode, background, ink, size=(140, 170)):
    """A 7 drawn in ``ink`` on ``background`` (colours of ``mode``)."""
    img = Image.new(mode, size, background)
    ImageDraw.Draw(img).line(SEVEN, fill=ink, width=14)
    return img


@pytest.fixture
def reference(tmp_path):
    """The 7 as dark ink on white paper, no transparency: what every form must equal."""
    seven("L", 255, 0).save(tmp_path / "paper.png")
    return load_digit_image(tmp_path / "paper.png")


@pytest.mark.parametrize("name, make", [
    # black ink on a transparent background whose pixels store black: the reviewer's file
    ("black-on-clear.png", lambda: seven("RGBA", (0, 0, 0, 0), (0, 0, 0, 255))),
    # white ink on a transparent background storing white
    ("white-on-clear.png", lambda: seven("RGBA", (255, 255, 255, 0), (255, 255, 255, 255))),
    # white ink, the transparent background storing black (a white digit for a dark page)
    ("white-on-black-clear.png", lambda: seven("RGBA", (0, 0, 0, 0), (255, 255, 255, 255))),
    # gray with alpha
    ("la.png", lambda: seven("LA", (0, 0), (0, 255))),
    # a palette image whose background colour is the transparent one
    ("palette.png", lambda: seven("P", 0, 1)),
    ("clear.webp", lambda: seven("RGBA", (0, 0, 0, 0), (0, 0, 0, 255))),
])
def test_a_digit_on_a_transparent_background_reads_as_on_paper(tmp_path, reference, name, make):
    img = make()
    path = tmp_path / name
    if img.mode == "P":
        img.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black...
        img.save(path, transparency=0)  # ...and entry 0, the background, transparent
    elif name.endswith(".webp"):
        from PIL import features

        if not features.check("webp"):
            pytest.skip("this Pillow was built without WebP")
        img.save(path, lossless=True)
    else:
        img.save(path)
    got = load_digit_image(path)
    assert got.max() == 255
    np.testing.assert_allclose(got, reference, atol=3)


def test_an_opaque_page_with_transparent_margins_keeps_its_background(tmp_path, reference):
    img = Image.new("RGBA", (180, 210), (0, 0, 0, 0))  # clear margins storing black
    img.paste(seven("RGBA", (255, 255, 255, 255), (0, 0, 0, 255)), (20, 20))
    img.save(tmp_path / "page.png")
    np.testing.assert_allclose(load_digit_image(tmp_path / "page.png"), reference, atol=3)


def test_an_image_without_transparency_is_read_as_before(tmp_path):
    img = seven("RGB", (250, 250, 250), (10, 10, 10))
    img.save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"),
                                  np.asarray(img.convert("L"), dtype=np.float64))


def test_flatten_alpha_blends_partly_transparent_edges():
    gray = np.zeros((4, 4))  # black everywhere, as a transparent PNG often stores it
    alpha = np.zeros((4, 4))
    alpha[1, 1], alpha[1, 2] = 1.0, 0.5  # one opaque ink pixel and a half-covered edge
    out = flatten_alpha(gray, alpha)
    assert out[1, 1] == 0 and out[1, 2] == 127.5 and out[0, 0] == 255


def test_a_blank_image_error_names_the_file(tmp_path):
    Image.new("L", (30, 30), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank") as info:
        load_digit_image(tmp_path / "blank.png")
    assert str(info.value).startswith(f"{tmp_path / 'blank.png'}: ")
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(DataError, match="fully transparent") as info:
        load_digit_image(tmp_path / "clear.png")
    assert str(info.value).startswith(f"{tmp_path / 'clear.png'}: ")


def test_the_command_line_reads_a_transparent_png(tmp_path, capsys):
    import handgrad
    from handgrad.cli import main
    from handgrad.datasets import Preprocessor, load_digits

    images, _ = load_digits()
    model = handgrad.MLP(64, 16, 10, seed=0)
    model.preprocessor = Preprocessor().fit(images)
    handgrad.save(model, tmp_path / "m.safetensors")
    seven("RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).save(tmp_path / "seven.png")
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert main(["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "seven.png")]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "seven.png"))
    assert main(["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "clear.png")]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'clear.png'}: the image is fully transparent" in err
