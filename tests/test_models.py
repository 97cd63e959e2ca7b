"""Tests for the model registry: names, exact parameter counts, shapes and gradients on the
three data sets' input sizes, memory-format and compile invariance, errors, seeding."""

import pytest
import torch

from trainables.errors import ConfigError
from trainables.models import create_model, list_models

# (in_channels, image_size, num_classes) of CIFAR-10, sklearn digits and Tiny ImageNet.
INPUTS = [(3, 32, 10), (1, 8, 10), (3, 64, 200)]


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet_params(blocks_per_stage: int, in_channels: int, num_classes: int) -> int:
    """Option-A CIFAR ResNet: bias-free 3x3 convs, BN (2 per channel), parameter-free
    shortcuts, Linear(64, classes)."""
    total = 9 * in_channels * 16 + 2 * 16  # stem conv + BN
    for cin, width in ((16, 16), (16, 32), (32, 64)):
        total += 9 * cin * width + 9 * width * width + 4 * width  # first block
        total += (blocks_per_stage - 1) * (2 * 9 * width * width + 4 * width)
    return total + 64 * num_classes + num_classes


def _vgg16_bn_params(in_channels: int, num_classes: int) -> int:
    """Config D's 13 convs (3x3 with bias) each followed by BN, then Linear(512, classes)."""
    total, cin = 0, in_channels
    for cout in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512):
        total += 3 * 3 * cin * cout + cout + 2 * cout
        cin = cout
    return total + 512 * num_classes + num_classes


def _vit_params(in_channels: int, image_size: int, num_classes: int) -> int:
    """Pre-norm ViT: hidden 384, 7 layers, MLP 384, 8x8 patch grid plus a class token."""
    dim, depth, mlp = 384, 7, 384
    patch = max(1, image_size // 8)
    tokens = (image_size // patch) ** 2 + 1
    attention = (dim * 3 * dim + 3 * dim) + (dim * dim + dim)  # qkv + output projection
    mlp_block = (dim * mlp + mlp) + (mlp * dim + dim)
    layer_norms = 2 * 2 * dim
    layers = depth * (attention + mlp_block + layer_norms)
    patch_embed = patch * patch * in_channels * dim + dim
    return layers + patch_embed + dim + tokens * dim + 2 * dim + dim * num_classes + num_classes


EXPECTED_PARAMS = {
    "res8s": lambda c, size, k: _resnet_params(1, c, k),
    "res20s": lambda c, size, k: _resnet_params(3, c, k),
    "res56s": lambda c, size, k: _resnet_params(9, c, k),
    "vgg16_bn": lambda c, size, k: _vgg16_bn_params(c, k),
    "vit": _vit_params,
}


def test_registry_holds_the_papers_models():
    # The tests below run over every registered model; these four must be among them.
    assert {"res20s", "res56s", "vgg16_bn", "vit"} <= set(list_models())


def test_resnet_counts_match_published_option_a_values():
    # akamaster/pytorch_resnet_cifar10 prints these for its option-A networks. The often
    # quoted 272,474 and 855,770 belong to option-B (1x1 conv + BN projection) shortcuts:
    # 2,752 more parameters = (16*32 + 32*64) conv + 2*(32 + 64) BN.
    assert _num_params(create_model("res20s", 10)) == 269_722
    assert _num_params(create_model("res56s", 10)) == 853_018


def test_formula_counts_match_headline_sizes():
    # Guards the formulas themselves against the sizes quoted in the notes.
    assert _vgg16_bn_params(3, 10) == 14_728_266
    assert _vit_params(3, 32, 10) == 6_268_810


@pytest.mark.parametrize("in_channels, image_size, num_classes", INPUTS)
@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name, in_channels, image_size, num_classes):
    model = create_model(name, num_classes, in_channels, image_size)
    assert _num_params(model) == EXPECTED_PARAMS[name](in_channels, image_size, num_classes)


@pytest.mark.parametrize("name", list_models())
def test_parameter_names_follow_weight_bias_convention(name):
    # ASAM scales every parameter named "...weight"; a matrix under another name would
    # silently be treated as a bias. Only the ViT's token embeddings are exempt.
    for pname, p in create_model(name, 10).named_parameters():
        if pname in ("cls_token", "pos_embed"):
            continue
        assert pname.endswith(("weight", "bias")), pname
        if p.ndim > 1:
            assert pname.endswith("weight"), pname


@pytest.mark.parametrize("in_channels, image_size, num_classes", INPUTS)
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, in_channels, image_size, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_channels, image_size)
    logits = model(torch.randn(2, in_channels, image_size, image_size))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", list_models())
def test_channels_last_gives_same_logits(name):
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        x_cl = x.to(memory_format=torch.channels_last)
        assert x_cl.is_contiguous(memory_format=torch.channels_last) and not x_cl.is_contiguous()
        model.to(memory_format=torch.channels_last)
        actual = model(x_cl)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_compiles_as_one_graph(name):
    # fullgraph=True fails on any graph break, which is what a host sync (.item()) or a
    # Python branch on a tensor value causes; the eager backend skips code generation
    # so the test needs no C++ compiler and stays fast.
    torch.manual_seed(0)
    model = create_model(name, 10, 1, 8).eval()
    x = torch.randn(2, 1, 8, 8)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_unknown_name_raises_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="resnet18") as info:
        create_model("resnet18", 10)
    for valid in list_models():
        assert valid in str(info.value)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 10, "in_channels": 0}, "in_channels"),
        ({"num_classes": 10, "image_size": -32}, "image_size"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
    ],
)
def test_bad_sizes_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field) as info:
        create_model("res20s", **kwargs)
    assert "res20s" in str(info.value)


@pytest.mark.parametrize("name", list_models())
def test_seed_makes_weights_reproducible(name):
    def weights(seed):
        torch.manual_seed(seed)
        return create_model(name, 10).state_dict()

    first, second, other = weights(0), weights(0), weights(1)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # Without this the test would also pass if initialisation ignored the seed entirely.
    floats = [key for key in first if first[key].is_floating_point()]
    assert any(not torch.equal(first[key], other[key]) for key in floats)
