"""Training pieces for the PyTorch-Encoding DeepLabV3 recipe on top of detectron2.

A detectron2 ``DefaultTrainer`` subclass trains the segmentation configs by calling these from
its ``build_train_loader`` / ``build_optimizer`` / ``build_lr_scheduler``:

* :func:`build_semseg_train_loader`: detectron2's ``DatasetMapper`` with the reference
  augmentation (random long-side scale of ``INPUT.BASE_SIZE`` in ``INPUT.RANDOM_SCALE``, or
  mmsegmentation's :class:`RandomRatioResize` when ``INPUT.BASE_SIZE_SHORT`` > 0, a fixed
  ``INPUT.CROP.SIZE`` crop padded with black pixels / ignore labels, horizontal flip);
* :func:`build_semseg_optimizer`: SGD where the segmentation head runs at
  ``SOLVER.HEAD_LR_MULTIPLIER`` times the base learning rate (10x in the reference);
* :func:`build_semseg_lr_scheduler`: detectron2 DeepLab's ``WarmupPolyLR`` (poly, power 0.9);
* :func:`build_semseg_evaluator`: detectron2's ``SemSegEvaluator`` (mIoU, pACC = pixAcc), with a
  label loader that checks every label's values (naming the file) and works under NumPy 2
  (detectron2's default passes ``copy=False`` to ``np.array``, which NumPy 2 rejects for PIL
  images).
"""

import logging
from typing import Callable, List

import numpy as np
import torch
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.evaluation import SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from PIL import Image, ImageFilter

from ..data.validation import CheckedSemSegLoader

__all__ = [
    "build_semseg_train_augmentations",
    "build_semseg_train_loader",
    "build_semseg_train_mapper",
    "build_semseg_optimizer",
    "build_semseg_lr_scheduler",
    "build_semseg_evaluator",
    "head_lr_factor",
    "RandomGaussianBlur",
    "RandomRatioResize",
]

logger = logging.getLogger(__name__)


class GaussianBlurTransform(T.Transform):
    """Blur the image (PIL ``GaussianBlur``); labels and coordinates are unchanged."""

    def __init__(self, radius: float):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        blurred = Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=self.radius))
        return np.asarray(blurred)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()


class RandomGaussianBlur(T.Augmentation):
    """With probability ``prob``, blur with a radius drawn from U(0, ``max_radius``) (PSPNet /
    PyTorch-Encoding training augmentation)."""

    def __init__(self, prob: float = 0.5, max_radius: float = 1.0):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        return GaussianBlurTransform(float(self._rand_range(0.0, self.max_radius)))


class RandomRatioResize(T.Augmentation):
    """mmsegmentation's ``Resize(img_scale=(long, short), ratio_range, keep_ratio=True)``: scale
    the image by ``r * min(long / long side, short / short side)``, ``r ~ U(min_ratio,
    max_ratio)``, whatever its orientation."""

    def __init__(self, long: int, short: int, min_ratio: float, max_ratio: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        ratio = float(self._rand_range(self.min_ratio, self.max_ratio))
        scale = ratio * min(self.long / max(h, w), self.short / min(h, w))
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        return T.ResizeTransform(h, w, new_h, new_w, Image.BILINEAR)


def build_semseg_train_augmentations(cfg) -> List[T.Augmentation]:
    """Random scale, fixed-size crop (with padding), flip and blur, as the reference
    (mmsegmentation's random resize when ``INPUT.BASE_SIZE_SHORT`` > 0)."""
    if cfg.INPUT.CROP.TYPE != "absolute":
        raise ValueError(
            f"Segmentation training crops INPUT.CROP.SIZE pixels; set INPUT.CROP.TYPE "
            f"'absolute', got {cfg.INPUT.CROP.TYPE!r}"
        )
    base = cfg.INPUT.BASE_SIZE
    min_scale, max_scale = cfg.INPUT.RANDOM_SCALE
    if cfg.INPUT.BASE_SIZE_SHORT > 0:
        resize = RandomRatioResize(base, cfg.INPUT.BASE_SIZE_SHORT, min_scale, max_scale)
    else:
        resize = T.ResizeScale(min_scale, max_scale, base, base)
    augs: List[T.Augmentation] = [resize]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.FixedSizeCrop(
                tuple(cfg.INPUT.CROP.SIZE),
                pad=True,
                pad_value=0.0,
                seg_pad_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    if cfg.INPUT.BLUR_PROB > 0:
        augs.append(RandomGaussianBlur(cfg.INPUT.BLUR_PROB))
    return augs


def build_semseg_train_mapper(cfg) -> DatasetMapper:
    """detectron2's ``DatasetMapper`` with the reference augmentation (logged)."""
    augs = build_semseg_train_augmentations(cfg)
    logger.info("Segmentation training augmentations: %s", augs)
    return DatasetMapper(cfg, is_train=True, augmentations=augs)


def build_semseg_train_loader(cfg):
    """detectron2's train loader with :func:`build_semseg_train_mapper`."""
    return build_detection_train_loader(cfg, mapper=build_semseg_train_mapper(cfg))


def head_lr_factor(multiplier: float) -> Callable[[str], float]:
    """``lr_factor_func`` of detectron2's ``get_default_optimizer_params``: the segmentation
    head's parameters (``sem_seg_head.*``) at ``multiplier`` times the base learning rate (the
    YAML's ``SOLVER.HEAD_LR_MULTIPLIER``; a LazyConfig optimizer calls it directly)."""

    def lr_factor(name: str) -> float:
        return multiplier if name.startswith("sem_seg_head.") else 1.0

    return lr_factor


def build_semseg_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with the segmentation head (``sem_seg_head.*``) at ``SOLVER.HEAD_LR_MULTIPLIER``x lr."""
    lr_factor = head_lr_factor(cfg.SOLVER.HEAD_LR_MULTIPLIER)
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        lr_factor_func=lr_factor,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
    )


def build_semseg_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """``WarmupPolyLR`` when ``SOLVER.LR_SCHEDULER_NAME`` says so, detectron2's otherwise."""
    return build_lr_scheduler(cfg, optimizer)


def build_semseg_evaluator(cfg, dataset_name: str, output_dir=None) -> SemSegEvaluator:
    """``SemSegEvaluator`` for ``dataset_name`` (reports mIoU, fwIoU, mACC and pACC)."""
    return SemSegEvaluator(
        dataset_name,
        distributed=True,
        output_dir=output_dir,
        sem_seg_loading_fn=CheckedSemSegLoader.for_dataset(dataset_name),
    )
