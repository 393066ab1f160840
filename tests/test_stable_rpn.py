"""StableTopKRPN (resnest_dense/modeling/proposal_generator.py): detectron2's RPN with equal
objectness scores kept in anchor order. Without ties it returns exactly what detectron2's
``find_top_rpn_proposals`` returns; with ties, eager PyTorch, a traced TorchScript graph and
onnxruntime keep the same proposals; every detector config of the project selects it."""

import glob
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.structures import Boxes

from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY
from resnest_dense import get_resnest_cfg
from resnest_dense.modeling.proposal_generator import (
    StableTopKRPN,
    select_rpn_proposals,
    stable_top_k,
)

IMAGE_SIZES = [(150, 200), (97, 130)]
# (levels as (H*W*A), pre_nms_topk, post_nms_topk, min_box_size)
CASES = [([600, 150, 40], 100, 50, 0.0), ([90, 30], 200, 1000, 4.0), ([300], 300, 10, 0.0)]


def _level_inputs(sizes, seed, num_images=2, tied=False):
    g = torch.Generator().manual_seed(seed)
    boxes, logits = [], []
    for n in sizes:
        xy = torch.rand(num_images, n, 2, generator=g) * 180 - 10
        wh = torch.rand(num_images, n, 2, generator=g) * 60
        boxes.append(torch.cat([xy, xy + wh], dim=2))
        if tied:  # few distinct values: most scores are tied with others
            logits.append(torch.randint(0, 4, (num_images, n), generator=g).float() - 2.0)
        else:
            logits.append(torch.randn(num_images, n, generator=g))
    return boxes, logits


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.image_size == b.image_size
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("sizes,pre,post,min_size", CASES)
def test_equals_detectron2_without_ties(sizes, pre, post, min_size, training):
    boxes, logits = _level_inputs(sizes, seed=len(sizes) + pre)
    args = (IMAGE_SIZES, 0.7, pre, post, min_size, training)
    got = select_rpn_proposals(boxes, logits, *args)
    _assert_same(got, find_top_rpn_proposals(boxes, logits, *args))
    assert all(len(r) > 0 for r in got)


def test_non_finite_dropped_in_inference_and_raised_in_training():
    boxes, logits = _level_inputs([200, 50], seed=3)
    boxes[0][0, 5, 2] = float("inf")
    logits[1][1, 7] = float("nan")
    args = (IMAGE_SIZES, 0.7, 100, 100, 0.0)
    got = select_rpn_proposals(boxes, logits, *args, False)
    _assert_same(got, find_top_rpn_proposals(boxes, logits, *args, False))
    for r in got:
        assert torch.isfinite(r.proposal_boxes.tensor).all()
        assert torch.isfinite(r.objectness_logits).all()
    with pytest.raises(FloatingPointError, match="diverged"):
        select_rpn_proposals(boxes, logits, *args, True)


def test_stable_top_k_keeps_equal_scores_in_index_order():
    scores = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0, 2.0, -1.0], [5.0, 5.0, 5.0, 5.0, 0, 0, 0]])
    values, index = stable_top_k(scores, 4)
    assert index.tolist() == [[1, 3, 5, 2], [0, 1, 2, 3]]
    assert torch.equal(values, scores.gather(1, index))


@pytest.mark.parametrize("k", [1, 7, 1000, 2999, 3000])
@pytest.mark.parametrize("distinct", [2, 5, 3000])
def test_stable_top_k_is_lexicographic(k, distinct):
    """Order = (score descending, index ascending), checked against a plain Python sort, with
    ties at the cut (which of the equal scores make it) and inside the kept ones."""
    g = torch.Generator().manual_seed(k + distinct)
    scores = torch.randint(0, distinct, (3, 3000), generator=g).float()
    values, index = stable_top_k(scores, k)
    for row, got in zip(scores.tolist(), index.tolist()):
        assert got == sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
    assert torch.equal(values, scores.gather(1, index))


def test_stable_top_k_takes_non_finite_scores_first_as_topk_does():
    """torch.topk ranks NaN above everything; so does the stable top-k (inference then drops
    those proposals, training stops), and +inf / -inf sort as numbers."""
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[0.5, nan, inf, 2.0, -inf, nan, 2.0, 1.0]])
    values, index = stable_top_k(scores, 6)
    assert index.tolist() == [[1, 2, 5, 3, 6, 7]]
    assert torch.equal(values.isnan(), torch.tensor([[True, False, True, False, False, False]]))
    assert set(index[0, :3].tolist()) == set(scores.topk(3).indices[0].tolist())


