"""The evaluator factory of every tool: COCO AP (detectron2's ``COCOEvaluator``), mIoU /
pixAcc (``SemSegEvaluator``) or, for COCO panoptic sets, PQ with box / mask AP and the stuff
head's mIoU, chosen by the dataset's ``evaluator_type``."""

import logging
from typing import Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation

from .panoptic import PanopticQualityEvaluator
from .semseg import build_semseg_evaluator

__all__ = ["build_coco_evaluator", "build_evaluator", "coco_eval_backend"]

logger = logging.getLogger(__name__)


def coco_eval_backend() -> str:
    """``"detectron2 COCOeval_opt"`` when detectron2's compiled evaluator loads, else
    ``"pycocotools"`` (the official, exact implementation; the case on Python 3.11 here)."""
    compiled = d2_coco_evaluation.COCOeval_opt is not d2_coco_evaluation.COCOeval
    return "detectron2 COCOeval_opt" if compiled else "pycocotools"


def build_coco_evaluator(
    dataset_name: str, output_dir: Optional[str] = None, tasks=None
) -> COCOEvaluator:
    """detectron2's COCO evaluator for ``dataset_name``, with its backend logged.

    Args:
        dataset_name: a registered dataset with COCO-style annotations.
        output_dir: where ``coco_instances_results.json`` is written (None: nowhere).
        tasks: ``("bbox", "segm")`` etc.; None infers them from the predictions.
    """
    backend = coco_eval_backend()
    logger.info("COCO evaluation of %s with %s", dataset_name, backend)
    return COCOEvaluator(
        dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=backend != "pycocotools"
    )


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
        return build_coco_evaluator(dataset_name, output_folder, tasks=_coco_tasks(cfg))
    if kind == "sem_seg":
        return build_semseg_evaluator(cfg, dataset_name, output_folder)
    if kind == "coco_panoptic_seg":
        # As detectron2's train_net: the stuff head's mIoU, box / mask AP, and PQ.
        return DatasetEvaluators(
            [
                build_semseg_evaluator(cfg, dataset_name, output_folder),
                build_coco_evaluator(dataset_name, output_folder, tasks=_coco_tasks(cfg)),
                PanopticQualityEvaluator(dataset_name, output_folder),
            ]
        )
    raise NotImplementedError(
        f"No evaluator for dataset {dataset_name!r} with evaluator_type {kind!r} "
        "(supported: 'coco', 'sem_seg', 'coco_panoptic_seg')"
    )


def _coco_tasks(cfg: CfgNode):
    tasks = ["bbox"]
    if cfg.MODEL.MASK_ON:
        tasks.append("segm")
    if cfg.MODEL.KEYPOINT_ON:
        tasks.append("keypoints")
    return tasks
