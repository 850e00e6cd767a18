"""The Inception network of the paper's Appendix (Figure 5), the base of BN-Inception.

Layout at 224x224 (output sizes in brackets):

- conv1: separable 7x7/2 convolution, a depthwise 7x7 with depth multiplier 8 followed by a
  pointwise 1x1 to 64 channels [112x112x64]; max pool 3x3/2 [56x56x64];
- conv2: 1x1 to 64, then 3x3 to 192 [56x56x192]; max pool 3x3/2 [28x28x192];
- Inception modules 3a, 3b [28x28], 3c (stride 2) [14x14], 4a-4d [14x14], 4e (stride 2)
  [7x7], 5a, 5b [7x7x1024], with the channel counts of `INCEPTION_BLOCKS`;
- global average pool, dropout, and one linear classifier (the only fully connected layer).

Each module has up to four parallel branches, concatenated along channels: 1x1; 1x1 reduce
-> 3x3; 1x1 reduce -> 3x3 -> 3x3 (GoogLeNet's 5x5 replaced by two 3x3); 3x3 pooling ->
1x1 projection. Pooling is average in 3a, 3b, 4a-4d, 5a and max in 5b. The stride-2
modules 3c and 4e have no 1x1 branch, put the stride on the last 3x3 of both convolution
branches, and pass a 3x3/2 max pool of their input through unprojected; there are no
pooling layers between modules.

The Figure 5 table is inconsistent for 4c and 4d: their branches (pool projection 128) sum
to 608 channels while the table's output column says 576, and 4e's 1024 outputs
(192 + 256 + pass-through) are only consistent with a 576-channel input. We follow TF-slim's
`inception_v2`, which keeps the table's output depths and reduces the pool projection of
4c and 4d to 96 channels; every other count is the table's. (The Caffe BN-Inception port
keeps 128 instead, so its 4c/4d output 608 and its 4e outputs 1056 channels.)

With `norm="batch"` and 1000 classes the network has 11,188,288 parameters (BN gamma and
beta included; 11,178,336 with `norm="none"`, conv biases instead), in line with the ~11.2M
of TF-slim's `inception_v2`, and 1,934,857,216 multiply-adds per 224x224 image (convolutions
and the classifier). The paper states 13.6M parameters; neither reading of the table comes
near it (the 608-channel reading of 4c/4d gives 11,278,528), and the public
re-implementations count 11.2-11.3M as well.

`stem="small"` is for 28-32 px inputs (the proxy datasets): the 7x7/2 convolution and both
max pools are replaced by two stride-1 3x3 convolutions (to 64 and 192 channels), so a
32x32 input reaches the modules at 32x32 and the stride-2 modules 3c and 4e reduce it to
16x16 and 8x8 before the global pool, mirroring the 28 -> 14 -> 7 progression at 224x224.

`members=E` packs E independent networks of one architecture into one module, so that one
process trains many runs in one step (bnrepro.train_packed): every convolution becomes a
grouped convolution with E groups, every BN layer normalizes E times the channels (each
channel's statistics are its member's alone), LRN and the branch concatenation work member by
member, and the classifier is E linear maps. Channels are member-major: member k owns channels
[k * C, (k + 1) * C) of every layer, and parameter and buffer rows likewise, so member k's
weights are `tensor.view(E, *shape)[k]` of the single network's shapes (`load_member`,
`member_state`). A grouped convolution is what `torch.vmap` makes of a batched convolution
too; written out, the BN layers keep their running statistics, which vmap cannot update.
"""

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "sigmoid": nn.Sigmoid,
}
NORMS = ("none", "batch")
STEMS = ("imagenet", "small")

DEPTH_MULTIPLIER = 8
"""Depthwise channels per input channel in the separable first convolution (Appendix)."""


