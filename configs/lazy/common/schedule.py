"""Learning-rate multipliers: detectron2's 1x step schedule (warm-up 1000 iterations, x0.1 at
60k and 80k of 90k) for the R-CNN recipes, the 3x schedule of the detectron2-ResNeSt fork's
"tricks" models (x0.1 at 240k and 255k of 270k; detectron2's own ``lr_multiplier_3x`` steps at
210k / 250k), and the poly schedule (power 0.9, no warm-up; detectron2 DeepLab's
``WarmupPolyLR``) of the segmentation recipes."""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler, PolynomialDecayParamScheduler

lr_multiplier_1x = get_config("common/coco_schedule.py").lr_multiplier_1x
lr_multiplier_3x_tricks = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[240000, 255000], num_updates=270000
    ),
    warmup_length=1000 / 270000,
    warmup_method="linear",
    warmup_factor=0.001,
)
poly = L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9)
