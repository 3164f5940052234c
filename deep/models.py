"""Image classifiers used for adversarial training, and a name -> constructor registry.

Every model takes inputs in [0, 1] and applies its own normalisation as the first layer
(:class:`Normalize`), so attacks work directly in pixel space ("normalisation applied
inside the forward"). Architectures follow the reference implementations:

* ``preact-resnet18``: pre-activation ResNet-18 (He et al., 2016, "Identity Mappings in Deep
  Residual Networks"), the PRN-18 of the FAAL and AWP reference code.
* ``resnet18``: the CIFAR variant of ResNet-18 (He et al., 2016; 3x3 stem, no max-pool).
* ``wrn-34-10`` / ``wrn-28-10``: WideResNet (Zagoruyko & Komodakis, 2016) in the TRADES /
  RobustBench form: pre-activation blocks, dropout 0, final BN+ReLU, global average pool.
* ``small-cnn``: three convolutions and a linear layer for digits (8x8) and Fashion-MNIST (28x28);
  small enough to train on a CPU in seconds.
* ``two-conv-cnn``: two 3x3 convolutions (32, 64) with max-pooling, no BatchNorm, and a 128-unit
  MLP head: the classic MNIST-style adversarial-training CNN, ~1.8x fewer FLOPs than ``small-cnn``
  on 28x28 inputs; the model of the full-scale Fashion-MNIST benchmark on one CPU core.

The other architectures' final poolings are adaptive, so any input size works (32x32 gives
exactly the 4x4 / 8x8 average pools of the reference architectures). Parameter names follow the
common reference implementations (e.g. ``conv1``, ``layer1.0.bn1``, ``linear`` for PRN-18;
``block1.layer.0.convShortcut``, ``fc`` for WRN), with the normalisation buffers under
``normalize.mean`` / ``normalize.std``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MODEL_NAMES",
    "CheckpointMismatchError",
    "MaxPool2x2",
    "Normalize",
    "PreActResNet18",
    "ResNet18",
    "SmallCNN",
    "TwoConvCNN",
    "WideResNet",
    "build_model",
    "count_parameters",
    "load_model_state",
    "strip_state_dict_prefixes",
]

MODEL_NAMES = ("small-cnn", "two-conv-cnn", "preact-resnet18", "resnet18", "wrn-34-10", "wrn-28-10")

# Prefixes added by wrappers: DistributedDataParallel / DataParallel ("module.") and
# torch.compile ("_orig_mod.").
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


class _MaxPool2x2Function(torch.autograd.Function):
    """2x2 max-pooling (stride 2, floor) from four strided views, with the gradient of ATen's own
    ``max_pool2d_with_indices_backward``: the indices are those ``F.max_pool2d`` returns (the first
    maximum of each window in row-major order), so on finite inputs the gradient is the same bits,
    ties included, and so is the output, except that a window whose maximum is a zero holding both
    +0.0 and -0.0 may give the other zero."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        h, w = height // 2 * 2, width // 2 * 2
        a, b, c, d = (x[..., i:h:2, j:w:2] for i, j in _CORNERS)
        top, bottom = torch.maximum(a, b), torch.maximum(c, d)
        out = torch.maximum(top, bottom)
        if ctx.needs_input_grad[0]:
            # strict comparisons keep the first of equal values: a before b, c before d, top
            # before bottom, i.e. the first maximum in row-major order, as ATen chooses it
            row, top_right = bottom > top, b > a
            col = top_right ^ (row & (top_right ^ (d > c)))  # the winning pair's right corner
            small = torch.uint8 if width < 255 else torch.int32
            corner = row.to(small) * width + col  # offset of the winner from the window's corner
            rows = torch.arange(0, h, 2, device=x.device).view(-1, 1) * width
            window = rows + torch.arange(0, w, 2, device=x.device)  # top-left corners, flat
            ctx.save_for_backward(x, window + corner)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` with a faster CPU path.

    On the CPU ATen's max-pooling kernel for contiguous (NCHW) tensors is about 8x slower than
    four elementwise maxima of strided views (one thread, a 128 x 32 x 28 x 28 batch: ~16 ms
    against ~1-2 ms), and a ``two-conv-cnn`` training step is 1.1-1.3x faster without it. For finite
    inputs the result and its gradient are those of ``nn.MaxPool2d(2)``, bit for bit but for the
    sign of a zero maximum (:class:`_MaxPool2x2Function`), so training gives the same weights
    (``benchmarks/max_pool_speed.py`` times both). Other devices, ``torch.compile`` and inputs
    of fewer than 2 x 2 pixels use ``F.max_pool2d`` itself.
    """

    def forward(self, x: Tensor) -> Tensor:
        """2 x 2 max-pooling with stride 2.

        Args:
            x: feature maps (N, C, H, W), floating point.

        Returns:
            The maxima (N, C, H // 2, W // 2) of each 2 x 2 window (odd last rows / columns
            dropped), with ``nn.MaxPool2d(2)``'s gradient.
        """
        if x.device.type != "cpu" or x.shape[-1] < 2 or x.shape[-2] < 2:
            return F.max_pool2d(x, 2)
        if torch.compiler.is_compiling():
            return F.max_pool2d(x, 2)
        return _MaxPool2x2Function.apply(x)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; ``mean`` and ``std`` are buffers of shape (1, C, 1, 1)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_l = [float(m) for m in mean]
        std_l = [float(s) for s in std]
        if len(mean_l) != len(std_l) or not mean_l:
            raise ValueError(
                f"mean and std must be non-empty sequences of equal length, got {mean_l}, {std_l}"
            )
        if not all(math.isfinite(m) for m in mean_l) or not all(
            math.isfinite(s) and s > 0 for s in std_l
        ):
            raise ValueError(f"std must be finite and > 0 and mean finite, got {mean_l}, {std_l}")
        mean_t = torch.tensor(mean_l, dtype=torch.float32)
        std_t = torch.tensor(std_l, dtype=torch.float32)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise per channel.

        Args:
            x: images (N, C, H, W) in [0, 1], C = the number of ``mean`` entries.

        Returns:
            ``(x - mean) / std``, same shape, float32 for float32 inputs.
        """
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """The line ``print(model)`` shows inside ``Normalize(...)``.

        Returns:
            ``"mean=[...], std=[...]"``, the per-channel values as lists.
        """
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


# --------------------------------------------------------------------------------------------
# PreAct-ResNet18
# --------------------------------------------------------------------------------------------
class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 + (1x1 conv) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct-ResNet18: 3x3 conv 64, stages [2,2,2,2] at 64/128/256/512, final BN+ReLU,
    average pool, linear."""

    def __init__(
        self, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        in_planes = 64
        layers = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(
                    PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Args:
            x: inputs (N, C, H, W) in [0, 1], e.g. 32 x 32 (the final pool is adaptive);
                the first layer (:class:`Normalize`) normalises them.

        Returns:
            Logits (N, num_classes), unnormalised (no softmax).
        """
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = the 4x4 average pool at 32x32
        return self.linear(out)


# --------------------------------------------------------------------------------------------
# ResNet18 (CIFAR variant)
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Post-activation basic block of ResNet-18 with a 1x1 conv + BN projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool), stages [2,2,2,2] at 64/128/256/512."""

    def __init__(
        self, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        layers = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Args:
            x: inputs (N, C, H, W) in [0, 1], e.g. 32 x 32 (the final pool is adaptive);
                the first layer (:class:`Normalize`) normalises them.

        Returns:
            Logits (N, num_classes), unnormalised (no softmax).
        """
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------------------------
# WideResNet (TRADES / RobustBench form)
# --------------------------------------------------------------------------------------------
class WideBasicBlock(nn.Module):
    """WRN block: BN-ReLU-conv3x3-BN-ReLU-conv3x3; 1x1 ``convShortcut`` when the width changes.

    As in the TRADES/RobustBench code, when the width changes the shortcut is taken from the
    pre-activated input ``relu(bn1(x))``; otherwise it is the identity on ``x``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (  # reference name (checkpoint compatibility)
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """A stage of ``n`` WRN blocks (parameter prefix ``layer.<i>`` as in the reference code)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` (TRADES/RobustBench style; dropout 0).

    ``depth = 6 n + 4``; widths 16, 16k, 32k, 64k; final BN+ReLU, global average pool (the 8x8 pool
    at 32x32 inputs), linear ``fc``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        depth: int = 34,
        widen_factor: int = 10,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (e.g. 28, 34), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # initialisation of the reference code
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Args:
            x: inputs (N, C, H, W) in [0, 1], e.g. 32 x 32 (the final pool is adaptive);
                the first layer (:class:`Normalize`) normalises them.

        Returns:
            Logits (N, num_classes), unnormalised (no softmax).
        """
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# --------------------------------------------------------------------------------------------
# Small CNN for digits / Fashion-MNIST
# --------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """conv3x3(32)-BN-ReLU, conv3x3(64, stride 2)-BN-ReLU, conv3x3(128, stride 2)-BN-ReLU,
    adaptive average pool to 2x2, linear. About 0.1M parameters; works for 8x8 to 32x32 inputs."""

    def __init__(
        self, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(128 * 2 * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Args:
            x: inputs (N, C, H, W) in [0, 1], 8 x 8 to 32 x 32; the first layer
                (:class:`Normalize`) normalises them.

        Returns:
            Logits (N, num_classes), unnormalised (no softmax).
        """
        return self.classifier(self.features(self.normalize(x)).flatten(1))


