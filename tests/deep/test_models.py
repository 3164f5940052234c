"""Architectures, Normalize, the registry, and loading state dicts."""

import json

import pytest
import torch
from torch import nn

from deep.models import (
    MODEL_NAMES,
    CheckpointMismatchError,
    MaxPool2x2,
    Normalize,
    build_model,
    count_parameters,
    load_model_state,
    strip_state_dict_prefixes,
)


# ----- parameter counts, computed by hand from the architecture descriptions (SPEC §5) -----
def _conv(cin, cout, k):
    return cin * cout * k * k


def _bn(c):
    return 2 * c


def _linear(cin, cout):
    return cin * cout + cout


def _preact_resnet18_count(in_ch, classes):
    total = _conv(in_ch, 64, 3)
    cin = 64
    for planes in (64, 128, 256, 512):
        for _block in range(2):
            total += _bn(cin) + _conv(cin, planes, 3) + _bn(planes) + _conv(planes, planes, 3)
            if cin != planes:  # 1x1 conv shortcut, no BN
                total += _conv(cin, planes, 1)
            cin = planes
    return total + _bn(512) + _linear(512, classes)


def _resnet18_count(in_ch, classes):
    total = _conv(in_ch, 64, 3) + _bn(64)
    cin = 64
    for planes in (64, 128, 256, 512):
        for _block in range(2):
            total += _conv(cin, planes, 3) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
            if cin != planes:  # 1x1 conv + BN shortcut
                total += _conv(cin, planes, 1) + _bn(planes)
            cin = planes
    return total + _linear(512, classes)


def _wrn_count(depth, k, in_ch, classes):
    n = (depth - 4) // 6
    total = _conv(in_ch, 16, 3)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _block in range(n):
            total += _bn(cin) + _conv(cin, width, 3) + _bn(width) + _conv(width, width, 3)
            if cin != width:
                total += _conv(cin, width, 1)
            cin = width
    return total + _bn(cin) + _linear(cin, classes)


def _meta_model(name, classes, in_channels=3):
    with torch.device("meta"):  # no memory, no initialisation cost
        return build_model(name, classes, in_channels=in_channels)


@pytest.mark.parametrize(
    "name, reference, published",
    [
        ("preact-resnet18", lambda c, k: _preact_resnet18_count(c, k), 11.17e6),
        ("resnet18", lambda c, k: _resnet18_count(c, k), 11.17e6),
        ("wrn-34-10", lambda c, k: _wrn_count(34, 10, c, k), 46.16e6),
        ("wrn-28-10", lambda c, k: _wrn_count(28, 10, c, k), 36.48e6),
    ],
)
def test_parameter_counts(name, reference, published):
    n10 = count_parameters(_meta_model(name, 10))
    assert n10 == reference(3, 10)
    assert abs(n10 - published) / published < 0.005  # the commonly quoted sizes
    # classes and channels change only the head and the stem
    assert count_parameters(_meta_model(name, 100, in_channels=1)) == reference(1, 100)


def test_small_cnn_is_small():
    assert count_parameters(build_model("small-cnn", 10, in_channels=1)) < 200_000


def test_two_conv_cnn_parameter_count():
    # conv(k=3, bias) 1->32, 32->64; linear 64*7*7 -> 128 -> 10 on 28x28 inputs
    expected = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (64 * 49 * 128 + 128) + (128 * 10 + 10)
    model = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    assert count_parameters(model) == expected


def test_two_conv_cnn_has_no_batchnorm_so_train_and_eval_agree():
    torch.manual_seed(0)
    model = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.train()(x), model.eval()(x))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


# ----- MaxPool2x2: the same bits as nn.MaxPool2d(2), forward and gradient -----
def _bits(t):
    return t.contiguous().view(-1).view(torch.int32)


@pytest.mark.parametrize(
    "shape", [(5, 3, 8, 8), (4, 2, 7, 9), (2, 1, 28, 28), (3, 6, 2, 3), (2, 2, 5, 261)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_2x2_matches_max_pool2d_bit_for_bit_with_ties(shape, channels_last):
    gen = torch.Generator().manual_seed(sum(shape))
    # few distinct values: most windows hold ties, which decide where the gradient goes
    x = torch.randint(-2, 3, shape, generator=gen).float()
    x[0, 0, 0, 0] = -0.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_in, new_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, new = nn.MaxPool2d(2)(ref_in), MaxPool2x2()(new_in)
    assert torch.equal(ref, new)  # the same numbers; bit for bit except the sign of a zero
    assert torch.equal(_bits(ref)[ref.reshape(-1) != 0], _bits(new)[new.reshape(-1) != 0])
    grad = torch.randint(-3, 4, ref.shape, generator=gen).float()
    grad[0, 0, 0, 0] = -0.0
    ref.backward(grad)
    new.backward(grad)
    assert torch.equal(_bits(ref_in.grad), _bits(new_in.grad))


def test_max_pool_2x2_matches_on_continuous_values_and_in_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 10, 12, generator=gen, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.nn.functional.max_pool2d(a, 2).sum().backward()
    out = MaxPool2x2()(b)
    out.sum().backward()
    assert out.dtype == torch.float64 and torch.equal(out, torch.nn.functional.max_pool2d(x, 2))
    assert torch.equal(a.grad, b.grad)
    assert torch.autograd.gradcheck(MaxPool2x2(), (x[:1, :1].clone().requires_grad_(),))


def test_two_conv_cnn_trains_to_the_same_weights_as_with_nn_max_pool():
    """A few PGD steps and SGD updates on images with flat backgrounds (ties after ReLU): the
    weights and the attack end bit-identical to the same model built with nn.MaxPool2d."""
    from deep.attacks import pgd_attack

    torch.manual_seed(0)
    fast = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    ref = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    ref.load_state_dict(fast.state_dict())
    ref.features[2], ref.features[5] = nn.MaxPool2d(2), nn.MaxPool2d(2)
    gen = torch.Generator().manual_seed(2)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 6:22, 8:20] = torch.rand(16, 1, 16, 12, generator=gen)  # a blank border
    y = torch.randint(0, 10, (16,), generator=gen)
    for model in (fast, ref):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(3)
        for _ in range(3):
            x_adv = pgd_attack(model, x, y, eps=0.1, step_size=0.025, steps=3)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_adv), y).backward()
            opt.step()
    for (name, p_fast), p_ref in zip(
        fast.state_dict().items(), ref.state_dict().values(), strict=True
    ):
        assert torch.equal(_bits(p_fast), _bits(p_ref)), name


