"""Image paths, lazy RGB loading and bad-image handling (error and skip), alone and through the readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mvqa.data.images import BadImageError, check_image_path, load_image, resolve_image_path, verify_images
from mvqa.data.readers import read_pmc_vqa
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats


def item(image: str, root: Path | str, item_id: str = "t:0") -> VQAItem:
    return VQAItem(id=item_id, image=image, question="Which?", choices=["a", "b"], answer_label="A",
                   answer="a",
                   image_root=str(root))


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """good.png (grey), rgba.png, corrupt.png (not an image), cut.jpg (truncated JPEG); missing.png is
    absent."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    pixels = np.arange(12 * 10, dtype=np.uint8).reshape(10, 12)
    Image.fromarray(pixels, "L").save(root / "sub" / "good.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(root / "rgba.png")
    (root / "corrupt.png").write_bytes(b"this is not a png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(root / "full.jpg")
    data = (root / "full.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_load_image_is_rgb_with_the_file_pixels(image_dir):
    img = load_image(item("sub/good.png", image_dir))
    assert img.mode == "RGB" and img.size == (12, 10)
    arr = np.asarray(img)
    assert arr[0, 5].tolist() == [5, 5, 5] and arr[9, 11].tolist() == [119, 119, 119]
    assert load_image(item("rgba.png", image_dir)).mode == "RGB"
    assert resolve_image_path(item("sub/good.png", image_dir)) == image_dir / "sub" / "good.png"


@pytest.mark.parametrize("image", ["../x.png", "sub/../../x.png", "/etc/passwd", "\\\\server\\x.png",
                                   "C:\\imgs\\x.png", "sub\\..\\..\\x.png", "..", " "])
def test_paths_leaving_the_root_are_rejected(image_dir, image):
    with pytest.raises(ValueError,
                       match=r"item 't:0': (image path .* leaves the image root|empty image path)"):
        resolve_image_path(item(image, image_dir))


@pytest.mark.parametrize("image", ["a..b.png", "sub/..hidden.png", "x/y/z.png"])
def test_dots_inside_names_are_fine(image):
    check_image_path(image)


@pytest.mark.parametrize("image, reason",
                         [("missing.png", "image not found"), ("corrupt.png", "cannot decode"),
                                           ("cut.jpg", "cannot decode")])
def test_bad_image_raises_naming_item_and_path(image_dir, image, reason):
    with pytest.raises(BadImageError, match=rf"item 't:0': {reason}.*{image}"):
        load_image(item(image, image_dir))


def test_verify_images_error_and_skip(image_dir):
    items = [item("sub/good.png", image_dir, "t:0"), item("missing.png", image_dir, "t:1"),
             item("corrupt.png", image_dir, "t:2"), item("sub/good.png", image_dir, "t:3"),
             item("cut.jpg", image_dir, "t:4"), item("missing.png", image_dir, "t:5")]
    with pytest.raises(BadImageError, match=r"item 't:1': image not found: .*missing\.png"):
        verify_images(items, "error")
    stats = StageStats("load")
    kept = verify_images(items, "skip", stats)
    assert [it.id for it in kept] == ["t:0", "t:3"]
    assert [(d["id"], d["reason"]) for d in stats.dropped] == [
        ("t:1", "missing_image"), ("t:2", "corrupt_image"), ("t:4", "corrupt_image"),
        ("t:5", "missing_image")]
    assert stats.dropped[0]["path"].endswith("missing.png")
    with pytest.raises(ValueError, match="on_bad_image='ignore'"):
        verify_images(items, "ignore", stats)


def test_reader_checks_images_at_load_time(image_dir, tmp_path):
    rows = [{"Figure_path": p, "Question": "Q?", "Answer": "CT", "Choice A": "A: CT", "Choice B": "B: MRI",
             "Answer_label": "A"} for p in ["sub/good.png", "corrupt.png", "missing.png", "rgba.png"]]
    path = tmp_path / "with_images.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    columns = {"choices": ["Choice A", "Choice B"]}
    items, stats = read_pmc_vqa(path, image_root=str(image_dir), columns=columns)  # unchecked: nothing opened
    assert len(items) == 4
    with pytest.raises(BadImageError, match=r"item 'pmc_vqa:1': cannot decode image .*corrupt\.png"):
        read_pmc_vqa(path, image_root=str(image_dir), columns=columns, check_images=True)
    items, stats = read_pmc_vqa(path, image_root=str(image_dir), columns=columns, check_images=True,
                                on_bad_image="skip")
    assert [it.image for it in items] == ["sub/good.png", "rgba.png"]
    assert (stats.n_in, stats.n_out, stats.drop_reasons) == (4, 2, {"corrupt_image": 1, "missing_image": 1})
    assert "dropped corrupt_image: 1, missing_image: 1" in stats.summary()

    lost = tmp_path / "all_bad.csv"
    pd.DataFrame(rows[1:3]).to_csv(lost, index=False)
    with pytest.raises(ValueError, match=r"all_bad\.csv: no items left after loading"):
        read_pmc_vqa(lost, image_root=str(image_dir), columns=columns, check_images=True, on_bad_image="skip")


def test_real_slake_image_loads(shared_data):
    img = load_image(item("xmlab102/source.jpg", shared_data / "slake" / "imgs"))
    assert img.mode == "RGB" and min(img.size) >= 64
