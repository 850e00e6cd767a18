"""The Appendix's Inception: Figure 5 layout, counts, BN placement and the proxy stem."""

import pytest
import torch
from torch import nn

from bnrepro.models.inception import (
    INCEPTION_BLOCKS,
    ConvBlock,
    Inception,
    SeparableConv2d,
    count_multiply_adds,
    count_parameters,
)
from bnrepro.nn import BatchNorm

# Figure 5 as printed: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool,
# pool projection (0: pass through), stride), output depth.
FIGURE5 = {
    "3a": ((64, 64, 64, 64, 96, "avg", 32, 1), 256),
    "3b": ((64, 64, 96, 64, 96, "avg", 64, 1), 320),
    "3c": ((0, 128, 160, 64, 96, "max", 0, 2), 576),
    "4a": ((224, 64, 96, 96, 128, "avg", 128, 1), 576),
    "4b": ((192, 96, 128, 96, 128, "avg", 128, 1), 576),
    "4c": ((160, 128, 160, 128, 160, "avg", 128, 1), 576),
    "4d": ((96, 128, 192, 160, 192, "avg", 128, 1), 576),
    "4e": ((0, 128, 192, 192, 256, "max", 0, 2), 1024),
    "5a": ((352, 192, 320, 160, 224, "avg", 128, 1), 1024),
    "5b": ((352, 192, 320, 192, 224, "max", 128, 1), 1024),
}
# Output side of each module at 224x224; the stride-2 modules 3c and 4e halve it. (Figure 5
# lists 3c at 28x28, its input size.)
SIDE_224 = dict.fromkeys(["3a", "3b"], 28) | dict.fromkeys(["3c", "4a", "4b", "4c", "4d"], 14)
SIDE_224 |= dict.fromkeys(["4e", "5a", "5b"], 7)
# With the small stem a 32x32 input reaches the modules undownsampled: 32 -> 16 -> 8.
SIDE_32 = {name: {28: 32, 14: 16, 7: 8}[side] for name, side in SIDE_224.items()}
PARAMETERS = 11_188_288  # norm="batch", 1000 classes (the module docstring's count)
MULTIPLY_ADDS = 1_934_857_216  # per 224x224 image


def small_model(**kwargs) -> Inception:
    """The Fashion-MNIST proxy: 32x32 gray images, 10 classes, a quarter of the width."""
    options = dict(num_classes=10, stem="small", in_channels=1, width=0.25) | kwargs
    return Inception(**options)


