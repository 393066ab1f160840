"""DeepLabV3+ (SeparableDeepLabV3PlusHead) and the Encoding FCN head (EncodingFCNHead): layout,
losses, shapes, multi-scale + flip, a toy training run and evaluation, Encoding conversion."""

import os

import pytest
import timm
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.engine import SimpleTrainer
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from resnest_dense.checkpoint import CheckpointMismatchError
from resnest_dense.checkpoint.encoding import (
    convert_encoding_fcn_state_dict,
    convert_encoding_segmentation_state_dict,
)
from resnest_dense.data.toy_sem_seg import register_toy_sem_seg
from resnest_dense.engine import build_evaluator
from resnest_dense.engine.semseg import (
    RandomRatioResize,
    build_semseg_optimizer,
    build_semseg_train_loader,
)

from segmentation_helpers import TOY_YAML, segmentation_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_PLUS = os.path.join(REPO, "configs", "quick_schedules", "toy_deeplabv3plus_S14_OS8.yaml")
ADE = os.path.join(REPO, "configs", "ADE20K-SemanticSegmentation")
PREFIX = "toy_sem_seg_heads_pytest"
BN = ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]
FCN = ["MODEL.SEM_SEG_HEAD.NAME", "EncodingFCNHead", "MODEL.SEM_SEG_HEAD.CONVS_DIM", 0]


def _inputs(n=2, h=61, w=75, classes=4):
    g = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), generator=g).float(),
            "sem_seg": torch.randint(0, classes, (h, w), generator=g),
        }
        for _ in range(n)
    ]


def plus_cfg(opts=()):
    return segmentation_cfg(TOY_PLUS, BN + list(opts))


def test_deeplabv3plus_layout_follows_mmsegmentation():
    """S-101 config: separable ASPP (depthwise 3x3 + pointwise), separable 3x3 projection,
    48-channel res2 projection, two separable decoder blocks, 512 wide, aux head on res4."""
    cfg = segmentation_cfg(
        os.path.join(ADE, "deeplabv3plus_S_101_OS8_syncbn_160k.yaml"),
        ["MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.STEM_WIDTH", 32],
    )
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        head = build_model(cfg).sem_seg_head
    assert head.common_stride == 4 and head.align_corners is False
    dw, pw = head.aspp.b1[0], head.aspp.b1[3]
    assert (dw.in_channels, dw.out_channels, dw.groups, dw.dilation) == (2048, 2048, 2048, (12, 12))
    assert (pw.in_channels, pw.out_channels, pw.kernel_size) == (2048, 512, (1, 1))
    assert [head.aspp.__getattr__(f"b{i}")[0].dilation[0] for i in (1, 2, 3)] == [12, 24, 36]
    assert head.aspp.b0[0].kernel_size == (1, 1) and len(head.aspp.project) == 6  # no dropout
    assert head.aspp.project[0].groups == 5 * 512 and head.aspp.project[0].kernel_size == (3, 3)
    assert head.low_level[0].in_channels == 256 and head.low_level[0].out_channels == 48
    assert head.decoder[0].in_channels == 512 + 48 and head.decoder[0].groups == 512 + 48
    assert head.decoder[3].out_channels == 512 and head.decoder[9].out_channels == 512
    assert head.predictor[0].p == 0.1 and head.predictor[1].out_channels == 150
    assert head.auxlayer.conv5[0].in_channels == 1024 and head.aux_loss_weight == 0.4
    assert isinstance(head.decoder[1], torch.nn.SyncBatchNorm)


@pytest.mark.parametrize("separable", [True, False])
def test_deeplabv3plus_losses_and_inference_shapes(separable):
    model = build_model(plus_cfg(["MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV", separable]))
    assert (model.sem_seg_head.aspp.b1[0].groups > 1) == separable
    inputs = _inputs()
    losses = model(inputs)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.sem_seg_head.low_level[0].weight.grad.abs().sum() > 0  # the decoder is used
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    assert [o["sem_seg"].shape for o in out] == [(4, 61, 75)] * 2
    # Logits come at stride 4 (res2), upsampled to the padded input.
    features = model.backbone(torch.zeros(1, 3, 64, 80))
    with torch.no_grad():
        assert model.sem_seg_head.layers(features).shape == (1, 4, 16, 20)


def test_deeplabv3plus_all_ignored_batch_gives_zero_loss():
    model = build_model(plus_cfg())
    inputs = _inputs()
    for d in inputs:
        d["sem_seg"][:] = 255
    losses = model(inputs)
    assert all(float(v.detach()) == 0.0 for v in losses.values())


