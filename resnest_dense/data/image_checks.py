"""Image and semantic-label checks: files decode to what they hold, as training and evaluation
read them.

* 16-bit, 32-bit integer and float images are refused: detectron2's ``read_image`` converts
  with PIL ``convert("RGB")``, which clips every value above 255 (a 16-bit photo becomes a
  white image). 8-bit modes (palette, LA, RGBA, 1-bit, CMYK) and 16-bit-per-channel RGB PNGs
  (PIL keeps the high byte) decode correctly and pass.
* A width/height mismatch is explained: whether the stored size matches the un-rotated image
  (EXIF orientation is the cause) or neither.
* Semantic label maps hold only ``[0, NUM_CLASSES)`` and the ignore value, and are read alike by
  the training mapper (``read_image(..., "L")``) and the evaluator (``np.asarray(Image.open)``),
  which differ for palette, 16-bit, 1-bit and EXIF-rotated files.
* Per sample: :class:`CheckedMapper`, :class:`CheckedSemSegLoader`,
  :class:`UnreadableImageTracker`, :func:`check_image_file`.
"""

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..config import has_sem_seg_head
from .check_errors import DataCheckError, data_error, describe_datasets, sample_indices, shorten

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_SAMPLE_SIZE",
    "CheckedMapper",
    "CheckedSemSegLoader",
    "UnreadableImageTracker",
    "check_image_file",
    "check_images",
    "check_sem_seg_labels",
    "check_sem_seg_tensor",
    "explain_size_mismatch",
    "read_sem_seg_label",
    "sem_seg_label_range",
]

logger = logging.getLogger(__name__)

# Files decoded by the start-up samplers (images, label maps): enough to catch a dataset-wide
# format problem, a fraction of a second on COCO-sized images.
DEFAULT_SAMPLE_SIZE = 32
_EXIF_ORIENTATION = 274
# EXIF orientations that swap width and height (transpose, rotate 90 / 270, transverse).
_SWAPS_AXES = {5, 6, 7, 8}


# Meta-architectures whose targets are label maps (MODEL.SEM_SEG_HEAD.NUM_CLASSES classes).
def sem_seg_label_range(cfg) -> Optional[Tuple[int, int]]:
    """``(NUM_CLASSES, IGNORE_VALUE)`` of a config whose model has a semantic-segmentation head
    (semantic segmentors, Panoptic FPN's stuff head), else None."""
    if not has_sem_seg_head(cfg):
        return None
    return int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES), int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


# Image files the demos and DATASETS.SEM_SEG_FORMAT pick up from a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_ACCEPTED_MODES = "1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr"


def _bit_depth_problem(mode: str) -> Optional[str]:
    if mode == "F":
        return "32-bit floating-point"
    if mode.startswith("I;16"):
        return "16-bit integer"
    if mode.startswith("I"):
        return "32-bit integer"
    return None


def _refuse_bit_depth(file_name: str, mode: str) -> None:
    depth = _bit_depth_problem(mode)
    if depth is None:
        return
    raise data_error(
        f"Image {file_name}",
        f"an 8-bit image (PIL modes {_ACCEPTED_MODES})",
        f"a {depth} single-channel image (PIL mode {mode!r})",
        "detectron2 reads images with PIL convert('RGB'), which clips every value above 255 to "
        "255 instead of scaling (a 16-bit photo becomes a white image). Convert the files to "
        "8 bits, scaled to the range your data use, e.g. for full-range 16-bit data "
        "Image.fromarray((np.asarray(im) >> 8).astype(np.uint8)).",
    )


def check_image_file(file_name: str) -> None:
    """Refuse an image detectron2 would not decode to what it holds (reads the header only).

    Use before ``read_image`` in a mapper or a demo.

    Raises:
        DataCheckError: 16-bit, 32-bit integer or float image.
        OSError: missing or unreadable file (PIL's error, so corrupt-image skipping sees it).
    """
    with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
        _refuse_bit_depth(file_name, im.mode)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # detectron2 ignores broken EXIF blocks the same way
        return 1


def _geometry(im: Image.Image) -> Tuple[Tuple[int, int], Tuple[int, int], int]:
    """Stored ``(w, h)``, ``(w, h)`` after EXIF orientation (what ``read_image`` returns) and the
    orientation tag."""
    orientation = _orientation(im)
    stored = tuple(im.size)
    decoded = stored[::-1] if orientation in _SWAPS_AXES else stored
    return stored, decoded, orientation