@dataclass(frozen=True)
class InceptionBlockSpec:
    """One Inception module: a row of the Figure 5 table.

    A zero `n1x1` means the module has no 1x1 branch; a zero `pool_proj` means the pooled
    input is passed through unprojected ("max pool + pass through"). `stride` applies to the
    last layer of every branch.
    """

    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n3x3dbl_reduce: int
    n3x3dbl: int
    pool: str
    pool_proj: int
    stride: int = 1

    def out_channels(self, in_channels: int) -> int:
        passed = self.pool_proj if self.pool_proj else in_channels
        return self.n1x1 + self.n3x3 + self.n3x3dbl + passed

    def scaled(self, width: float) -> "InceptionBlockSpec":
        """The same module with every channel count multiplied by `width` (zeros stay zero)."""
        fields = ("n1x1", "n3x3_reduce", "n3x3", "n3x3dbl_reduce", "n3x3dbl", "pool_proj")
        return dataclasses.replace(
            self, **{f: _scale(getattr(self, f), width) if getattr(self, f) else 0 for f in fields}
        )


INCEPTION_BLOCKS: dict[str, InceptionBlockSpec] = {
    "3a": InceptionBlockSpec(64, 64, 64, 64, 96, "avg", 32),
    "3b": InceptionBlockSpec(64, 64, 96, 64, 96, "avg", 64),
    "3c": InceptionBlockSpec(0, 128, 160, 64, 96, "max", 0, stride=2),
    "4a": InceptionBlockSpec(224, 64, 96, 96, 128, "avg", 128),
    "4b": InceptionBlockSpec(192, 96, 128, 96, 128, "avg", 128),
    "4c": InceptionBlockSpec(160, 128, 160, 128, 160, "avg", 96),
    "4d": InceptionBlockSpec(96, 128, 192, 160, 192, "avg", 96),
    "4e": InceptionBlockSpec(0, 128, 192, 192, 256, "max", 0, stride=2),
    "5a": InceptionBlockSpec(352, 192, 320, 160, 224, "avg", 128),
    "5b": InceptionBlockSpec(352, 192, 320, 192, 224, "max", 128),
}
"""Figure 5's modules in order; 4c and 4d use a 96-channel pool projection (module docstring)."""


def _scale(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class SeparableConv2d(nn.Module):
    """Depthwise k x k convolution (`depth_multiplier` maps per input channel), then 1x1.

    The depthwise part has no bias: a constant added before the linear pointwise map is
    equivalent to a change of the pointwise bias (or BN's beta), so it would be redundant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        depth_multiplier: int = DEPTH_MULTIPLIER,
        bias: bool = True,
        members: int = 1,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        mid_channels = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(
            members * in_channels,
            members * mid_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=members * in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(
            members * mid_channels, members * out_channels, 1, bias=bias, groups=members
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ConvBlock(nn.Sequential):
    """conv -> norm -> activation, or conv (with bias) -> activation without a norm layer.

    With normalization the convolution has no bias: BN subtracts the mean, and its beta
    takes the bias's role.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        separable: bool = False,
        *,
        norm_layer: NormFactory | None,
        activation: Callable[[], nn.Module],
        members: int = 1,
    ):
        bias = norm_layer is None
        if separable:
            conv = SeparableConv2d(
                in_channels, out_channels, kernel_size, stride, bias=bias, members=members
            )
        else:
            conv = nn.Conv2d(
                members * in_channels,
                members * out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=bias,
                groups=members,
            )
        layers = [conv] if norm_layer is None else [conv, norm_layer(members * out_channels)]
        super().__init__(*layers, activation())