def test_deeplabv3plus_low_level_feature_errors():
    with pytest.raises(ValueError, match="LOW_LEVEL_FEATURE 'res3' is not a backbone output"):
        build_model(plus_cfg(["MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE", "res3"]))
    with pytest.raises(ValueError, match="not finer than res5"):
        build_model(plus_cfg(["MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE", "res5"]))


def test_deeplabv3plus_multiscale_flip_is_the_sum_of_single_passes():
    """Scales 0.5/1.0 with flip: the logits are the sum of the four single passes."""
    cfg = plus_cfg()
    model = build_model(cfg).eval()
    image = _inputs(n=1, h=64, w=80)[0]["image"]
    with torch.no_grad():
        got = model([{"image": image}])[0]["sem_seg"]
        model.scales, model.flip = (0.5, 1.0), True
        both = model([{"image": image}])[0]["sem_seg"]
        model.scales, model.flip = (1.0,), False
        expected = torch.zeros_like(both)
        for scale in (0.5, 1.0):
            for flip in (False, True):
                x = (
                    F.interpolate(image[None], scale_factor=scale, mode="bilinear")
                    if scale != 1
                    else image[None]
                )
                x = x.flip(-1) if flip else x
                logits = model([{"image": x[0]}])[0]["sem_seg"]
                logits = logits.flip(-1) if flip else logits
                expected += F.interpolate(logits[None], (64, 80), mode="bilinear")[0]
    assert got.shape == both.shape == (4, 64, 80)
    assert not torch.allclose(got, both)
    torch.testing.assert_close(both, expected, rtol=1e-4, atol=1e-4)


def test_mmseg_random_resize_matches_its_rule():
    """INPUT.BASE_SIZE_SHORT: scale = r * min(long / long side, short / short side)."""
    aug = RandomRatioResize(2048, 512, 0.5, 2.0)
    for h, w in [(400, 600), (600, 400), (300, 2000)]:
        for _ in range(5):
            t = aug.get_transform(torch.zeros(h, w, 3).numpy())
            scale = t.new_h / h
            ratio = scale / min(2048 / max(h, w), 512 / min(h, w))
            assert 0.5 - 0.01 <= ratio <= 2.0 + 0.01, (h, w, t.new_h, t.new_w)
            assert abs(t.new_w / w - scale) < 0.01


@pytest.fixture(scope="module")
def toy_names(tmp_path_factory):
    if f"{PREFIX}_train" not in DatasetCatalog.list():
        root = str(tmp_path_factory.mktemp("toy") / "toy_sem_seg")
        register_toy_sem_seg(root=root, prefix=PREFIX, num_train=8, num_val=3)
    return f"{PREFIX}_train", f"{PREFIX}_val"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["deeplabv3plus", "fcn"])
def test_toy_training_run_and_evaluation(toy_names, config):
    """A few SGD steps on the toy set: finite losses that fall on a fixed batch, then mIoU."""
    train, val = toy_names
    opts = ["DATASETS.TRAIN", (train,), "DATASETS.TEST", (val,), "SOLVER.IMS_PER_BATCH", 4,
            "DATALOADER.NUM_WORKERS", 0, "SOLVER.BASE_LR", 0.01]  # fmt: skip
    cfg = (
        plus_cfg(opts) if config == "deeplabv3plus" else segmentation_cfg(TOY_YAML, BN + FCN + opts)
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = next(iter(build_semseg_train_loader(cfg)))
    optimizer = build_semseg_optimizer(cfg, model)
    trainer = SimpleTrainer(model, iter(lambda: batch, None), optimizer)
    history = []
    with EventStorage(0) as storage:
        for trainer.iter in range(6):
            storage.iter = trainer.iter
            trainer.run_step()
            history.append(storage.history("total_loss").latest())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0]
    model.eval()
    evaluator = build_evaluator(cfg, val)
    results = inference_on_dataset(model, build_detection_test_loader(cfg, val), evaluator)
    assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0 and results["sem_seg"]["pACC"] > 0


# ----------------------------------------------------------------- Encoding FCN