def test_ties_after_nms_stay_in_top_k_order_with_more_than_1000_boxes():
    """Over 1000 boxes, torchvision's batched_nms merges per-level NMS results with an unstable
    sort; the kept proposals must still be ordered by score, then by their place in the
    per-level top-k lists (which decides which tied ones make the POST_NMS_TOPK cut)."""
    boxes, logits = _level_inputs([3000, 1500, 600], seed=1, num_images=1, tied=True)
    height, width = IMAGE_SIZES[0]
    (result,) = select_rpn_proposals(boxes, logits, [(height, width)], 0.99, 1000, 2000, 0.0, False)
    candidates = torch.cat(
        [b[0][stable_top_k(l, min(1000, l.shape[1]))[1][0]] for b, l in zip(boxes, logits)]
    )
    candidates = Boxes(candidates)
    candidates.clip((height, width))
    kept = result.proposal_boxes.tensor
    assert len(kept) == 2000  # above the per-level threshold of 1000 boxes, and cut
    # The place of each kept proposal among the candidates (random float boxes: unique).
    place = (kept[:, None, :] == candidates.tensor[None]).all(dim=2).int().argmax(dim=1)
    scores = result.objectness_logits
    assert torch.equal(candidates.tensor[place], kept)
    assert bool(
        (
            (scores[:-1] > scores[1:]) | ((scores[:-1] == scores[1:]) & (place[:-1] < place[1:]))
        ).all()
    )


# The two tied anchors of toy_coco/val/000046.png that made onnxruntime and PyTorch disagree on
# the trained toy model (docs/deployment.md): IoU 0.80 after clipping, above the RPN's 0.7, equal
# logits, between others so that the top-k has to order them.
TIED_BOXES = torch.tensor(
    [
        [0.0, 0.0, 20.0, 20.0],
        [226.7423, 105.3622, 317.2414, 150.6307],
        [100.0, 0.0, 120.0, 20.0],
        [242.7423, 105.3622, 333.2414, 150.6307],
        [50.0, 50.0, 60.0, 60.0],
    ]
)
TIED_LOGITS = torch.tensor([-3.0, -1.0362053, -0.5, -1.0362053, -2.0])
# Top 4 by score: anchor 2, then the tie (1 before 3), then 4; NMS drops 3 (IoU 0.80 with 1).
TIED_KEPT = [2, 1, 4]


