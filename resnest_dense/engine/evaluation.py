"""COCO box / mask AP with pycocotools, or faster-coco-eval when it is installed."""

import contextlib
import importlib.util
import logging
from typing import Optional

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation

__all__ = ["build_coco_evaluator", "coco_eval_backend", "FasterCOCOEvaluator"]

logger = logging.getLogger(__name__)


def coco_eval_backend() -> str:
    """``"faster-coco-eval"`` when that package is importable, else ``"pycocotools"``."""
    return "faster-coco-eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


class FasterCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` computing AP with faster-coco-eval's ``COCOeval_faster``.

    detectron2 picks its COCOeval class from a module attribute when it evaluates, so that
    attribute is pointed at ``COCOeval_faster`` only for the duration of the evaluation.
    """

    def __init__(self, *args, **kwargs):
        kwargs["use_fast_impl"] = False  # set below: the C++ extension of detectron2 is unused
        super().__init__(*args, **kwargs)
        self._use_fast_impl = True

    def _eval_predictions(self, predictions, img_ids=None):
        from faster_coco_eval import COCOeval_faster

        with _patched(d2_coco_evaluation, "COCOeval_opt", COCOeval_faster):
            return super()._eval_predictions(predictions, img_ids=img_ids)


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def build_coco_evaluator(
    dataset_name: str, output_dir: Optional[str] = None, tasks=None
) -> COCOEvaluator:
    """A COCO evaluator for ``dataset_name`` with the fastest available backend (logged).

    Args:
        dataset_name: a registered dataset with COCO-style annotations.
        output_dir: where ``coco_instances_results.json`` is written (None: nowhere).
        tasks: ``("bbox", "segm")`` etc.; None infers them from the predictions.
    """
    backend = coco_eval_backend()
    logger.info("COCO evaluation of %s with %s", dataset_name, backend)
    if backend == "faster-coco-eval":
        return FasterCOCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir)
    # detectron2's own fast path needs its compiled extension; the official COCOeval is exact.
    use_fast = d2_coco_evaluation.COCOeval_opt is not d2_coco_evaluation.COCOeval
    return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=use_fast)