def _size_mismatch(
    file_name: str, expected: Tuple[int, int], stored, decoded, orientation: int
) -> DataCheckError:
    subject = f"Image {file_name}"
    given = f"width x height {expected[0]} x {expected[1]} as the annotations give"
    if orientation in _SWAPS_AXES and tuple(expected) == tuple(stored):
        return data_error(
            subject,
            given,
            f"{decoded[0]} x {decoded[1]} after its EXIF orientation {orientation} (rotated / "
            f"transposed), which detectron2's read_image applies; the stored pixels are "
            f"{stored[0]} x {stored[1]}, the size in the annotations: EXIF orientation is the "
            "cause",
            "If the annotations were drawn on the stored (un-rotated) pixels, remove the EXIF "
            "orientation tag from the images; if they were drawn on the rotated view, save the "
            "images rotated (PIL ImageOps.exif_transpose) and write their rotated size in the "
            "annotations.",
        )
    exif = f" (EXIF orientation {orientation})" if orientation != 1 else ""
    return data_error(
        subject,
        given,
        f"{decoded[0]} x {decoded[1]} when decoded{exif}; stored {stored[0]} x {stored[1]}: "
        "neither matches, so EXIF orientation is not the cause",
        "The file was resized or replaced after annotation, or the entry belongs to another "
        "image: correct width/height (and the annotations) or restore the original file.",
    )


def explain_size_mismatch(
    dataset_dict: Dict, cause: Optional[BaseException] = None
) -> DataCheckError:
    """Turn detectron2's ``SizeMismatchError`` into a message that says whether EXIF orientation
    is the cause. Returns the error (``raise explain_size_mismatch(d, e) from e``).

    Args:
        dataset_dict: the dict the mapper got (``file_name``, ``width``, ``height``).
        cause: the original error, quoted if the file cannot be re-opened.
    """
    file_name = dataset_dict.get("file_name", "?")
    expected = (dataset_dict.get("width"), dataset_dict.get("height"))
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            stored, decoded, orientation = _geometry(im)
    except OSError as e:
        return DataCheckError(f"Image {file_name}: {cause}; re-opening it failed: {e}")
    return _size_mismatch(file_name, expected, stored, decoded, orientation)


def _is_local(path: str) -> bool:
    return "://" not in path


def _missing_files(paths: Sequence[str]) -> List[str]:
    # One stat per file; PathManager only for URLs (it costs ~10x a local stat).
    return [p for p in paths if not (os.path.isfile(p) if _is_local(p) else PathManager.exists(p))]


def check_images(
    dataset_dicts: Sequence[Dict],
    dataset_names: Sequence[str] = (),
    *,
    sample: int = DEFAULT_SAMPLE_SIZE,
    allow_unreadable: bool = False,
) -> None:
    """Every image exists (a ``stat`` each); ``sample`` of them, spread over the dataset,
    decode, are 8-bit and have the width/height of their dicts after EXIF orientation.

    Args:
        dataset_dicts: loaded dicts (``file_name``, optional ``width`` / ``height``).
        dataset_names: for messages.
        sample: how many images to decode.
        allow_unreadable: log sampled images that fail to decode instead of raising (training
            with ``DATALOADER.SKIP_CORRUPT_IMAGES``), unless none of the sample decodes.

    Raises:
        DataCheckError: missing files (count and first ones), an unreadable sampled image, a
            16/32-bit or float image, a size mismatch (explained).
    """
    paths = [d["file_name"] for d in dataset_dicts]
    missing = _missing_files(paths)
    if missing:
        raise data_error(
            f"Images of {describe_datasets(dataset_names)}",
            f"all {len(paths)} image files to exist",
            f"{len(missing)} missing: {shorten(missing, 5)}",
            "Check image_root / $DETECTRON2_DATASETS (datasets/README.md) and the file_name "
            "entries of the annotations.",
        )
    unreadable = []
    sampled = sample_indices(len(paths), sample)
    for i in sampled:
        d, path = dataset_dicts[i], paths[i]
        try:
            with PathManager.open(path, "rb") as f, Image.open(f) as im:
                _refuse_bit_depth(path, im.mode)
                stored, decoded, orientation = _geometry(im)
                im.load()
        except DataCheckError:
            raise
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for corrupt files
            unreadable.append(f"{path}: {e}")
            continue
        expected = (d.get("width"), d.get("height"))
        if None not in expected and tuple(expected) != tuple(decoded):
            raise _size_mismatch(path, expected, stored, decoded, orientation)
    if not unreadable:
        return
    # Skipping single bad files is allowed; a sample where no file decodes is a broken dataset.
    if allow_unreadable and len(unreadable) < len(sampled):
        logger.warning(
            "%d of %d sampled images of %s are unreadable and will be skipped; first: %s",
            len(unreadable),
            len(sampled),
            describe_datasets(dataset_names),
            unreadable[0],
        )
        return
    raise data_error(
        f"Images of {describe_datasets(dataset_names)}",
        "images PIL can decode",
        f"{len(unreadable)} of {len(sampled)} sampled images unreadable, first {unreadable[0]}",
        "Fix or remove these files (and their annotations). Training can skip single "
        "unreadable images with DATALOADER.SKIP_CORRUPT_IMAGES True (not all of them); "
        "evaluation cannot skip.",
    )