class _Select(torch.nn.Module):
    """The project's proposal selection on one level of one 160x320 image."""

    def forward(self, boxes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        (proposals,) = select_rpn_proposals([boxes], [logits], [(160, 320)], 0.7, 4, 4, 0.0, False)
        return proposals.proposal_boxes.tensor


def _expected(boxes):
    want = boxes[TIED_KEPT].clone()
    want[:, 0::2] = want[:, 0::2].clamp(0, 320)
    want[:, 1::2] = want[:, 1::2].clamp(0, 160)
    return want


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_ties_give_the_same_proposals_in_pytorch_torchscript_and_onnxruntime():
    import onnxruntime as ort

    from resnest_dense.export import ONNX_OPSET
    from resnest_dense.export.files import onnx_bytes_of

    boxes, logits = TIED_BOXES[None], TIED_LOGITS[None]
    want = _expected(TIED_BOXES)
    torch.testing.assert_close(_Select()(boxes, logits), want, atol=0, rtol=0)
    # Traced on other inputs (8 anchors, no ties) so the graph must generalise in size and order.
    trace_boxes, trace_logits = _level_inputs([8], seed=0, num_images=1)
    traced = torch.jit.trace(_Select(), (trace_boxes[0], trace_logits[0]))
    torch.testing.assert_close(traced(boxes, logits), want, atol=0, rtol=0)
    data = onnx_bytes_of(
        lambda f: torch.onnx.export(
            _Select(),
            (trace_boxes[0], trace_logits[0]),
            f,
            input_names=["boxes", "logits"],
            dynamic_axes={"boxes": {1: "anchors"}, "logits": {1: "anchors"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    )
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (kept,) = session.run(None, {"boxes": boxes.numpy(), "logits": logits.numpy()})
    np.testing.assert_allclose(kept, want.numpy(), atol=1e-4, rtol=0)


def test_scriptable_with_the_model():
    """detectron2's scripting of a detector (scripting_with_instances) compiles the RPN, and the
    scripted one gives the eager proposals on an image with flat regions (ties)."""
    from detectron2.export import scripting_with_instances

    path = os.path.join(CONFIGS, RESNEST_CONFIGS["faster"])
    torch.manual_seed(0)
    model = build_model(get_resnest_cfg(path, [str(o) for o in TINY])).eval()
    rpn = model.proposal_generator
    fields = {"proposal_boxes": Boxes, "objectness_logits": torch.Tensor}
    scripted = scripting_with_instances(rpn, fields)
    image = torch.full((3, 160, 224), 120.0)
    image[:, 40:120, 60:160] = 30.0
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        (want,), _ = rpn(images, features)
        (got,), _ = scripted(images, features)
    assert torch.equal(got.proposal_boxes.tensor, want.proposal_boxes.tensor)
    assert torch.equal(got.objectness_logits, want.objectness_logits)


def _detector_configs():
    """Every leaf YAML config of the project whose model has an RPN."""
    leaves = glob.glob(os.path.join(CONFIGS, "*", "*.yaml"))
    leaves = [p for p in leaves if not os.path.basename(p).startswith("Base-")]
    return sorted(
        os.path.relpath(p, CONFIGS)
        for p in leaves
        if get_resnest_cfg(p).MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "PanopticFPN")
    )


@pytest.mark.parametrize("config", _detector_configs())
def test_every_detector_config_selects_it(config):
    cfg = get_resnest_cfg(os.path.join(CONFIGS, config))
    assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "StableTopKRPN"


def test_same_weights_as_detectron2_rpn():
    path = os.path.join(CONFIGS, "quick_schedules/toy_mask_rcnn_S14_FPN.yaml")
    torch.manual_seed(0)
    ours = build_model(get_resnest_cfg(path, list(TINY)))
    stock = build_model(
        get_resnest_cfg(path, list(TINY) + ["MODEL.PROPOSAL_GENERATOR.NAME", "RPN"])
    )
    assert type(ours.proposal_generator) is StableTopKRPN
    assert type(stock.proposal_generator) is RPN
    stock.load_state_dict(ours.state_dict(), strict=True)


class _Proposals(torch.nn.Module):
    """A detector's backbone and RPN on one image: its proposals and their logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        images = self.model.preprocess_image([{"image": image}])
        proposals, _ = self.model.proposal_generator(images, self.model.backbone(images.tensor))
        return proposals[0].proposal_boxes.tensor, proposals[0].objectness_logits


def _image_with_flat_regions() -> torch.Tensor:
    image = torch.full((3, 400, 600), 120.0)
    image[:, 100:300, 150:450] = torch.tensor([200.0, 40.0, 40.0])[:, None, None]
    return image


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_whole_model_proposals_equal_in_onnxruntime_on_tied_scores():
    """A tiny Mask R-CNN's RPN on an image with flat regions, whose anchors there tie exactly:
    the exported graph (traced on another size) keeps PyTorch's proposals in PyTorch's order,
    in onnxruntime and in TorchScript. With detectron2's RPN the onnxruntime proposals differed
    from the third one on (torch.topk orders the ties differently from ONNX TopK).

    Only *exact* ties are defined: scores one float step apart may come out of onnxruntime's
    kernels in the other order (seen with the toy schedule's model on this image), which no
    tie-break can fix."""
    import onnxruntime as ort

    from resnest_dense.export import ONNX_OPSET
    from resnest_dense.export.files import onnx_bytes_of

    path = os.path.join(CONFIGS, RESNEST_CONFIGS["mask"])
    torch.manual_seed(0)
    model = build_model(get_resnest_cfg(path, [str(o) for o in TINY])).eval()
    assert type(model.proposal_generator) is StableTopKRPN
    module = _Proposals(model).eval()
    image = _image_with_flat_regions()
    with torch.no_grad():
        want_boxes, want_logits = module(image)
    assert len(want_boxes) == model.proposal_generator.post_nms_topk[False]
    # The test means something only if exact ties reach the NMS: equal logits among the kept.
    assert len(want_logits) - want_logits.unique().numel() >= 10

    sample = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        traced = torch.jit.trace(module, (sample,), check_trace=False)
        data = onnx_bytes_of(
            lambda f: torch.onnx.export(
                module,
                (sample,),
                f,
                input_names=["image"],
                dynamic_axes={"image": {1: "height", 2: "width"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        )
        ts_boxes, ts_logits = traced(image)
    assert torch.equal(ts_boxes, want_boxes) and torch.equal(ts_logits, want_logits)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    boxes, logits = session.run(None, {"image": image.numpy()})
    np.testing.assert_allclose(boxes, want_boxes.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-4, rtol=0)


def test_onnx_export_of_detectron2_rpn_warns():
    """A fork YAML names detectron2's RPN: exporting it to ONNX says where the graph and the
    PyTorch model can differ and what to set; the project's configs export without it."""
    from resnest_dense.export.exporter import tie_order_warning

    path = os.path.join(CONFIGS, RESNEST_CONFIGS["mask"])
    stock = get_resnest_cfg(path, ["MODEL.PROPOSAL_GENERATOR.NAME", "RPN"])
    assert tie_order_warning(get_resnest_cfg(path), "onnx") is None
    assert tie_order_warning(stock, "torchscript") is None
    warning = tie_order_warning(stock, "onnx")
    assert "MODEL.PROPOSAL_GENERATOR.NAME=RPN" in warning
    assert "MODEL.PROPOSAL_GENERATOR.NAME StableTopKRPN" in warning
