"""The evaluator factory of every tool: COCO AP (detectron2's ``COCOEvaluator``), mIoU /
pixAcc (``SemSegEvaluator``; Cityscapes: the official script when it can run) or, for COCO
panoptic sets, PQ with box / mask AP and the stuff head's mIoU, chosen by the dataset's
``evaluator_type``.

Cityscapes (detectron2's ``cityscapes_fine_sem_seg_*``, ``evaluator_type="cityscapes_sem_seg"``)
is evaluated by detectron2's ``CityscapesSemSegEvaluator`` (the official cityscapesScripts:
IoU, iIoU on the ``*_gtFine_labelIds.png`` files) when the ``cityscapesscripts`` package
is installed and runs with the NumPy at hand (``pip install cityscapesscripts``; it is on PyPI
but not a dependency of this plugin; its latest release, 2.3.0, calls ``numpy.in1d``, removed in
NumPy 2.4), and otherwise by ``SemSegEvaluator`` on the 19 train ids of
``*_gtFine_labelTrainIds.png``: the same class IoU (both accumulate one confusion matrix over
the set at full resolution, ignoring 255), without iIoU. The log says which one ran.
"""

import importlib.util
import logging
from typing import Optional

import numpy as np

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation

from .panoptic import PanopticQualityEvaluator
from .semseg import build_semseg_evaluator

__all__ = [
    "build_cityscapes_sem_seg_evaluator",
    "build_coco_evaluator",
    "build_evaluator",
    "cityscapes_scripts_available",
    "cityscapes_scripts_problem",
    "coco_eval_backend",
]

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
    if kind == "cityscapes_sem_seg":
        return build_cityscapes_sem_seg_evaluator(cfg, dataset_name, output_folder)
    raise NotImplementedError(
        f"No evaluator for dataset {dataset_name!r} with evaluator_type {kind!r} "
        "(supported: 'coco', 'sem_seg', 'coco_panoptic_seg', 'cityscapes_sem_seg')"
    )


def _coco_tasks(cfg: CfgNode):
    tasks = ["bbox"]
    if cfg.MODEL.MASK_ON:
        tasks.append("segm")
    if cfg.MODEL.KEYPOINT_ON:
        tasks.append("keypoints")
    return tasks


def cityscapes_scripts_problem() -> Optional[str]:
    """Why the official ``cityscapesscripts`` evaluation cannot run here, or None if it can."""
    if importlib.util.find_spec("cityscapesscripts") is None:
        return "cityscapesscripts is not installed"
    if not hasattr(np, "in1d"):
        # cityscapesscripts 2.3.0 (the latest release) calls np.in1d, which NumPy 2.4 removed:
        # its evaluation would fail after the whole inference pass.
        return (
            f"cityscapesscripts is installed, but its evaluation calls numpy.in1d, which NumPy "
            f"{np.__version__} no longer has"
        )
    return None


def cityscapes_scripts_available() -> bool:
    """True when the official ``cityscapesscripts`` evaluation can run with this NumPy."""
    return cityscapes_scripts_problem() is None


def build_cityscapes_sem_seg_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """detectron2's ``CityscapesSemSegEvaluator`` when ``cityscapesscripts`` can run, else
    ``SemSegEvaluator`` on the 19 train ids (same class IoU, reported as ``sem_seg/mIoU``)."""
    problem = cityscapes_scripts_problem()
    if problem is None:
        from detectron2.evaluation import CityscapesSemSegEvaluator

        logger.info(
            "Evaluating %s with the official cityscapesScripts (CityscapesSemSegEvaluator: "
            "sem_seg/IoU, iIoU)",
            dataset_name,
        )
        return CityscapesSemSegEvaluator(dataset_name)
    logger.warning(
        "%s: evaluating %s with SemSegEvaluator on the 19 train ids (the same class IoU as the "
        "official script, reported as sem_seg/mIoU; no iIoU). For the official script: pip "
        "install cityscapesscripts, with NumPy < 2.4.",
        problem,
        dataset_name,
    )
    return build_semseg_evaluator(cfg, dataset_name, output_folder)