def record_block_outputs(model: Inception) -> dict[str, tuple[int, ...]]:
    """Fills (on each forward) a map from module name to its output shape without the batch."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, block in model.blocks.named_children():
        block.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    return shapes


def test_blocks_are_figure5_with_the_576_channel_reading_of_4c_and_4d() -> None:
    assert list(INCEPTION_BLOCKS) == list(FIGURE5)
    channels = 192
    for name, spec in INCEPTION_BLOCKS.items():
        row, depth = FIGURE5[name]
        fields = (
            spec.n1x1,
            spec.n3x3_reduce,
            spec.n3x3,
            spec.n3x3dbl_reduce,
            spec.n3x3dbl,
            spec.pool,
            spec.pool_proj,
            spec.stride,
        )
        if name in ("4c", "4d"):
            # The table's branches sum to 608 here; the pool projection 96 gives its 576.
            assert fields == (*row[:6], 96, 1)
        else:
            assert fields == row
        channels = spec.out_channels(channels)
        assert channels == depth, name


@pytest.mark.parametrize(
    ("norm", "activation"),
    [("none", "relu"), ("none", "sigmoid"), ("batch", "relu"), ("batch", "sigmoid")],
)
def test_224_forward_gives_logits_and_figure5_module_sizes(norm: str, activation: str) -> None:
    torch.manual_seed(0)
    model = Inception(norm=norm, activation=activation)
    shapes = record_block_outputs(model)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    expected = {
        f"inception{name}": (depth, SIDE_224[name], SIDE_224[name])
        for name, (_, depth) in FIGURE5.items()
    }
    assert shapes == expected


def test_small_stem_keeps_three_spatial_stages_for_32px_inputs() -> None:
    model = small_model(norm="batch")
    shapes = record_block_outputs(model)
    logits = model(torch.rand(3, 1, 32, 32))
    assert logits.shape == (3, 10)
    sides = {name: shape[1] for name, shape in shapes.items()}
    assert sides == {f"inception{name}": side for name, side in SIDE_32.items()}
    # No downsampling in the stem: every layer is a stride-1 conv block.
    assert all(isinstance(layer, ConvBlock) for layer in model.stem)
    assert all(layer[0].stride == (1, 1) for layer in model.stem)
    # width=0.25 scales every channel count: 64 -> 16, 192 -> 48, 1024 -> 256 features.
    assert [layer[0].out_channels for layer in model.stem] == [16, 48]
    assert model.blocks.inception3a.branch1x1[0].out_channels == 16
    assert model.fc.in_features == 256


def test_parameter_and_multiply_add_counts_at_224() -> None:
    model = Inception(norm="batch")
    parameters = count_parameters(model)
    multiply_adds = count_multiply_adds(model)
    print(f"Inception (norm=batch): {parameters:,} parameters, {multiply_adds:,} multiply-adds")
    assert parameters == PARAMETERS
    assert 11.0e6 <= parameters <= 11.5e6
    assert multiply_adds == MULTIPLY_ADDS
    assert 1.8e9 <= multiply_adds <= 2.2e9
    # Without BN: no gamma, and each conv has a bias where BN had beta.
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(Inception(norm="none")) == parameters - bn_channels


def test_multiply_adds_match_a_hand_count_and_leave_the_model_untouched() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 4*5*5 outputs x 2*3*3 = 1800
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # 8*5*5 outputs x 1*3*3 = 1800
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 7),  # 7 outputs x 200 = 1400
    )
    assert count_multiply_adds(model, (1, 2, 5, 5)) == 5000
    assert count_multiply_adds(model, (3, 2, 5, 5)) == 15000
    assert model.training
    assert model[1].num_batches_tracked.item() == 0
    assert not any(module._forward_hooks for module in model.modules())


def conv_blocks(model: nn.Module) -> list[ConvBlock]:
    return [m for m in model.modules() if isinstance(m, ConvBlock)]


def test_batch_norm_sits_between_every_conv_and_its_nonlinearity() -> None:
    model = Inception(norm="batch")
    blocks = conv_blocks(model)
    assert len(blocks) == 1 + 2 + sum(  # conv1, conv2 reduce and 3x3, then the modules
        (spec.n1x1 > 0) + 2 + 3 + (spec.pool_proj > 0) for spec in INCEPTION_BLOCKS.values()
    )
    for block in blocks:
        # A separable conv is depthwise -> pointwise with nothing between (both linear).
        conv, bn, act = block
        assert isinstance(conv, (nn.Conv2d, SeparableConv2d))
        assert type(bn) is nn.BatchNorm2d
        assert bn.num_features == conv.out_channels
        assert isinstance(act, nn.ReLU)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == len(blocks)


def test_every_nonlinearity_sees_normalized_inputs() -> None:
    torch.manual_seed(0)
    model = small_model(norm="batch", activation="sigmoid")
    inputs = []
    for module in model.modules():
        if isinstance(module, nn.Sigmoid):
            module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
    model(torch.randn(4, 1, 32, 32))
    assert len(inputs) == len(conv_blocks(model))
    for x in inputs:  # gamma = 1, beta = 0 at initialization: zero mean, unit variance
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
        assert torch.allclose(var, torch.ones_like(var), atol=1e-2)


def test_plain_network_has_conv_biases_and_no_norm() -> None:
    model = Inception(norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, BatchNorm)) for m in model.modules())
    for block in conv_blocks(model):
        conv, act = block
        assert isinstance(act, nn.ReLU)
        output_conv = conv.pointwise if isinstance(conv, SeparableConv2d) else conv
        assert output_conv.bias is not None
    # The depthwise conv is followed by the linear pointwise one, whose bias subsumes its own.
    assert model.stem.conv1[0].depthwise.bias is None


def test_stride_modules_halve_the_size_and_pass_the_pooled_input_through() -> None:
    model = Inception()
    for name, in_shape, out_shape in [
        ("inception3c", (320, 28, 28), (576, 14, 14)),
        ("inception4e", (576, 14, 14), (1024, 7, 7)),
    ]:
        module = getattr(model.blocks, name)
        assert module.branch1x1 is None
        assert module.branch3x3[-1][0].stride == (2, 2)
        assert module.branch3x3dbl[-1][0].stride == (2, 2)
        assert len(module.branch_pool) == 1  # no projection
        assert isinstance(module.branch_pool[0], nn.MaxPool2d)
        assert module.branch_pool[0].stride == 2
        with torch.no_grad():
            assert module(torch.rand(2, *in_shape)).shape == (2, *out_shape)


def test_pooling_is_average_in_3a_to_5a_and_max_in_5b() -> None:
    model = Inception()
    for name in ("3a", "3b", "4a", "4b", "4c", "4d", "5a"):
        pool, projection = getattr(model.blocks, f"inception{name}").branch_pool
        assert isinstance(pool, nn.AvgPool2d) and pool.stride == 1
        assert isinstance(projection, ConvBlock)
    pool, projection = model.blocks.inception5b.branch_pool
    assert isinstance(pool, nn.MaxPool2d) and pool.stride == 1
    assert projection[0].out_channels == 128


def test_first_layer_is_a_separable_7x7_with_depth_multiplier_8() -> None:
    conv = Inception().stem.conv1[0]
    assert isinstance(conv, SeparableConv2d)
    assert conv.depthwise.groups == conv.depthwise.in_channels == 3
    assert conv.depthwise.out_channels == 8 * 3
    assert conv.depthwise.kernel_size == (7, 7) and conv.depthwise.stride == (2, 2)
    assert conv.pointwise.kernel_size == (1, 1) and conv.pointwise.out_channels == 64
    assert [m.in_features for m in Inception().modules() if isinstance(m, nn.Linear)] == [1024]


def test_lrn_adds_googlenets_two_local_response_norms() -> None:
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in Inception(width=0.25).modules())
    model = Inception(width=0.25, lrn=True)
    lrns = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2
    assert all((m.size, m.alpha, m.beta, m.k) == (5, 1e-4, 0.75, 1.0) for m in lrns)
    names = [name for name, _ in model.stem.named_children()]
    assert names == ["conv1", "pool1", "lrn1", "conv2_reduce", "conv2", "lrn2", "pool2"]
    small = small_model(lrn=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in small.modules()) == 2
    assert small(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_dropout_sets_the_classifier_dropout_probability() -> None:
    assert small_model().dropout.p == 0.0
    model = small_model(dropout=0.4)
    assert model.dropout.p == 0.4
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.4]


def test_the_papers_batch_norm_plugs_in_and_matches_torch() -> None:
    torch.manual_seed(0)
    ours = small_model(norm="batch", norm_layer=BatchNorm)
    reference = small_model(norm="batch")
    assert not any(type(m) is nn.BatchNorm2d for m in ours.modules())
    assert sum(isinstance(m, BatchNorm) for m in ours.modules()) == len(conv_blocks(ours))
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(4, 1, 32, 32)
    logits = ours(x)
    assert logits.shape == (4, 10)
    assert torch.allclose(logits, reference(x), atol=1e-4)
    logits.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(norm="layer"),
        dict(activation="tanh"),
        dict(stem="cifar"),
        dict(width=0.0),
        dict(norm="none", norm_layer=BatchNorm),
    ],
)
def test_rejects_unknown_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Inception(**kwargs)
