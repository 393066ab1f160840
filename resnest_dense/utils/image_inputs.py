"""The image inputs of the demos: files, folders and glob patterns -> images with unique names.

Both demos (``tools/demo.py``, ``tools/demo_semseg.py``) take ``--input`` through
:func:`list_image_inputs` and read the images through :class:`ImageStream`, so the rules below
hold for both:

* **Listing.** A file named on the command line is used whatever its extension. A folder gives
  its image files (by extension, :data:`IMAGE_EXTENSIONS`, case-insensitive; not recursive;
  hidden files such as macOS ``._x.jpg`` are left out), sorted by name. A glob pattern
  (``"images/*.jpg"``, quoted so the shell leaves it alone) gives the image files it matches.
  A file reached twice (a folder and a file inside it) is used once. A path that does not exist,
  a pattern that matches nothing and a folder without images are errors naming them: a demo
  that silently processes nothing looks like a model that detects nothing.
* **Output names.** Every input gets an output stem: its file name without the extension.
  When several inputs have the same stem (``a/x.png`` and ``b/x.png``, or ``x.jpg`` and
  ``x.png``; compared case-insensitively, as on macOS / Windows file systems), the first in
  input order keeps it and the next ones get ``x-2``, ``x-3``, ... (skipping stems another input
  already has), so no output overwrites another. Each renamed input is logged.
  :func:`check_outputs` refuses an ``--output`` folder where an output would replace an input.
* **Reading.** Images are read as detectron2 reads training images (``read_image``: EXIF
  orientation applied, BGR). A file that cannot be decoded (not an image, truncated,
  unreadable) is skipped with one warning naming it and the reason; the others are processed
  and :meth:`ImageStream.finish` reports "N of M images skipped" and returns exit code 1.
"""

import glob
import logging
import os
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from detectron2.data.detection_utils import read_image
from PIL import Image, UnidentifiedImageError

from ..data.image_checks import IMAGE_EXTENSIONS, DataCheckError, check_image_file
from ..errors import MissingFileError, StartupError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "ImageStream",
    "UnreadableImageError",
    "check_outputs",
    "list_image_inputs",
    "read_image_bgr",
    "unique_stems",
]

logger = logging.getLogger(__name__)

# Exit code of a demo that processed its inputs but had to skip some (2: refused to start).
EXIT_SKIPPED = 1


class ImageInput(NamedTuple):
    """One image to process and the unique stem of its output files."""

    path: str
    stem: str


