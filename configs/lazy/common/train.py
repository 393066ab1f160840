"""Run settings of the paper's recipes for ``tools/lazyconfig_train_net.py``: detectron2's
``common/train.py`` plus the keys this project's trainer reads (the YAML key each one mirrors):

* ``seed`` (``SEED``): >= 0 makes the data order and the model's sampling a function of the
  iteration, so ``--resume`` continues exactly; -1 draws a seed;
* ``precise_bn`` (``TEST.PRECISE_BN``): recompute BN statistics before each evaluation;
* ``fast_inference`` (``TEST.FAST_INFERENCE``): fold batch norms for ``--eval-only`` (exact);
* ``check_finite_loss`` (``SOLVER.CHECK_FINITE_LOSS``), ``skip_corrupt_images``
  (``DATALOADER.SKIP_CORRUPT_IMAGES``), ``amp.precision`` (``SOLVER.AMP.PRECISION``).

``eval_period`` 0 evaluates once, after training (the YAMLs' ``TEST.EVAL_PERIOD``).
"""

from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.update(
    max_iter=90000,
    eval_period=0,
    seed=-1,
    precise_bn=dict(enabled=True, num_iter=200),
    fast_inference=True,
    check_finite_loss=True,
    skip_corrupt_images=False,
)
train.amp.precision = "float16"
