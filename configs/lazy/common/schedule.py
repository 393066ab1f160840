"""Learning-rate multipliers: detectron2's 1x step schedule (warm-up 1000 iterations, x0.1 at
60k and 80k of 90k) for the R-CNN recipes, and the poly schedule (power 0.9, no warm-up;
detectron2 DeepLab's ``WarmupPolyLR``) of the DeepLabV3 recipe."""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

lr_multiplier_1x = get_config("common/coco_schedule.py").lr_multiplier_1x
poly = L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9)
