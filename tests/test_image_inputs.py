"""The demos' input listing and image reading (resnest_dense.utils.image_inputs): files, folders
and patterns; refused inputs named; unique output stems; unreadable images skipped and counted."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from demo_helpers import package_logs, write_bad_folder, write_image, write_truncated_jpeg
from resnest_dense.errors import MissingFileError, StartupError
from resnest_dense.utils import (
    ImageStream,
    UnreadableImageError,
    check_outputs,
    list_image_inputs,
    read_image_bgr,
)


def _stems(tmp_path, items):
    return [(os.path.relpath(i.path, tmp_path), i.stem) for i in list_image_inputs(items)]


def test_folder_lists_its_images_sorted(tmp_path):
    for name in ("b.JPG", "a.png", ".hidden.png", "._a.jpg"):
        write_image(tmp_path / "in" / name)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "sub.png").mkdir()  # a folder with an image name is not an image
    write_image(tmp_path / "in" / "sub.png" / "deep.png")
    assert _stems(tmp_path, [str(tmp_path / "in")]) == [("in/a.png", "a"), ("in/b.JPG", "b")]


@pytest.mark.parametrize(
    "files,items,expected",
    [
        # The same stem in two folders: the second gets a suffix.
        (["a/x.png", "b/x.png"], ["a", "b"], [("a/x.png", "x"), ("b/x.png", "x-2")]),
        # Two extensions in one folder (sorted: .jpg first).
        (["a/x.png", "a/x.jpg"], ["a"], [("a/x.jpg", "x"), ("a/x.png", "x-2")]),
        # Case-insensitive, as the output folder may be (macOS, Windows).
        (["a/X.png", "b/x.png"], ["a", "b"], [("a/X.png", "X"), ("b/x.png", "x-2")]),
        # A suffix never takes another input's own name.
        (
            ["a/x.png", "a/x-2.png", "b/x.png"],
            ["a", "b"],
            [("a/x-2.png", "x-2"), ("a/x.png", "x"), ("b/x.png", "x-3")],
        ),
        # Files named explicitly keep command-line order; a file named twice is used once.
        (
            ["a/y.png", "b/y.png"],
            ["b/y.png", "a", "a/y.png"],
            [("b/y.png", "y"), ("a/y.png", "y-2")],
        ),
        # A glob pattern gives its image matches.
        (["a/p1.png", "a/p2.jpg", "a/p3.txt"], ["a/p*"], [("a/p1.png", "p1"), ("a/p2.jpg", "p2")]),
    ],
)
def test_output_stems_are_unique(tmp_path, files, items, expected):
    for i, name in enumerate(files):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            write_image(tmp_path / name, seed=i)
    assert _stems(tmp_path, [str(tmp_path / i) for i in items]) == expected


def test_explicit_file_is_used_whatever_its_extension(tmp_path):
    path = write_image(tmp_path / "photo.png")
    os.rename(path, tmp_path / "photo.data")
    assert _stems(tmp_path, [str(tmp_path / "photo.data")]) == [("photo.data", "photo")]


@pytest.mark.parametrize(
    "make,item,message",
    [
        (lambda d: None, "missing.jpg", "does not exist"),
        (lambda d: (d / "empty").mkdir(), "empty", "holds no images"),
        (
            lambda d: ((d / "t").mkdir(), (d / "t" / "a.txt").write_text("x")),
            "t",
            "holds no images",
        ),
        (lambda d: None, "nothing*.png", "matches no image"),
    ],
    ids=["missing", "empty-folder", "folder-without-images", "pattern"],
)
def test_bad_inputs_are_named(tmp_path, make, item, message):
    make(tmp_path)
    with pytest.raises(MissingFileError, match=message) as e:
        list_image_inputs([write_image(tmp_path / "ok.png"), str(tmp_path / item)])
    assert item in str(e.value)


def _sixteen_bit_png(path):
    path = path.with_suffix(".png")
    Image.fromarray(np.arange(300 * 4, dtype=np.uint16).reshape(30, 40)).save(path)
    os.replace(path, path.with_suffix(".jpg"))  # the test names its file bad.jpg
    return str(path.with_suffix(".jpg"))


@pytest.mark.parametrize(
    "write,reason",
    [
        (write_truncated_jpeg, "(?i)truncated"),
        (lambda p: p.write_text("not an image") or str(p), "not an image format"),
        (lambda p: p.write_bytes(b"") or str(p), "not an image format"),
        (lambda p: _sixteen_bit_png(p), "16-bit"),
    ],
    ids=["truncated-jpeg", "text-file", "empty-file", "16-bit"],
)
def test_unreadable_images_are_named(tmp_path, write, reason):
    """Also a 16-bit image, which detectron2's reader would turn into a constant image."""
    path = tmp_path / "bad.jpg"
    write(path)
    with pytest.raises(UnreadableImageError, match=reason) as e:
        read_image_bgr(str(path))
    assert e.value.path == str(path) and str(path) in str(e.value)


def test_stream_skips_and_counts_unreadable_images(tmp_path):
    folder = tmp_path / "in"
    bad = write_bad_folder(folder)
    stream = ImageStream(list_image_inputs([str(folder)]))
    with package_logs() as logs:
        read = [(item.stem, image.shape) for item, image in stream]
        code = stream.finish()
    assert read == [("a", (50, 70, 3)), ("d", (64, 64, 3))]
    assert code == 1
    assert [p for p, _ in stream.skipped] == [str(folder / name) for name in bad]
    warnings = logs.messages(logging.WARNING)
    assert len(warnings) == 2 and "b.jpg" in warnings[0] and "c.png" in warnings[1]
    assert "truncated" in warnings[0].lower() and "not an image format" in warnings[1]
    summary = logs.messages(logging.ERROR)
    assert len(summary) == 1 and summary[0].startswith("2 of 4 images skipped")
    assert "b.jpg" in summary[0] and "c.png" in summary[0]


def test_stream_of_good_images_exits_0(tmp_path):
    stream = ImageStream(list_image_inputs([write_image(tmp_path / "a.png")]))
    assert len(list(stream)) == 1 and stream.finish() == 0


@pytest.mark.parametrize(
    "files,out,suffixes,clash",
    [
        (["in/a.png"], "in", [".png"], "in/a.png"),
        (["in/a.jpg"], "in", [".png"], None),  # a.png is not an input
        (["in/a.jpg", "in/b.png"], "in", [".png"], "in/b.png"),
        (["in/x.jpg", "in/x_mask.png"], "in", ["_mask.png", "_overlay.png"], "in/x_mask.png"),
        (["in/a.png"], "out", [".png"], None),
    ],
)
def test_outputs_never_replace_inputs(tmp_path, files, out, suffixes, clash):
    for name in files:
        write_image(tmp_path / name)
    inputs = list_image_inputs([str(tmp_path / "in")])
    if clash is None:
        check_outputs(inputs, str(tmp_path / out), suffixes)
    else:
        with pytest.raises(StartupError, match="would overwrite the input") as e:
            check_outputs(inputs, str(tmp_path / out), suffixes)
        assert str(tmp_path / clash) in str(e.value)


def test_progress_counts_skipped_files(tmp_path):
    write_bad_folder(tmp_path / "in")
    seen = []

    def progress(items):
        for item in items:
            seen.append(item.stem)
            yield item

    stream = ImageStream(list_image_inputs([str(tmp_path / "in")]), progress=progress)
    assert [item.stem for item, _ in stream] == ["a", "d"]
    assert seen == ["a", "b", "c", "d"]
