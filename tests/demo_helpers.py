"""Shared pieces of the demo tests: generated good and bad image files, a one-class COCO set,
the package's log records."""

import contextlib
import json
import logging
import os
from typing import Iterator, List, Tuple

import cv2
import numpy as np

from resnest_dense.data.toy_coco import generate_toy_coco


def write_image(path, h: int = 24, w: int = 32, seed: int = 0) -> str:
    """A random image at ``path`` (format from the extension, parents created)."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(path, image)
    return path


def write_truncated_jpeg(path) -> str:
    """A JPEG cut in half: the header is valid, the data end early."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    full = cv2.imencode(".jpg", np.full((64, 64, 3), 127, np.uint8))[1].tobytes()
    with open(path, "wb") as f:
        f.write(full[: len(full) // 2])
    return str(path)


def write_bad_folder(folder) -> List[str]:
    """Two good images among a truncated JPEG and a text file renamed .png; returns the names
    of the bad files."""
    write_image(os.path.join(folder, "a.png"), 50, 70, seed=1)
    write_truncated_jpeg(os.path.join(folder, "b.jpg"))
    with open(os.path.join(folder, "c.png"), "w") as f:
        f.write("a text file renamed .png")
    write_image(os.path.join(folder, "d.jpg"), 64, 64, seed=2)
    return ["b.jpg", "c.png"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@contextlib.contextmanager
def package_logs() -> Iterator[_Records]:
    """The records of the ``resnest_dense`` loggers (detectron2's ``setup_logger`` stops them
    from propagating to pytest's ``caplog``)."""
    logger = logging.getLogger("resnest_dense")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.DEBUG, logging.DEBUG))
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write_one_class_coco(root, name: str = "widget") -> Tuple[str, str]:
    """A small toy COCO set (4 train images) whose only category is ``name``; returns the json
    file and the image folder."""
    generate_toy_coco(str(root), num_train=4, num_val=1, seed=0)
    json_file = os.path.join(str(root), "annotations", "instances_train.json")
    with open(json_file) as f:
        coco = json.load(f)
    coco["categories"] = [{"id": 1, "name": name, "supercategory": "thing"}]
    for annotation in coco["annotations"]:
        annotation["category_id"] = 1
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file, os.path.join(str(root), "train")


# Inputs both demos refuse before building a model: (make it under tmp_path, --input, message).
BAD_INPUTS = [
    (lambda d: None, "nope.jpg", "does not exist"),
    (lambda d: (d / "empty").mkdir(), "empty", "holds no images"),
    (lambda d: (d / "t").mkdir() or (d / "t" / "a.txt").write_text("x"), "t", "no images"),
    (lambda d: None, "nothing*.png", "matches no image"),
]
BAD_INPUT_IDS = ["missing-file", "empty-folder", "folder-without-images", "pattern"]