# ----- forward shapes -----
@pytest.mark.parametrize("name", ["small-cnn", "two-conv-cnn"])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_small_cnn_shapes(name, in_channels, size):
    model = build_model(name, 7, in_channels=in_channels, image_size=size).eval()
    out = model(torch.rand(3, in_channels, size, size))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["preact-resnet18", "resnet18", "wrn-28-10"])
@pytest.mark.parametrize("in_channels, size", [(3, 32), (1, 16)])
def test_large_model_shapes(name, in_channels, size):
    if name.startswith("wrn"):
        model = _wrn_small(in_channels)
    else:
        model = build_model(name, 5, in_channels=in_channels, image_size=size)
    model.eval()
    out = model(torch.rand(2, in_channels, size, size))
    assert out.shape == (2, 5)


def _wrn_small(in_channels):
    from deep.models import WideResNet

    return WideResNet(
        5, in_channels, [0.5] * in_channels, [0.25] * in_channels, depth=10, widen_factor=1
    )


def test_wrn_34_10_forward_shape():
    model = build_model("wrn-34-10", 10).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    model = build_model("preact-resnet18", 10, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3]).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ----- Normalize and the config -----
def test_normalize_matches_hand_computation():
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    norm = Normalize(mean, std)
    x = torch.rand(4, 3, 5, 5, dtype=torch.float32)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(norm(x), expected)
    assert set(dict(norm.named_buffers())) == {"mean", "std"}
    assert "mean" in norm.state_dict() and "std" in norm.state_dict()


def test_normalization_is_the_first_layer():
    mean, std = [0.3], [0.2]
    model = build_model("small-cnn", 3, in_channels=1, mean=mean, std=std).eval()
    plain = build_model("small-cnn", 3, in_channels=1).eval()
    plain.load_state_dict(
        {
            **model.state_dict(),
            "normalize.mean": torch.zeros(1, 1, 1, 1),
            "normalize.std": torch.ones(1, 1, 1, 1),
        }
    )
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - 0.3) / 0.2))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(name="vgg", num_classes=10), "name"),
        (dict(name="small-cnn", num_classes=1), "num_classes"),
        (dict(name="small-cnn", num_classes=10, in_channels=0), "in_channels"),
        (dict(name="small-cnn", num_classes=10, in_channels=3, mean=[0.5]), "mean"),
        (dict(name="small-cnn", num_classes=10, in_channels=1, std=[0.0]), "std"),
        (dict(name="small-cnn", num_classes=10, image_size=4), "image_size"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_model(**kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_config_is_json_and_rebuilds(name):
    with torch.device("meta"):
        model = build_model(name, 4, in_channels=1, mean=[0.5], std=[0.25], image_size=28)
        config = json.loads(json.dumps(model.model_config))
        again = build_model(**config)
    assert config["name"] == name and config["num_classes"] == 4 and config["image_size"] == 28
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in again.state_dict().items()
    }


# ----- loading state dicts -----
def _pair():
    torch.manual_seed(1)
    a = build_model("small-cnn", 3, in_channels=1)
    torch.manual_seed(2)
    b = build_model("small-cnn", 3, in_channels=1)
    return a, b


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_load_model_state_strips_wrapper_prefixes(prefix):
    a, b = _pair()
    state = {prefix + k: v for k, v in a.state_dict().items()}
    load_model_state(b, state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_load_into_wrapped_model():
    a, b = _pair()
    wrapped = nn.DataParallel(b)  # keys "module.*" on the target side
    load_model_state(wrapped, a.state_dict())
    assert torch.equal(b.classifier.weight, a.classifier.weight)


def test_strip_prefixes_refuses_collisions():
    with pytest.raises(ValueError, match="conv"):
        strip_state_dict_prefixes({"conv": torch.zeros(1), "module.conv": torch.zeros(1)})


def test_mismatch_lists_missing_unexpected_and_shapes():
    a, b = _pair()
    state = dict(a.state_dict())
    del state["classifier.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["classifier.weight"] = torch.zeros(5, 512)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_model_state(b, state)
    err = info.value
    assert err.missing == ["classifier.bias"]
    assert err.unexpected == ["extra.weight"]
    assert err.shape_mismatches == [("classifier.weight", (5, 512), (3, 512))]
    message = str(err)
    for word in ("classifier.bias", "extra.weight", "classifier.weight", "(5, 512)", "(3, 512)"):
        assert word in message
    # nothing was copied
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_missing_normalize_allowed_only_on_request():
    a, b = _pair()
    state = {k: v for k, v in a.state_dict().items() if not k.startswith("normalize.")}
    with pytest.raises(CheckpointMismatchError, match="normalize.mean"):
        load_model_state(b, state)
    b.normalize.mean.fill_(0.7)
    load_model_state(b, state, allow_missing_normalize=True)
    assert torch.equal(b.classifier.weight, a.classifier.weight)
    assert torch.all(b.normalize.mean == 0.7)