# --------------------------------------------------------------------------- semantic labels


def _label_values(label: np.ndarray) -> np.ndarray:
    if label.dtype == np.uint8:  # bincount beats a sort for the usual 8-bit label maps
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def _label_range_error(
    file_name: str, bad: Sequence[int], num_classes: int, ignore_value: int, where: str
) -> DataCheckError:
    bad = [int(v) for v in bad]
    hint = ""
    if num_classes in bad and 0 < min(bad):
        hint = (
            " If the labels are 1..N with 0 = ignore (the raw ADE20K layout), shift them to "
            f"0..N-1 with {ignore_value} = ignore (datasets/prepare_ade20k_sem_seg.py)."
        )
    return data_error(
        f"Label file {file_name} ({where})",
        f"class ids in [0, {num_classes}) or the ignore value {ignore_value} "
        f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}, IGNORE_VALUE {ignore_value})",
        f"values {shorten(bad)} (training would index past the classifier; evaluation would "
        "count them as other classes and change mIoU)",
        "Map the labels to 0..N-1 and the ignore value, or set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
        "to the dataset's number of classes (its stuff_classes)." + hint,
    )


def read_sem_seg_label(file_name: str) -> np.ndarray:
    """A label map as detectron2's ``SemSegEvaluator`` reads it (``np.asarray(Image.open)``),
    refused when detectron2's training mapper (``read_image(..., "L")``) reads other values.

    Returns:
        ``(H, W)`` array of the file's dtype.

    Raises:
        DataCheckError: more than one channel (colour-coded labels), a palette / 16-bit / 1-bit
            file whose values change under ``convert("L")``, or an EXIF orientation (training
            rotates the label map, the evaluator does not).
    """
    with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
        im.load()
        label = np.asarray(im)
        mode = im.mode
        orientation = _orientation(im)
        train_view = label if mode == "L" else np.asarray(im.convert("L"))
    fix = "Save label maps as single-channel 8-bit PNGs (PIL mode 'L') holding class ids."
    if label.ndim != 2:
        raise data_error(
            f"Label file {file_name}",
            "one class id per pixel (a single-channel image)",
            f"{label.shape[2]} channels (PIL mode {mode!r}; colour-coded labels?)",
            fix + " Map each colour to its class id first.",
        )
    if train_view is not label and not np.array_equal(train_view, label):
        diff = np.flatnonzero(train_view.ravel() != label.ravel())[0]
        raise data_error(
            f"Label file {file_name}",
            "a label map that training and evaluation read alike",
            f"PIL mode {mode!r}: the evaluator reads value {label.ravel()[diff]} where the "
            f"training mapper (convert('L')) reads {train_view.ravel()[diff]}",
            fix
            + (
                " For a palette PNG whose indices are the class ids: "
                "Image.fromarray(np.asarray(Image.open(f))).save(f) keeps the indices."
                if mode == "P"
                else ""
            ),
        )
    if orientation != 1:
        raise data_error(
            f"Label file {file_name}",
            "no EXIF orientation on a label map",
            f"orientation {orientation}: training (read_image) rotates it, the evaluator does not",
            "Remove the EXIF tag (or save the label map rotated).",
        )
    return label


