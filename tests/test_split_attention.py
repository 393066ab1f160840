"""Split attention against a direct, loop-based transcription of the paper's equations."""

import pytest
import torch
import torch.nn.functional as F

from resnest_dense.layers import DropBlock2d, SplitAttentionConv2d, radix_softmax


def _reference(layer: SplitAttentionConv2d, x: torch.Tensor) -> torch.Tensor:
    """Per-split / per-group loops, as in the official ResNeSt code (eval mode)."""
    radix, card = layer.radix, layer.cardinality
    y = F.relu(layer.bn0(layer.conv(x)))
    channels = y.shape[1] // radix
    splits = [y[:, r * channels : (r + 1) * channels] for r in range(radix)]
    gap = sum(splits).mean(dim=(2, 3), keepdim=True)
    logits = layer.fc2(F.relu(layer.bn1(layer.fc1(gap))))[:, :, 0, 0]
    per_group = channels // card
    weights = torch.empty(x.shape[0], radix, channels)
    for k in range(card):
        # A grouped fc2 lays out group k's logits as (radix, per_group).
        block = logits[:, k * radix * per_group : (k + 1) * radix * per_group]
        block = block.reshape(-1, radix, per_group)
        block = block.softmax(dim=1) if radix > 1 else block.sigmoid()
        weights[:, :, k * per_group : (k + 1) * per_group] = block
    return sum(weights[:, r, :, None, None] * splits[r] for r in range(radix))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("radix,cardinality", [(1, 1), (1, 4), (2, 1), (2, 2), (4, 2)])
def test_matches_loop_reference(radix, cardinality, channels_last):
    layer = SplitAttentionConv2d(16, 32, radix=radix, cardinality=cardinality, norm="BN")
    for bn in (layer.bn0, layer.bn1):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    layer.eval()
    x = torch.randn(3, 16, 9, 7)
    want = _reference(layer, x)
    if channels_last:
        layer.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if channels_last and radix > 1:
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("radix,cardinality", [(2, 1), (4, 2)])
def test_radix_softmax_sums_to_one(radix, cardinality):
    w = radix_softmax(torch.randn(5, radix * 24, 1, 1), radix, cardinality)
    assert w.shape == (5, radix, 24, 1, 1)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5, 24, 1, 1))


def test_stride_and_dilation_shapes():
    layer = SplitAttentionConv2d(8, 8, stride=2, dilation=2, radix=2, norm="FrozenBN")
    x = torch.randn(2, 8, 16, 16)
    got = layer(x)
    assert got.shape == (2, 8, 8, 8)
    assert layer.conv.stride == (2, 2) and layer.conv.dilation == layer.conv.padding == (2, 2)
    torch.testing.assert_close(got, _reference(layer, x), rtol=1e-5, atol=1e-6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="radix must be >= 1, got 0"):
        SplitAttentionConv2d(8, 8, radix=0)
    with pytest.raises(ValueError, match="out_channels=10 is not divisible by cardinality=4"):
        SplitAttentionConv2d(8, 10, cardinality=4)


def test_dropblock():
    block = DropBlock2d(0.2, 3)
    x = torch.ones(8, 16, 24, 24)
    block.eval()
    assert torch.equal(block(x), x)
    block.train()
    out = block(x)
    zeros = (out == 0).float()
    dropped = zeros.mean().item()
    assert 0.1 < dropped < 0.3
    # Dropped units come in 3x3 squares (clipped at the border), not as single units: the zero
    # mask is unchanged by a 3x3 morphological opening, which removes any isolated zero.
    eroded = -F.max_pool2d(-zeros, 3, stride=1, padding=1)
    torch.testing.assert_close(F.max_pool2d(eroded, 3, stride=1, padding=1), zeros)
    # Kept activations are rescaled so the expected sum is preserved.
    assert abs(out.mean().item() - 1.0) < 1e-4
    with pytest.raises(ValueError, match="drop_prob must be in"):
        DropBlock2d(1.0)
