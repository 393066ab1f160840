"""COCO loaders of the ResNeSt paper's recipe: detectron2's ``common/data/coco.py`` (range-scale
training, short side drawn from 640..800, max 1333; test at 800) on RGB input.

There is no ``dataloader.evaluator``: ``tools/lazyconfig_train_net.py`` chooses the evaluator by
the test set's ``evaluator_type`` (COCO AP with box / mask tasks as the model predicts them), as
``tools/train_net.py`` does.
"""

from detectron2.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
dataloader.pop("evaluator")
dataloader.train.mapper.image_format = "RGB"  # the test mapper interpolates this value
