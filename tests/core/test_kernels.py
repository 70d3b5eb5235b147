"""Merge maths checked against running the convolutions, over many random cases (float64)."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmzoo.core import kernels
from lmzoo.core.kernels import ConvMap

F64 = torch.float64


def _random_map(gen, channels_in, channels_out, kernel, stride, depthwise):
    shape = (channels_out, 1 if depthwise else channels_in, kernel, kernel)
    weight = torch.randn(shape, generator=gen, dtype=F64)
    return ConvMap(
        weight, torch.randn(channels_out, generator=gen, dtype=F64), stride, (kernel - 1) // 2, depthwise
    )


def _run_padded(maps, x):
    """Zero-pad the input by the composed padding, then run every map unpadded (the configured form)."""
    total = 0
    stride = 1
    for m in maps:
        total += m.padding * stride
        stride *= m.stride
    y = F.pad(x, (total,) * 4)
    for m in maps:
        y = F.conv2d(y, m.weight, m.bias, stride=m.stride, groups=m.out_channels if m.depthwise else 1)
    return y


def _run_map(m, x):
    return F.conv2d(
        x, m.weight, m.bias, stride=m.stride, padding=m.padding, groups=m.out_channels if m.depthwise else 1
    )


layer = st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 1, 2]), st.booleans())


@settings(max_examples=60, deadline=None)
@given(layers=st.lists(layer, min_size=1, max_size=4), seed=st.integers(0, 2**16), size=st.integers(9, 20))
def test_composition_equals_sequential_convs(layers, seed, size):
    gen = torch.Generator().manual_seed(seed)
    channels = 4
    maps = []
    for kernel, stride, depthwise in layers:
        out = channels if depthwise else int(torch.randint(2, 6, (1,), generator=gen))
        maps.append(_random_map(gen, channels, out, kernel, stride, depthwise))
        channels = out
    x = torch.randn(2, 4, size, size + 3, generator=gen, dtype=F64)
    merged = maps[0]
    for m in maps[1:]:
        merged = kernels.compose(merged, m)
    assert merged.depthwise == all(m.depthwise for m in maps)
    expected = _run_padded(maps, x)
    got = _run_map(merged, x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-9, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    k1=st.sampled_from([1, 3, 5]),
    k2=st.sampled_from([1, 3]),
    dw1=st.booleans(),
    dw2=st.booleans(),
    seed=st.integers(0, 999),
)
def test_add_equals_sum_of_outputs(k1, k2, dw1, dw2, seed):
    gen = torch.Generator().manual_seed(seed)
    a = _random_map(gen, 3, 3, k1, 1, dw1)
    b = _random_map(gen, 3, 3, k2, 1, dw2)
    x = torch.randn(1, 3, 11, 8, generator=gen, dtype=F64)
    assert torch.allclose(_run_map(kernels.add(a, b), x), _run_map(a, x) + _run_map(b, x), atol=1e-10)


def test_batchnorm_folding_matches_eval_batchnorm():
    gen = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(5).double().eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2, generator=gen)
        bn.bias.uniform_(-1, 1, generator=gen)
        bn.running_mean.uniform_(-1, 1, generator=gen)
        bn.running_var.uniform_(0.5, 2, generator=gen)
    conv = _random_map(gen, 3, 5, 3, 1, False)
    scale, shift = kernels.batchnorm_scale_shift(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    folded = kernels.scale_shift(conv, scale, shift)
    x = torch.randn(2, 3, 9, 9, generator=gen, dtype=F64)
    assert torch.allclose(_run_map(folded, x), bn(_run_map(conv, x)), atol=1e-12)


def test_densify_and_identity():
    gen = torch.Generator().manual_seed(1)
    dw = _random_map(gen, 4, 4, 3, 1, True)
    x = torch.randn(1, 4, 7, 7, generator=gen, dtype=F64)
    assert torch.allclose(_run_map(kernels.densify(dw), x), _run_map(dw, x))
    ident = kernels.identity_map(4, dtype=F64)
    assert kernels.is_identity(ident)
    assert torch.equal(_run_map(ident, x), x)
    assert not kernels.is_identity(kernels.add(ident, ident))


def test_strided_projection_shortcut_fuses_at_the_centre_tap():
    gen = torch.Generator().manual_seed(2)
    conv = _random_map(gen, 3, 6, 3, 2, False)
    projection = _random_map(gen, 3, 6, 1, 2, False)
    x = torch.randn(1, 3, 13, 10, generator=gen, dtype=F64)
    fused = kernels.add(conv, projection)
    assert fused.kernel == 3 and fused.padding == 1
    assert torch.allclose(_run_map(fused, x), _run_map(conv, x) + _run_map(projection, x), atol=1e-12)