class MemberLocalResponseNorm(nn.LocalResponseNorm):
    """GoogLeNet's LRN across each member's own channels: a member's window never reaches
    into its neighbour's channels."""

    def __init__(self, members: int):
        super().__init__(size=5, alpha=1e-4, beta=0.75, k=1.0)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        y = super().forward(x.reshape(n * self.members, c // self.members, h, w))
        return y.reshape(n, c, h, w)


class MemberLinear(nn.Linear):
    """`members` independent linear maps, member k's weight rows [k * out, (k + 1) * out).

    Input (N, members * in), member-major; output (N, out) for one member, (N, members, out)
    for several. One member is `nn.Linear` itself.
    """

    def __init__(self, in_features: int, out_features: int, members: int = 1):
        super().__init__(in_features, out_features)
        self.members = members
        if members > 1:
            self.weight = nn.Parameter(torch.empty(members * out_features, in_features))
            self.bias = nn.Parameter(torch.zeros(members * out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            return super().forward(x)
        e, n = self.members, x.shape[0]
        weight = self.weight.view(e, self.out_features, self.in_features).transpose(1, 2)
        bias = self.bias.view(e, 1, self.out_features)
        y = torch.baddbmm(bias, x.view(n, e, self.in_features).transpose(0, 1), weight)
        return y.transpose(0, 1)


class InceptionModule(nn.Module):
    """One Inception module (see `InceptionBlockSpec`); branch outputs are concatenated."""

    def __init__(
        self,
        in_channels: int,
        spec: InceptionBlockSpec,
        conv_block: Callable[..., ConvBlock],
        members: int = 1,
    ):
        super().__init__()
        self.members = members
        if spec.pool not in ("avg", "max"):
            raise ValueError(f"pool={spec.pool!r} is not known; use 'avg' or 'max'.")
        stride = spec.stride
        self.branch1x1 = conv_block(in_channels, spec.n1x1, 1) if spec.n1x1 else None
        self.branch3x3 = nn.Sequential(
            conv_block(in_channels, spec.n3x3_reduce, 1),
            conv_block(spec.n3x3_reduce, spec.n3x3, 3, stride),
        )
        self.branch3x3dbl = nn.Sequential(
            conv_block(in_channels, spec.n3x3dbl_reduce, 1),
            conv_block(spec.n3x3dbl_reduce, spec.n3x3dbl, 3),
            conv_block(spec.n3x3dbl, spec.n3x3dbl, 3, stride),
        )
        if spec.pool == "avg":
            # Border windows average over the real pixels only, as TF's 'SAME' pooling does.
            pool = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        else:
            pool = nn.MaxPool2d(3, stride, padding=1)
        projection = [conv_block(in_channels, spec.pool_proj, 1)] if spec.pool_proj else []
        self.branch_pool = nn.Sequential(pool, *projection)
        self.out_channels = spec.out_channels(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1x1, self.branch3x3, self.branch3x3dbl, self.branch_pool]
        outputs = [branch(x) for branch in branches if branch is not None]
        if self.members == 1:
            return torch.cat(outputs, dim=1)
        # Member k's output is its branches' channels side by side, then member k + 1's.
        n, e = x.shape[0], self.members
        grouped = [y.reshape(n, e, y.shape[1] // e, *y.shape[2:]) for y in outputs]
        y = torch.cat(grouped, dim=2)
        return y.reshape(n, -1, *y.shape[3:])


class Inception(nn.Module):
    """The Appendix's Inception, optionally with batch normalization (BN-Inception).

    Args:
        num_classes: outputs of the linear classifier.
        norm: "batch" puts `norm_layer` between every convolution and its nonlinearity (and
            drops the convolution biases); "none" is the plain network.
        activation: "relu" (the paper's) or "sigmoid" (the BN-x5-Sigmoid variant).
        dropout: drop probability before the classifier (Inception uses 0.4, BN-x5 none).
        lrn: GoogLeNet's local response normalization (size 5, alpha 1e-4, beta 0.75) after
            the first max pool and after conv2, where GoogLeNet has it; BN-Inception removes it.
        width: multiplies every channel count (rounded, at least 1), for cheap proxies.
        stem: "imagenet" for 224x224 inputs, "small" for 28-32 px inputs (module docstring).
        in_channels: input image channels.
        norm_layer: the normalization class for `norm="batch"`, called with the channel count;
            `nn.BatchNorm2d` by default, `bnrepro.nn.BatchNorm` for the paper's own transform.
        members: independent networks packed into this one (module docstring); the input is
            then (N, members * in_channels, H, W), member-major, and the logits
            (N, members, num_classes).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        norm: str = "none",
        activation: str = "relu",
        dropout: float = 0.0,
        lrn: bool = False,
        width: float = 1.0,
        stem: str = "imagenet",
        in_channels: int = 3,
        norm_layer: NormFactory | None = None,
        members: int = 1,
    ):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}.")
        self.members = members
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not known; use one of {list(NORMS)}.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not known; use one of {sorted(ACTIVATIONS)}."
            )
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r} is not known; use one of {list(STEMS)}.")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}.")
        if norm == "none" and norm_layer is not None:
            raise ValueError("norm_layer is only used with norm='batch'.")
        if norm == "batch" and norm_layer is None:
            norm_layer = nn.BatchNorm2d

        conv_block = partial(
            ConvBlock, norm_layer=norm_layer, activation=ACTIVATIONS[activation], members=members
        )
        c64, c192 = _scale(64, width), _scale(192, width)
        self.stem = nn.Sequential(
            self._stem_layers(stem, in_channels, c64, c192, lrn, conv_block, members)
        )

        blocks = OrderedDict()
        channels = c192
        for name, spec in INCEPTION_BLOCKS.items():
            module = InceptionModule(channels, spec.scaled(width), conv_block, members)
            blocks[f"inception{name}"] = module
            channels = module.out_channels
        self.blocks = nn.Sequential(blocks)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = MemberLinear(channels, num_classes, members)
        self._init_weights()

    @staticmethod
    def _stem_layers(
        stem: str,
        in_channels: int,
        c64: int,
        c192: int,
        lrn: bool,
        conv_block: Callable[..., ConvBlock],
        members: int,
    ) -> OrderedDict[str, nn.Module]:
        def local_response_norm() -> nn.Module:
            if members == 1:
                return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)
            return MemberLocalResponseNorm(members)

        layers = OrderedDict()
        if stem == "imagenet":
            layers["conv1"] = conv_block(in_channels, c64, 7, stride=2, separable=True)
            layers["pool1"] = nn.MaxPool2d(3, stride=2, padding=1)
            if lrn:
                layers["lrn1"] = local_response_norm()
            layers["conv2_reduce"] = conv_block(c64, c64, 1)
            layers["conv2"] = conv_block(c64, c192, 3)
            if lrn:
                layers["lrn2"] = local_response_norm()
            layers["pool2"] = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            layers["conv1"] = conv_block(in_channels, c64, 3)
            if lrn:
                layers["lrn1"] = local_response_norm()
            layers["conv2"] = conv_block(c64, c192, 3)
            if lrn:
                layers["lrn2"] = local_response_norm()
        return layers

    def _init_weights(self) -> None:
        """He-normal convolutions, small-normal classifier, zero biases.

        He initialization keeps the activation scale roughly constant through the ~30
        ReLU layers, which the plain (no-BN) baseline needs in order to train at all;
        BN layers keep their own initialization (gamma 1, beta 0).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of `x`. `keep`, when given, replaces the dropout layer's own draw: a mask of
        shape (N, features) (members * features, member-major, when packed) holding 0 for a
        dropped unit and 1 / (1 - p) for a kept one.

        A trainer that draws its random numbers outside the step (so that an eager step and a
        CUDA-graph replay of it see the same ones) passes its mask here.
        """
        x = self.blocks(self.stem(x))
        x = torch.flatten(self.avgpool(x), 1)
        x = self.dropout(x) if keep is None else x * keep
        return self.fc(x)


def _member_rows(packed: torch.Tensor, shape: torch.Size, members: int) -> torch.Tensor | None:
    """The view (members, *shape) of a packed tensor; None for a shared 0-dim counter."""
    if packed.dim() == 0:
        return None
    return packed.view(members, *shape)


@torch.no_grad()
def load_member(packed: Inception, member: int, single: dict[str, torch.Tensor]) -> None:
    """Writes a single network's state_dict (`members=1`, the same architecture) into member
    `member` of `packed`. BN's shared batch counters are left as they are."""
    state = packed.state_dict()
    for name, value in single.items():
        rows = _member_rows(state[name], value.shape, packed.members)
        if rows is not None:
            rows[member].copy_(value)


def member_state(packed: Inception, member: int) -> dict[str, torch.Tensor]:
    """Member `member` of `packed` as the state_dict of a single network (`members=1`)."""
    state = {}
    for name, value in packed.state_dict().items():
        shape = (value.shape[0] // packed.members, *value.shape[1:]) if value.dim() else ()
        rows = _member_rows(value, torch.Size(shape), packed.members)
        state[name] = value.clone() if rows is None else rows[member].clone()
    return state


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights, biases, BN gamma and beta; not BN running statistics)."""
    return sum(p.numel() for p in model.parameters())


def count_multiply_adds(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Multiply-adds of the convolutions and linear layers for one input of `input_size`.

    Counts every batch element (so the default counts one image). Biases, normalization,
    pooling and activations are not counted, as is customary. The model runs once in eval
    mode, so its BN statistics are not updated.
    """
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        # Each output element takes (in_channels / groups) * kernel area multiply-adds.
        total += output.numel() * module.weight[0].numel()

    def linear_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))

    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