class UnreadableImageError(OSError):
    """An input file cannot be decoded as an image; the message names the file and why.

    Attributes:
        path: the file.
        reason: what the decoder said.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: cannot read it as an image ({reason})")
        self.path = path
        self.reason = reason


def _is_image_file(path: str) -> bool:
    name = os.path.basename(path)
    return (
        os.path.isfile(path)
        and not name.startswith(".")
        and name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _expand(item: str) -> List[str]:
    """The image files of one ``--input`` item (file, folder or glob pattern)."""
    path = os.path.expanduser(item)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path))]
        images = [f for f in files if _is_image_file(f)]
        if not images:
            raise MissingFileError(
                f"--input folder {item!r} holds no images ({len(files)} other entries; image "
                f"extensions: {' '.join(IMAGE_EXTENSIONS)}; sub-folders are not searched). "
                "Point --input at the folder that holds the images, or name the files."
            )
        return images
    if glob.has_magic(path):
        matches = sorted(glob.glob(path))
        images = [m for m in matches if _is_image_file(m)]
        if not images:
            found = f"{len(matches)} non-image matches" if matches else "nothing"
            raise MissingFileError(
                f"--input pattern {item!r} matches no image file ({found}; image extensions: "
                f"{' '.join(IMAGE_EXTENSIONS)})."
            )
        return images
    raise MissingFileError(
        f"--input {item!r} does not exist (relative paths start at {os.getcwd()})."
    )


def list_image_inputs(inputs: Sequence[str]) -> List[ImageInput]:
    """Expand ``--input`` items and give every image a unique output stem (module docstring).

    Args:
        inputs: image files, folders and glob patterns, in command-line order.

    Returns:
        The images in input order (folders and pattern matches sorted by name), each with a
        stem that no other input shares, case-insensitively.

    Raises:
        MissingFileError: an item does not exist, a folder holds no image, a pattern matches no
            image, or ``inputs`` is empty.
    """
    if not inputs:
        raise MissingFileError("No --input given: name image files, folders or glob patterns.")
    paths, seen = [], set()
    for item in inputs:
        for path in _expand(item):
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return [ImageInput(path, stem) for path, stem in zip(paths, unique_stems(paths))]


def unique_stems(paths: Sequence[str]) -> List[str]:
    """The output stem of each path: its file name without the extension, ``x-2``, ``x-3``, ...
    for later paths whose stem an earlier one has (case-insensitively; module docstring).

    Args:
        paths: files in output order (a path may repeat, e.g. an image drawn twice).

    Returns:
        One stem per path, no two equal case-insensitively.
    """
    natural = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    # A suffixed stem must not take the natural stem of a later input either.
    natural_keys = {s.casefold() for s in natural}
    used = set()
    result = []
    for path, stem in zip(paths, natural):
        unique = stem
        if stem.casefold() in used:
            n = 2
            while f"{stem}-{n}".casefold() in natural_keys or f"{stem}-{n}".casefold() in used:
                n += 1
            unique = f"{stem}-{n}"
            logger.info(
                "%s has the output name %r of an earlier input: written as %r.", path, stem, unique
            )
        used.add(unique.casefold())
        result.append(unique)
    return result


def check_outputs(inputs: Sequence[ImageInput], output_dir: str, suffixes: Sequence[str]) -> None:
    """Refuse to write an output over an input (``--output`` is an input folder).

    Args:
        inputs: from :func:`list_image_inputs`.
        output_dir: the demo's ``--output``.
        suffixes: what the demo appends to a stem, e.g. ``[".png"]``.

    Raises:
        StartupError: naming the first input that would be overwritten.
    """
    sources = {os.path.realpath(i.path): i.path for i in inputs}
    for item in inputs:
        for suffix in suffixes:
            target = os.path.realpath(os.path.join(output_dir, item.stem + suffix))
            if target in sources:
                raise StartupError(
                    f"--output {output_dir!r}: the output of {item.path} would overwrite the input "
                    f"{sources[target]}. Choose an --output folder that holds no input image."
                )


def read_image_bgr(path: str) -> np.ndarray:
    """Read ``path`` as detectron2 reads training images: (H, W, 3) uint8 BGR, EXIF applied.

    Raises:
        UnreadableImageError: the file cannot be decoded, or holds 16-bit / float pixels
            (message: file and reason).
    """
    try:
        # 16-bit / float images would decode to a constant image: refused, as in training.
        check_image_file(path)
        return read_image(path, format="BGR")
    # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
    # data, SyntaxError / ValueError for some corrupt headers; decompression bombs are refused.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, UnidentifiedImageError):  # its message repeats the file object
            reason = "UnidentifiedImageError: not an image format PIL can decode"
        else:
            reason = f"{type(e).__name__}: {e}"
        raise UnreadableImageError(path, reason) from e
    except DataCheckError as e:
        raise UnreadableImageError(path, str(e)) from e


class ImageStream:
    """Iterate over ``(input, BGR image)`` pairs, skipping and recording unreadable files.

    Args:
        inputs: from :func:`list_image_inputs`.
        progress: wraps the iteration over the inputs, e.g. ``tqdm`` (a progress bar that also
            counts the skipped files).

    Attributes:
        skipped: ``(path, reason)`` of every input that could not be read so far.
    """

    def __init__(
        self,
        inputs: Sequence[ImageInput],
        progress: Optional[Callable[[Iterable[ImageInput]], Iterable[ImageInput]]] = None,
    ):
        self.inputs = list(inputs)
        self.progress = progress
        self.skipped: List[Tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[Tuple[ImageInput, np.ndarray]]:
        inputs = self.progress(self.inputs) if self.progress is not None else self.inputs
        for item in inputs:
            try:
                image = read_image_bgr(item.path)
            except UnreadableImageError as e:
                logger.warning("Skipping %s: not a readable image (%s).", item.path, e.reason)
                self.skipped.append((item.path, e.reason))
                continue
            yield item, image

    def finish(self) -> int:
        """Log the summary of skipped files; return the exit code (0, or 1 if any skipped)."""
        if not self.skipped:
            return 0
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.skipped[:10])
        more = f"; ... ({len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
        logger.error(
            "%d of %d images skipped: %s%s. Fix or remove these files.",
            len(self.skipped),
            len(self.inputs),
            shown,
            more,
        )
        return EXIT_SKIPPED