class _EncodingFCNHead(nn.Module):
    """PyTorch-Encoding's FCNHead (encoding/models/sseg/fcn.py, with_global=False) written out
    here as the reference: conv5 = 3x3 conv (no bias), BN, ReLU, Dropout(0.1), 1x1 conv."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        inter = in_channels // 4
        self.conv5 = nn.Sequential(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1, False),
            nn.Conv2d(inter, out_channels, 1),
        )

    def forward(self, x):
        return self.conv5(x)


def _randomise_bn(module, g):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_encoding_fcn_checkpoint_converts_loads_and_matches_the_reference_forward():
    """An Encoding-layout FCN checkpoint (timm ResNeSt-14 backbone with the official names +
    reference heads) converts with no missing / unexpected keys into the model the FCN config
    builds, and our head's logits equal the reference head's, upsampled with align_corners."""
    cfg = segmentation_cfg(TOY_YAML, BN + FCN)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    backbone = timm.create_model(
        "resnest14d", pretrained=False, stem_width=16, channels=(16, 32, 64, 128)
    )
    head, aux = _EncodingFCNHead(512, 4), _EncodingFCNHead(256, 4)
    # Encoding's auxlayer width is in_channels // 4 = 64; the toy config's AUX_CONVS_DIM is 32.
    cfg_aux = cfg.MODEL.SEM_SEG_HEAD.AUX_CONVS_DIM
    aux.conv5[0] = nn.Conv2d(256, cfg_aux, 3, padding=1, bias=False)
    aux.conv5[1] = nn.BatchNorm2d(cfg_aux)
    aux.conv5[4] = nn.Conv2d(cfg_aux, 4, 1)
    _randomise_bn(head, g)
    _randomise_bn(aux, g)
    state = {"pretrained." + k: v for k, v in backbone.state_dict().items()}
    state.update({"head." + k: v for k, v in head.state_dict().items()})
    state.update({"auxlayer." + k: v for k, v in aux.state_dict().items()})
    converted, dropped = convert_encoding_fcn_state_dict(state)
    assert "pretrained.fc.weight" in dropped
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    head.eval()
    image = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        features = model.backbone(image)
        ours, _ = model.sem_seg_head(features)
        reference = F.interpolate(
            head(features["res5"]), (64, 80), mode="bilinear", align_corners=True
        )
        ours_aux = model.sem_seg_head.auxlayer(features["res4"])
        reference_aux = aux.eval()(features["res4"])
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_aux, reference_aux)


def test_encoding_fcn_and_deeplab_layouts_are_not_mixed_up():
    """An FCN checkpoint is refused as DeepLabV3 and vice versa, naming the offending keys."""
    backbone = {"conv1.0.weight": torch.zeros(1)}
    fcn = {"pretrained." + k: v for k, v in backbone.items()}
    fcn["head.conv5.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match="not PyTorch-Encoding DeepLabV3.*head.conv5"):
        convert_encoding_segmentation_state_dict(fcn, "deeplab")
    deeplab = dict(fcn)
    del deeplab["head.conv5.0.weight"]
    deeplab["head.aspp.b0.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match="not PyTorch-Encoding FCN.*head.aspp.b0"):
        convert_encoding_segmentation_state_dict(deeplab, "fcn")
    with pytest.raises(ValueError, match="model must be one of"):
        convert_encoding_segmentation_state_dict(fcn, "psp")


def test_convert_tool_converts_an_fcn_checkpoint_checked_against_its_config(tmp_path, capsys):
    """tools/convert_encoding_deeplab_to_d2.py --model fcn: checked against the FCN config's
    model; as DeepLabV3 the same file is refused, naming the FCN keys."""
    from detection_helpers import load_tool

    tool = load_tool("convert_encoding_deeplab_to_d2")
    config = tmp_path / "toy_fcn.yaml"
    config.write_text(
        f'_BASE_: "{TOY_YAML}"\nMODEL:\n  SEM_SEG_HEAD:\n    NAME: "EncodingFCNHead"\n'
        "    CONVS_DIM: 0\n"
    )
    backbone = timm.create_model(
        "resnest14d", pretrained=False, stem_width=16, channels=(16, 32, 64, 128)
    )
    state = {"pretrained." + k: v for k, v in backbone.state_dict().items()}
    state.update({"head." + k: v for k, v in _EncodingFCNHead(512, 4).state_dict().items()})
    aux = _EncodingFCNHead(256, 4)
    aux.conv5[0] = nn.Conv2d(256, 32, 3, padding=1, bias=False)
    aux.conv5[1] = nn.BatchNorm2d(32)
    aux.conv5[4] = nn.Conv2d(32, 4, 1)
    state.update({"auxlayer." + k: v for k, v in aux.state_dict().items()})
    src, dst = tmp_path / "fcn_toy_ade.pth", tmp_path / "out.pth"
    torch.save(state, src)
    argv = [str(src), str(dst), "--config", str(config)]
    assert tool.main(argv) == 1  # read as DeepLabV3
    assert "head.conv5" in capsys.readouterr().err and not dst.exists()
    assert tool.main(argv + ["--model", "fcn"]) == 0
    converted = torch.load(dst, weights_only=False)["model"]
    assert torch.equal(converted["sem_seg_head.fcn.conv5.4.bias"], state["head.conv5.4.bias"])
