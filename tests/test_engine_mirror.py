"""The engine extends detectron2 without patching it, and mirrors detectron2 where it must.

* ``Trainer.__init__`` repeats detectron2 0.7.2's ``DefaultTrainer.__init__`` with our DDP
  wrapper, autocast trainer and checkpointer; ``AutocastTrainer.run_step`` repeats
  ``AMPTrainer.run_step`` with device-aware autocast. The sources they mirror are pinned: when
  detectron2 changes one, these tests name it so the mirror is re-checked.
* A Trainer and detectron2's DefaultTrainer built from the same config hold the same kinds of
  objects (the equivalence the mirror must keep).
* No module of resnest_dense replaces attributes of detectron2 modules.
"""

import ast
import hashlib
import inspect
import os

import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer

from detection_helpers import CONFIGS, REPO, RESNEST_CONFIGS, TINY
from resnest_dense.checkpoint import Checkpointer
from resnest_dense.engine import Trainer, load_config
from resnest_dense.engine.history import LossHistoryHook

# sha256 prefixes of the sources in detectron2 0.7.2 (sal-detectron2 wheel).
MIRRORED = {
    "DefaultTrainer.__init__": (DefaultTrainer.__init__, "d7a2d86462019047"),
    "AMPTrainer.run_step": (AMPTrainer.run_step, "91c3c4daeb6174ab"),
}


@pytest.mark.parametrize("name", sorted(MIRRORED))
def test_mirrored_detectron2_source_is_unchanged(name):
    fn, expected = MIRRORED[name]
    got = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    assert got == expected, (
        f"detectron2's {name} changed (sha256 {got}, mirrored {expected}): re-check the "
        "resnest_dense code that mirrors it (engine/trainer.py, engine/amp.py), then update the "
        "hash here."
    )


@pytest.mark.usefixtures("toy_set")
def test_trainer_holds_what_default_trainer_holds(tmp_path):
    cfg = load_config(
        os.path.join(CONFIGS, RESNEST_CONFIGS["faster"]), TINY + ["OUTPUT_DIR", str(tmp_path)]
    )
    ours, theirs = Trainer(cfg), DefaultTrainer(cfg)
    assert type(ours._trainer) is type(theirs._trainer) is SimpleTrainer
    assert isinstance(ours.checkpointer, Checkpointer)
    assert isinstance(theirs.checkpointer, DetectionCheckpointer)
    assert set(ours.checkpointer.checkpointables) == set(theirs.checkpointer.checkpointables)
    # detectron2's hooks, after the loss record (written first after each step).
    expected = [LossHistoryHook] + [type(h) for h in theirs._hooks]
    assert [type(h) for h in ours._hooks] == expected
    assert type(ours.scheduler) is type(theirs.scheduler)
    assert (ours.start_iter, ours.max_iter) == (theirs.start_iter, theirs.max_iter)
    assert [n for n, _ in ours.model.named_parameters()] == [
        n for n, _ in theirs.model.named_parameters()
    ]


def _assignments_to_imported_modules(path):
    """``module.attr = ...`` / ``setattr(module, ...)`` where ``module`` is an import of
    detectron2, fvcore, iopath or torch."""
    tree = ast.parse(open(path).read())
    foreign = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            foreign |= {
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] in {"detectron2", "fvcore", "iopath", "torch"}
            }
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in {"detectron2", "fvcore", "iopath"}:
                foreign |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                if t.value.id in foreign:
                    found.append(f"{path}:{node.lineno}: {t.value.id}.{t.attr} = ...")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            found.append(f"{path}:{node.lineno}: setattr(...)")
    return found


def test_no_detectron2_module_attribute_is_replaced():
    root = os.path.join(REPO, "resnest_dense")
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                found += _assignments_to_imported_modules(os.path.join(dirpath, f))
    assert not found, "\n".join(found)
