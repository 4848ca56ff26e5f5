"""The space-time block attends only where it should: within a frame, and causally through time."""

import torch

from worldline.nn.st_block import STBlock, STTransformer

B, T, S, D = 2, 5, 6, 32


def changed(out_a, out_b):
    """(T, S) bool: which tokens' outputs moved."""
    return (out_a - out_b).abs().amax(dim=(0, 3)) > 1e-6


def perturbed(x, t, s):
    y = x.clone()
    y[:, t, s] += torch.randn(B, D)
    return y


def test_spatial_attention_stays_within_the_frame():
    block = STBlock(D, heads=4).eval()
    x = torch.randn(B, T, S, D)
    mask = changed(block.spatial_mix(x), block.spatial_mix(perturbed(x, 2, 3)))
    expected = torch.zeros(T, S, dtype=torch.bool)
    expected[2] = True
    assert torch.equal(mask, expected)


def test_temporal_attention_is_causal_and_per_position():
    block = STBlock(D, heads=4).eval()
    x = torch.randn(B, T, S, D)
    mask = changed(block.temporal_mix(x), block.temporal_mix(perturbed(x, 2, 3)))
    expected = torch.zeros(T, S, dtype=torch.bool)
    expected[2:, 3] = True  # the same position, from that frame on
    assert torch.equal(mask, expected)


def test_stack_never_lets_a_frame_see_the_future():
    net = STTransformer(D, depth=2, heads=4, grid=(2, 3)).eval()
    x = torch.randn(B, T, S, D)
    mask = changed(net(x), net(perturbed(x, 3, 0)))
    assert not mask[:3].any() and mask[3:].all()


def test_non_causal_block_sees_the_whole_clip():
    block = STBlock(D, heads=4, causal=False).eval()
    x = torch.randn(B, T, S, D)
    mask = changed(block.temporal_mix(x), block.temporal_mix(perturbed(x, 2, 3)))
    assert mask[:, 3].all() and not mask[:, :3].any()
