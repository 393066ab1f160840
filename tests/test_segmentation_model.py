"""DeepLabV3 head (reference layout, losses) and the multi-scale / sliding-window segmentor."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import SemanticSegmentor, build_model

from segmentation_helpers import segmentation_cfg, tiny_cfg, tiny_model


def _inputs(n=2, h=64, w=80, classes=4, labels=True):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float()}
        if labels:
            d["sem_seg"] = torch.randint(0, classes, (h, w), generator=g)
        out.append(d)
    return out


def test_head_layout_matches_encoding_names():
    """Encoding's DeepLabV3 keys map to ours by prefix only (head. -> sem_seg_head.)."""
    cfg = segmentation_cfg(
        "configs/ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml",
        ["MODEL.RESNETS.DEPTH", 14],
    )
    head = build_model(cfg).sem_seg_head
    keys = {k for k in head.state_dict() if not k.endswith("num_batches_tracked")}
    encoding = {"aspp.b0.0.weight", "aspp.b0.1.running_var", "aspp.b3.0.weight",
                "aspp.b4.gap.1.weight", "aspp.b4.gap.2.bias", "aspp.project.0.weight",
                "aspp.project.1.weight", "block.0.weight", "block.1.weight", "block.4.weight",
                "block.4.bias", "auxlayer.conv5.0.weight", "auxlayer.conv5.1.weight",
                "auxlayer.conv5.4.weight", "auxlayer.conv5.4.bias"}  # fmt: skip
    assert encoding <= keys
    assert head.aspp.project[0].in_channels == 5 * 256 and head.aspp.project[0].out_channels == 256
    assert head.aspp.b0[0].in_channels == 2048 and head.auxlayer.conv5[0].in_channels == 1024
    assert head.block[4].out_channels == 150 and head.block[4].bias is not None
    assert head.aspp.project[3].p == 0.5 and head.block[3].p == 0.1
    assert isinstance(head.aspp.b1[1], torch.nn.SyncBatchNorm)


@pytest.mark.parametrize("output_stride,rates", [(8, [12, 24, 36]), (16, [6, 12, 18])])
def test_atrous_rates_follow_output_stride(output_stride, rates):
    head = tiny_model("resnest", output_stride).sem_seg_head
    assert [head.aspp.__getattr__(f"b{i}")[0].dilation[0] for i in (1, 2, 3)] == rates


@pytest.mark.parametrize("backbone", ["resnest", "resnet"])
def test_losses_and_inference_shapes(backbone):
    model = tiny_model(backbone)
    # Sizes that are not multiples of the output stride are padded (labels with 255).
    inputs = _inputs(h=61, w=75)
    torch.manual_seed(3)  # same dropout masks in both forward passes
    losses = model(inputs)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    assert all(torch.isfinite(v) for v in losses.values())
    # The same batch padded by hand to 64 x 80 (black image, ignored labels): the same losses.
    padded = [
        {
            "image": F.pad(d["image"], (0, 5, 0, 3)),
            "sem_seg": F.pad(d["sem_seg"], (0, 5, 0, 3), value=255),
        }
        for d in inputs
    ]
    torch.manual_seed(3)
    for key, value in model(padded).items():
        torch.testing.assert_close(value, losses[key], msg=key)
    model.eval()
    out = model(_inputs(labels=False, h=61, w=75))
    assert out[0]["sem_seg"].shape == (4, 61, 75)


def test_all_ignored_batch_gives_zero_loss():
    model = tiny_model()
    inputs = _inputs()
    for d in inputs:
        d["sem_seg"].fill_(255)
    losses = model(inputs)
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()


def test_aux_head_can_be_disabled():
    model = tiny_model(opts=["MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE", ""])
    assert model.sem_seg_head.auxlayer is None
    assert set(model(_inputs())) == {"loss_sem_seg"}


def test_single_scale_equals_detectron2_semantic_segmentor():
    """Scales [1.0], no flip, no base size / window: same logits as SemanticSegmentor.forward."""
    model = tiny_model().eval()
    inputs = _inputs(labels=False, h=64, w=96)
    for d in inputs:
        d.update(height=80, width=120)
    with torch.no_grad():
        ours = model(inputs)
        reference = SemanticSegmentor.forward(model, inputs)
    for a, b in zip(ours, reference):
        assert a["sem_seg"].shape == (4, 80, 120)
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"], rtol=1e-5, atol=1e-5)


def test_multiscale_flip_and_sliding_window():
    model = tiny_model().eval()
    [image] = _inputs(n=1, labels=False, h=72, w=100)
    with torch.no_grad():
        single = model([image])[0]["sem_seg"]
        mirrored = model([{"image": image["image"].flip(-1)}])[0]["sem_seg"].flip(-1)
        model.flip = True
        flipped = model([image])[0]["sem_seg"]
        model.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
        multi = model([image])[0]["sem_seg"]
        others = []
        for scale in (0.5, 0.75, 1.25, 1.5, 1.75):
            model.scales = (scale,)
            others.append(model([image])[0]["sem_seg"])
        # Windows of 48 px at a step of 32 cover the 100-px-long image: 2 x 3 windows.
        model.scales, model.flip, model.base_size, model.crop_size = (1.0,), False, 100, 48
        calls = []
        handle = model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
        tiled = model([image])[0]["sem_seg"]
        handle.remove()
        # The top-left 32 x 32 pixels are covered by the first window only.
        model.base_size, model.crop_size = 0, 0
        corner = model([{"image": image["image"][:, :48, :48]}])[0]["sem_seg"]
    torch.testing.assert_close(flipped, single + mirrored, rtol=1e-4, atol=1e-4)
    assert multi.shape == tiled.shape == (4, 72, 100)
    assert torch.isfinite(multi).all() and torch.isfinite(tiled).all()
    # Multi-scale logits are the sum of each scale's logits resized to the image.
    torch.testing.assert_close(multi, flipped + sum(others), rtol=1e-4, atol=1e-4)
    assert len(calls) == 6 and all(tuple(s[-2:]) == (48, 48) for s in calls)
    torch.testing.assert_close(tiled[:, :32, :32], corner[:, :32, :32], rtol=1e-4, atol=1e-4)


def test_window_as_large_as_the_image_equals_whole_image():
    model = tiny_model().eval()
    [image] = _inputs(n=1, labels=False, h=96, w=96)
    with torch.no_grad():
        whole = model([image])[0]["sem_seg"]
        model.crop_size = 96
        windowed = model([image])[0]["sem_seg"]
    torch.testing.assert_close(windowed, whole)