def check_sem_seg_tensor(
    sem_seg, num_classes: int, ignore_value: int, file_name: str, where: str = "training sample"
) -> None:
    """Vectorised range check of one label map (the mapper's ``dataset_dict["sem_seg"]``).

    Args:
        sem_seg: ``(H, W)`` integer tensor or array.
        num_classes, ignore_value: allowed values are ``[0, num_classes)`` and ``ignore_value``.
        file_name: the label (or image) file, for the message.
        where: e.g. the dataset name, for the message.

    Raises:
        DataCheckError: naming the file and the bad values.
    """
    t = torch.as_tensor(sem_seg)
    bad = (t < 0) | ((t >= num_classes) & (t != ignore_value))
    if bool(bad.any()):
        raise _label_range_error(
            file_name, torch.unique(t[bad]).tolist(), num_classes, ignore_value, where
        )


class CheckedSemSegLoader:
    """``sem_seg_loading_fn`` for detectron2's ``SemSegEvaluator`` that checks every label map.

    Args:
        num_classes, ignore_value: what the evaluator assumes (``len(stuff_classes)`` and
            ``ignore_label`` of the metadata; see :meth:`for_dataset`).
        dataset_name: for messages.
    """

    def __init__(self, num_classes: int, ignore_value: int, dataset_name: str = ""):
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)
        self.dataset_name = dataset_name

    @classmethod
    def for_dataset(cls, dataset_name: str) -> "CheckedSemSegLoader":
        """The range ``SemSegEvaluator(dataset_name)`` uses (from the metadata)."""
        meta = MetadataCatalog.get(dataset_name)
        return cls(len(meta.stuff_classes), meta.ignore_label, dataset_name)

    def __call__(self, filename: str, dtype=int) -> np.ndarray:
        label = read_sem_seg_label(filename)
        values = _label_values(label)
        bad = values[(values < 0) | ((values >= self.num_classes) & (values != self.ignore_value))]
        if len(bad):
            where = (
                f"evaluation of {describe_datasets([self.dataset_name])}"
                if self.dataset_name
                else "evaluation"
            )
            raise _label_range_error(filename, bad, self.num_classes, self.ignore_value, where)
        return label.astype(dtype)


def check_sem_seg_labels(
    dataset_dicts: Sequence[Dict],
    num_classes: int,
    ignore_value: int,
    dataset_names: Sequence[str] = (),
    *,
    sample: int = DEFAULT_SAMPLE_SIZE,
) -> None:
    """Every record has a label file that exists; ``sample`` of them (spread over the dataset)
    hold only ``[0, num_classes) ∪ {ignore_value}``, are read alike by training and evaluation
    (:func:`read_sem_seg_label`) and have their image's size.

    Raises:
        DataCheckError: naming the first bad file and its bad values.
    """
    where = describe_datasets(dataset_names)
    labels = [d.get("sem_seg_file_name") for d in dataset_dicts]
    without = [d.get("file_name") for d, lab in zip(dataset_dicts, labels) if not lab]
    if without:
        raise data_error(
            f"Semantic-segmentation {where}",
            "a label file (sem_seg_file_name) for every image",
            f"{len(without)} of {len(labels)} images without one, first {without[0]}",
            "Register image + label folders with detectron2's load_sem_seg (labels matched by "
            "file name), or use a detection config for a detection dataset.",
        )
    missing = _missing_files(labels)
    if missing:
        raise data_error(
            f"Label files of {where}",
            f"all {len(labels)} label files to exist",
            f"{len(missing)} missing: {shorten(missing, 5)}",
            "Check sem_seg_root / $DETECTRON2_DATASETS (datasets/README.md).",
        )
    for i in sample_indices(len(labels), sample):
        try:
            label = read_sem_seg_label(labels[i])
        except (OSError, SyntaxError) as e:
            raise data_error(
                f"Label file {labels[i]} of {where}",
                "a PNG label map PIL can decode",
                f"{type(e).__name__}: {e}",
                "Fix or regenerate the file.",
            ) from e
        values = _label_values(label)
        bad = values[(values < 0) | ((values >= num_classes) & (values != ignore_value))]
        if len(bad):
            raise _label_range_error(labels[i], bad, num_classes, ignore_value, where)
        image = dataset_dicts[i]["file_name"]
        with PathManager.open(image, "rb") as f, Image.open(f) as im:
            _, decoded, orientation = _geometry(im)
        if decoded != label.shape[::-1]:
            raise data_error(
                f"Label file {labels[i]}",
                f"the size of its image {image}, {decoded[0]} x {decoded[1]} as read_image "
                f"returns it (EXIF orientation {orientation})",
                f"{label.shape[1]} x {label.shape[0]}",
                "Pair each image with its own label map, at the same size (and rotation).",
            )