class TwoConvCNN(nn.Module):
    """conv3x3(32)-ReLU-maxpool2, conv3x3(64)-ReLU-maxpool2, linear(128)-ReLU, linear; no BatchNorm.

    The head's input size follows ``image_size`` (64 x (image_size // 4)^2: 3136 on 28x28), so the
    architecture is built for one input size; about 0.42M parameters on Fashion-MNIST. Without
    BatchNorm, train and eval mode compute the same function.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            MaxPool2x2(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            MaxPool2x2(),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Linear(64 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Args:
            x: inputs (N, C, image_size, image_size) in [0, 1] (the head is sized for
                ``image_size``); the first layer (:class:`Normalize`) normalises them.

        Returns:
            Logits (N, num_classes), unnormalised (no softmax).
        """
        return self.classifier(self.features(self.normalize(x)).flatten(1))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _channel_stats(
    values: Sequence[float] | None, default: float, in_channels: int, name: str
) -> list[float]:
    if values is None:
        return [default] * in_channels
    out = [float(v) for v in values]
    if len(out) != in_channels:
        raise ValueError(f"{name} must have in_channels={in_channels} entries, got {len(out)}")
    return out


def build_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int = 32,
) -> nn.Module:
    """Build a classifier by name (one of :data:`MODEL_NAMES`) for inputs in [0, 1].

    ``mean``/``std`` (one value per input channel; default 0 and 1, i.e. no normalisation) define
    the first layer :class:`Normalize`. ``image_size`` (the input height/width) is recorded in
    ``model.model_config`` and validated (>= 8); the architectures pool adaptively, so it does not
    change their parameters, except ``two-conv-cnn``, whose head is sized for it.
    ``model.model_config`` is a JSON-able dict from which
    ``build_model(**model.model_config)`` rebuilds the same architecture (used by checkpoints).

    Args:
        name: the architecture, one of :data:`MODEL_NAMES`.
        num_classes: the number of classes, >= 2.
        in_channels: input channels, >= 1.
        mean, std: per-channel normalisation of the first layer (default 0 and 1).
        image_size: input height and width, >= 8.

    Returns:
        The model (an ``nn.Module`` with a ``model_config`` attribute), in train mode.

    Raises:
        ValueError: naming an unknown architecture or an argument out of range.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    num_classes = _check_positive_int(num_classes, "num_classes", 2)
    in_channels = _check_positive_int(in_channels, "in_channels", 1)
    image_size = _check_positive_int(image_size, "image_size", 8)
    mean_l = _channel_stats(mean, 0.0, in_channels, "mean")
    std_l = _channel_stats(std, 1.0, in_channels, "std")
    if name == "small-cnn":
        model: nn.Module = SmallCNN(num_classes, in_channels, mean_l, std_l)
    elif name == "two-conv-cnn":
        model = TwoConvCNN(num_classes, in_channels, mean_l, std_l, image_size)
    elif name == "preact-resnet18":
        model = PreActResNet18(num_classes, in_channels, mean_l, std_l)
    elif name == "resnet18":
        model = ResNet18(num_classes, in_channels, mean_l, std_l)
    else:
        depth = int(name.split("-")[1])
        widen = int(name.split("-")[2])
        model = WideResNet(num_classes, in_channels, mean_l, std_l, depth=depth, widen_factor=widen)
    model.model_config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "mean": mean_l,
        "std": std_l,
        "image_size": image_size,
    }
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN statistics and ``normalize`` excluded).

    Args:
        model: the module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The count, an int.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# Loading state dicts
# --------------------------------------------------------------------------------------------
class CheckpointMismatchError(ValueError):
    """A state dict does not fit a model; lists missing / unexpected keys and shape mismatches.

    Attributes ``missing``, ``unexpected`` (lists of key names) and ``shape_mismatches`` (list of
    ``(key, checkpoint_shape, model_shape)``) hold the details.
    """

    def __init__(
        self,
        missing: Sequence[str],
        unexpected: Sequence[str],
        shape_mismatches: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
        *,
        source: str | None = None,
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatches = list(shape_mismatches)
        self.source = source
        super().__init__(self._message())

    def _message(self, limit: int = 20) -> str:
        def listing(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")

        where = f" from {self.source}" if self.source else ""
        parts = [f"state dict{where} does not match the model:"]
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.shape_mismatches:
            shapes = [
                f"{k} checkpoint {tuple(a)} vs model {tuple(b)}"
                for k, a, b in self.shape_mismatches
            ]
            parts.append(f"shape mismatches ({len(shapes)}): {listing(shapes)}")
        parts.append(
            "(was the checkpoint written for another architecture, number of classes or input "
            "channels? Its model_config says which.)"
        )
        return " ".join(parts)

    def with_source(self, source: str) -> CheckpointMismatchError:
        """The same error, its message naming ``source`` (e.g. the checkpoint file).

        Args:
            source: where the state dict came from, shown as ``state dict from <source>``.

        Returns:
            A new :class:`CheckpointMismatchError` with the same missing / unexpected keys and
            shape mismatches.
        """
        return CheckpointMismatchError(
            self.missing, self.unexpected, self.shape_mismatches, source=source
        )


def strip_state_dict_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove leading ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes.

    Prefixes are removed repeatedly, so ``module._orig_mod.conv1.weight`` becomes ``conv1.weight``.

    Args:
        state_dict: a state dict with string keys.

    Returns:
        A new dict with the stripped keys.

    Raises:
        ValueError: for a non-string key, or two keys that become the same.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"state dict keys must be strings, got {type(key).__name__}")
        stripped = key
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if stripped.startswith(prefix):
                    stripped = stripped[len(prefix) :]
                    changed = True
        if stripped in out:
            raise ValueError(
                f"state dict has two keys that both become {stripped!r} without prefixes"
            )
        out[stripped] = value
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP/DataParallel (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def load_model_state(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, allow_missing_normalize: bool = False
) -> None:
    """Load ``state_dict`` into ``model`` strictly, tolerating wrapper prefixes on either side.

    ``module.`` / ``_orig_mod.`` prefixes in the keys are stripped, and a wrapped ``model`` (DDP,
    DataParallel, torch.compile) is loaded through its underlying module. Any missing or unexpected
    key, or a shape mismatch, raises :class:`CheckpointMismatchError` listing them, before anything
    is copied. ``allow_missing_normalize=True`` accepts state dicts without the ``normalize.mean`` /
    ``normalize.std`` buffers (e.g. external checkpoints), keeping the model's own values.

    Args:
        model: the target module (possibly wrapped).
        state_dict: the weights.
        allow_missing_normalize: accept state dicts without the normalisation buffers.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    target = unwrap_model(model)
    incoming = strip_state_dict_prefixes(state_dict)
    expected = target.state_dict()
    missing = [k for k in expected if k not in incoming]
    if allow_missing_normalize:
        missing = [k for k in missing if k not in ("normalize.mean", "normalize.std")]
    unexpected = [k for k in incoming if k not in expected]
    mismatched = []
    for key, value in incoming.items():
        if key in expected:
            got = tuple(value.shape) if isinstance(value, Tensor) else None
            if got != tuple(expected[key].shape):
                mismatched.append((key, got, tuple(expected[key].shape)))
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched)
    target.load_state_dict(incoming, strict=not allow_missing_normalize)
