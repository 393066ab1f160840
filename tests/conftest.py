"""Shared pytest fixtures and settings."""

import os
import warnings

import pytest
import torch

# torch.jit.script is deprecated in recent torch; detectron2 still calls it at import time.
warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import resnest_dense  # noqa: E402,F401  (registers backbones before any test builds a model)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    """A small generated toy COCO set registered under the test names (detection_helpers)."""
    from detection_helpers import register_test_toy_set

    register_test_toy_set(str(tmp_path_factory.mktemp("data") / "toy"))


@pytest.fixture(scope="module")
def train_net():
    """tools/train_net.py loaded as a module."""
    from detection_helpers import load_tool

    return load_tool("train_net")


@pytest.fixture(scope="module")
def export_tool():
    """tools/deploy/export_model.py loaded as a module."""
    from detection_helpers import load_tool

    return load_tool("deploy/export_model")


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory):
    """A 96x128 image file to trace exports on (neither test size: dynamic shapes)."""
    from demo_helpers import write_image

    return write_image(tmp_path_factory.mktemp("sample") / "sample.png", 96, 128, seed=3)