# --------------------------------------------------------------------------- per-sample


class UnreadableImageTracker:
    """Counts distinct unreadable images; raises when every image of the dataset has failed.

    detectron2's ``MapDataset`` answers a mapper's None by drawing another index and forgetting
    the failed one; when every index has failed, ``random.sample`` on the empty pool raises
    "Sample larger than population or is negative", which names no file. A skipping mapper calls
    :meth:`record_failure` with the file and error; the call that makes every distinct file of
    the dataset unreadable raises instead. State is per process (each data-loader worker has its
    copy), which is what ``MapDataset``'s pool is too.

    Args:
        dataset_dicts: the dicts the loader maps.
        dataset_names: for the message.
    """

    def __init__(self, dataset_dicts: Sequence[Dict], dataset_names: Sequence[str] = ()):
        self.total = len({d["file_name"] for d in dataset_dicts})
        self.dataset_names = list(dataset_names)
        self.failed: set = set()
        self.first: Optional[str] = None

    def record_failure(self, file_name: str, error: BaseException) -> None:
        """Note one failure; raises :class:`DataCheckError` once every image has failed."""
        self.failed.add(file_name)
        if self.first is None:
            self.first = f"{file_name}: {error}"
        if self.total and len(self.failed) >= self.total:
            raise data_error(
                f"Every image of {describe_datasets(self.dataset_names)} is unreadable",
                "at least one readable image",
                f"{len(self.failed)} of {self.total} failed (first: {self.first})",
                "DATALOADER.SKIP_CORRUPT_IMAGES skips single bad files, but nothing is left to "
                "train on: check image_root / $DETECTRON2_DATASETS and the file format.",
            )


class CheckedMapper:
    """Per-sample data checks around a dataset mapper (training or test).

    Before mapping: the image's bit depth from its header (:func:`check_image_file`). A
    ``SizeMismatchError`` from the mapper becomes :func:`explain_size_mismatch`'s error. After
    mapping, for a semantic-segmentation config: the values of ``sem_seg``
    (:func:`check_sem_seg_tensor`), naming the label file. Costs one header read and a few
    element-wise tensor operations per sample.

    Unreadable files still raise PIL's ``OSError``, so a corrupt-image-skipping wrapper outside
    this one sees them; a :class:`DataCheckError` must not be skipped.

    Args:
        mapper: e.g. detectron2's ``DatasetMapper``.
        num_classes, ignore_value: allowed ``sem_seg`` values; ``num_classes=None`` skips.
        dataset_names: for messages.
    """

    def __init__(
        self,
        mapper: Callable[[Dict], Optional[Dict]],
        *,
        num_classes: Optional[int] = None,
        ignore_value: int = 255,
        dataset_names: Sequence[str] = (),
    ):
        self.mapper = mapper
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.where = describe_datasets(dataset_names)

    @classmethod
    def from_config(
        cls, cfg, mapper: Callable[[Dict], Optional[Dict]], dataset_names: Sequence[str] = ()
    ) -> "CheckedMapper":
        sem = sem_seg_label_range(cfg)
        num_classes, ignore_value = sem if sem else (None, 255)
        return cls(
            mapper, num_classes=num_classes, ignore_value=ignore_value, dataset_names=dataset_names
        )

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        file_name = dataset_dict.get("file_name")
        if file_name:
            check_image_file(file_name)
        try:
            out = self.mapper(dataset_dict)
        except SizeMismatchError as e:
            raise explain_size_mismatch(dataset_dict, e) from e
        if out is not None and self.num_classes is not None and "sem_seg" in out:
            check_sem_seg_tensor(
                out["sem_seg"],
                self.num_classes,
                self.ignore_value,
                dataset_dict.get("sem_seg_file_name") or file_name,
                self.where,
            )
        return out
