"""The evaluator factory of every tool: COCO AP (pycocotools, or faster-coco-eval when it is
installed) or mIoU / pixAcc, chosen by the dataset's ``evaluator_type``."""

import importlib.util
import itertools
import logging
from typing import Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

from .semseg import build_semseg_evaluator

__all__ = ["build_coco_evaluator", "build_evaluator", "coco_eval_backend", "FasterCOCOEvaluator"]

logger = logging.getLogger(__name__)


def coco_eval_backend() -> str:
    """``"faster-coco-eval"`` when that package is importable, else ``"pycocotools"``."""
    return "faster-coco-eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


class FasterCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` computing AP with faster-coco-eval's ``COCOeval_faster``.

    detectron2's ``_eval_predictions`` (0.7.2) maps category ids back to the dataset's and
    writes ``coco_instances_results.json``, then evaluates with a COCOeval class taken from a
    module global. Here detectron2 does the first part (with evaluation switched off for the
    call) and this class the second, passing ``COCOeval_faster`` to detectron2's
    ``_evaluate_predictions_on_coco``; tests/test_detection_data.py checks the APs against
    pycocotools.
    """

    def _eval_predictions(self, predictions, img_ids=None):
        from faster_coco_eval import COCOeval_faster

        do_evaluation, self._do_evaluation = self._do_evaluation, False
        try:
            super()._eval_predictions(predictions, img_ids=img_ids)  # ids mapped in place
        finally:
            self._do_evaluation = do_evaluation
        if not do_evaluation:
            return
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        for task in sorted(self._tasks or self._tasks_from_predictions(coco_results)):
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    cocoeval_fn=COCOeval_faster,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if coco_results
                else None  # as detectron2: COCOeval does not handle empty results
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )


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
        return FasterCOCOEvaluator(
            dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=False
        )
    # detectron2's own fast path needs its compiled extension; the official COCOeval is exact.
    use_fast = d2_coco_evaluation.COCOeval_opt is not d2_coco_evaluation.COCOeval
    return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=use_fast)


def build_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """The evaluator of ``dataset_name`` by its ``evaluator_type``: COCO box (and mask /
    keypoint, as the model predicts them) AP, or semantic-segmentation mIoU / pixAcc.

    Raises:
        NotImplementedError: another ``evaluator_type`` (named in the message).
    """
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind == "coco":
        tasks = ["bbox"]
        if cfg.MODEL.MASK_ON:
            tasks.append("segm")
        if cfg.MODEL.KEYPOINT_ON:
            tasks.append("keypoints")
        return build_coco_evaluator(dataset_name, output_folder, tasks=tasks)
    if kind == "sem_seg":
        return build_semseg_evaluator(cfg, dataset_name, output_folder)
    raise NotImplementedError(
        f"No evaluator for dataset {dataset_name!r} with evaluator_type {kind!r} "
        "(supported: 'coco', 'sem_seg')"
    )
