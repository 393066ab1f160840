"""detectron2's :class:`SemanticSegmentor` with the PyTorch-Encoding test procedure.

Inference follows PyTorch-Encoding's ``MultiEvalModule``: for every scale ``s`` the image is
resized so that its long side is ``ceil(BASE_SIZE * s)``; if that is larger than ``CROP_SIZE``
the image is covered by ``CROP_SIZE`` windows at a step of ``STRIDE_RATE * CROP_SIZE`` (each
window padded to ``CROP_SIZE``, overlapping logits averaged), otherwise it is padded to
``CROP_SIZE``. With ``FLIP`` the logits of the mirrored input are added. The logits of all
scales are resized to the image size and summed; the prediction is their argmax.

Single scale is ``SCALES: [1.0]``, ``FLIP: False``; with ``BASE_SIZE: 0`` and ``CROP_SIZE: 0``
the image given by the test mapper is run whole, exactly as detectron2's SemanticSegmentor does.
Training is unchanged, except that images are padded (with black) to a multiple of the output
stride.
"""

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList

__all__ = ["MultiScaleSemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class MultiScaleSemanticSegmentor(SemanticSegmentor):
    """Semantic segmentation with multi-scale, flip and sliding-window inference."""

    @configurable
    def __init__(
        self,
        *,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        base_size: int = 0,
        crop_size: int = 0,
        stride_rate: float = 2.0 / 3.0,
        align_corners: bool = True,
        **kwargs,
    ):
        """
        Args:
            scales: test scales (relative to ``base_size``, or to the input if it is 0).
            flip: also run on the horizontally flipped input and add the logits.
            base_size: long side at scale 1.0; 0 keeps the input size.
            crop_size: sliding-window size; 0 runs the whole (padded) image.
            stride_rate: window step as a fraction of ``crop_size``.
            align_corners: of the bilinear resizing of images and logits.
            kwargs: arguments of :class:`SemanticSegmentor` (backbone, sem_seg_head,
                pixel_mean, pixel_std).
        """
        super().__init__(**kwargs)
        if not scales:
            raise ValueError("TEST.SEM_SEG.SCALES must not be empty")
        self.scales = tuple(scales)
        self.flip = flip
        self.base_size = base_size
        self.crop_size = crop_size
        self.stride_rate = stride_rate
        self.align_corners = align_corners
        # Inputs are padded to a multiple of the largest feature stride so that the head's
        # upsampled logits cover the padded image exactly.
        self.size_divisibility = max(s.stride for s in self.backbone.output_shape().values())

    @classmethod
    def from_config(cls, cfg) -> Dict:
        ret = super().from_config(cfg)
        t = cfg.TEST.SEM_SEG
        ret.update(
            scales=t.SCALES,
            flip=t.FLIP,
            base_size=t.BASE_SIZE,
            crop_size=t.CROP_SIZE,
            stride_rate=t.STRIDE_RATE,
            align_corners=cfg.MODEL.SEM_SEG_HEAD.ALIGN_CORNERS,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        """
        Args:
            batched_inputs: outputs of a sem-seg :class:`DatasetMapper`: ``"image"`` (C, H, W)
                in ``INPUT.FORMAT``, ``"sem_seg"`` (H, W) labels in training, optional
                ``"height"``/``"width"`` for the output size.

        Returns:
            In training a dict of losses; in inference one ``{"sem_seg": (K, height, width)}``
            logits dict per image.
        """
        if not self.training:
            return [self.inference_one(x) for x in batched_inputs]
        # Pad the raw images with black (0) before normalising, as the training crops and the
        # inference windows are padded.
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility, pad_value=0.0)
        images = (images.tensor - self.pixel_mean) / self.pixel_std
        targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
        targets = ImageList.from_tensors(
            targets, self.size_divisibility, self.sem_seg_head.ignore_value
        ).tensor
        features = self.backbone(images)
        _, losses = self.sem_seg_head(features, targets)
        return losses

    @torch.no_grad()
    def inference_one(self, batched_input: Dict) -> Dict[str, torch.Tensor]:
        """Logits ``(K, height, width)`` for one image, summed over scales (and flips)."""
        image = batched_input["image"].to(self.device)
        image = ((image - self.pixel_mean) / self.pixel_std).unsqueeze(0)
        h, w = image.shape[-2:]
        scores = None
        for scale in self.scales:
            size = self._scaled_size(h, w, scale)
            scaled = image if size == (h, w) else self._resize(image, size)
            logits = self._resize(self._tiled_logits(scaled), (h, w))
            scores = logits if scores is None else scores + logits
        height = batched_input.get("height", h)
        width = batched_input.get("width", w)
        if (height, width) != (h, w):
            scores = F.interpolate(scores, (height, width), mode="bilinear", align_corners=False)
        return {"sem_seg": scores[0]}

    def _scaled_size(self, h: int, w: int, scale: float) -> Tuple[int, int]:
        if self.base_size <= 0:
            return (h, w) if scale == 1.0 else (int(h * scale + 0.5), int(w * scale + 0.5))
        long_size = int(math.ceil(self.base_size * scale))
        if h > w:
            return long_size, int(1.0 * w * long_size / h + 0.5)
        return int(1.0 * h * long_size / w + 0.5), long_size

    def _resize(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size, mode="bilinear", align_corners=self.align_corners)

    def _pad(self, x: torch.Tensor, min_size: int) -> torch.Tensor:
        """Pad right/bottom to at least ``min_size`` and to a multiple of the output stride."""
        h, w = x.shape[-2:]
        d = self.size_divisibility
        ph = int(math.ceil(max(h, min_size) / d) * d)
        pw = int(math.ceil(max(w, min_size) / d) * d)
        if (ph, pw) == (h, w):
            return x
        # Pad with the normalised value of a black pixel, as the reference does.
        black = (-self.pixel_mean / self.pixel_std).view(1, -1, 1, 1)
        out = black.expand(x.shape[0], -1, ph, pw).clone()
        out[..., :h, :w] = x
        return out

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Head logits (with those of the mirrored input added) at the size of ``x``."""
        h, w = x.shape[-2:]
        out = self.sem_seg_head(self.backbone(self._pad(x, 0)))[0][..., :h, :w]
        if self.flip:
            flipped = self.sem_seg_head(self.backbone(self._pad(x.flip(-1), 0)))[0]
            out = out + flipped[..., :h, :w].flip(-1)
        return out

    def _tiled_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the size of ``x``: whole image, padded to a window, or sliding windows."""
        h, w = x.shape[-2:]
        crop = self.crop_size
        if crop <= 0:
            return self._logits(x)
        if max(h, w) <= crop:
            return self._logits(self._pad(x, crop))[..., :h, :w]
        padded = self._pad(x, crop) if min(h, w) < crop else x
        ph, pw = padded.shape[-2:]
        stride = int(crop * self.stride_rate)
        h_grids = int(math.ceil(1.0 * (ph - crop) / stride)) + 1
        w_grids = int(math.ceil(1.0 * (pw - crop) / stride)) + 1
        scores = None
        count = torch.zeros((1, 1, ph, pw), device=x.device)
        for ih in range(h_grids):
            for iw in range(w_grids):
                h0, w0 = ih * stride, iw * stride
                h1, w1 = min(h0 + crop, ph), min(w0 + crop, pw)
                window = self._pad(padded[..., h0:h1, w0:w1], crop)
                out = self._logits(window)[..., : h1 - h0, : w1 - w0]
                if scores is None:
                    scores = out.new_zeros((1, out.shape[1], ph, pw))
                scores[..., h0:h1, w0:w1] += out
                count[..., h0:h1, w0:w1] += 1
        return (scores / count)[..., :h, :w]
