"""Image classifiers looked up by name: CIFAR ResNets, VGG-16 with BatchNorm and a small ViT.

Each model is a three-line builder, registered by name in trainables.catalog (your own:
`@register_model`); the trainable only ever calls
`create_model(name, num_classes, in_channels, image_size)`. Every model accepts 1 or 3
input channels and 8 (sklearn digits), 32 (CIFAR) or 64 (Tiny ImageNet) pixel
square images; shapes that depend on the image size are fixed at construction, so
`forward` never branches on tensor values or synchronises with the host, and the models
run unchanged under channels_last and `torch.compile`.

Parameter names follow the torch convention (`...weight`, `...bias`) because ASAM treats
every parameter whose name ends in "weight" as a weight. The ViT's `cls_token` and
`pos_embed` therefore count as biases there, as timm's no-weight-decay lists treat them.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from trainables import catalog
from trainables.catalog import list_models
from trainables.errors import ConfigError, check_range

ModelBuilder = Callable[[int, int, int], nn.Module]


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register `builder(num_classes, in_channels, image_size)` under its function name
    (trainables.catalog.register_model, as a decorator)."""
    catalog.register_model(builder.__name__, builder)
    return builder


def create_model(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    """Build the registered model `name` with freshly initialised weights.

    Initialisation draws from torch's global generator: seed it (`torch.manual_seed`)
    before the call for reproducible weights. `image_size` is the side of a square
    input in pixels. Raises ConfigError for an unknown name or a non-positive size.
    """
    if name not in list_models():
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    sizes = [check_range(f"model {name!r}: {field}", value, 1, integral=True) for field, value in
             (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size))]
    return catalog.model_builder(name)(*sizes)


def model_for(name: str, data) -> nn.Module:
    """`create_model(name, ...)` for the images of `data` (an ImageData): its classes,
    channels and image size."""
    channels, size, _ = data.shape
    return create_model(name, data.num_classes, in_channels=channels, image_size=size)


# --- CIFAR ResNets (He et al. 2016, section 4.2; akamaster/pytorch_resnet_cifar10) ---


class _PadShortcut(nn.Module):
    """Option-A shortcut: halve the resolution and zero-pad channels; no parameters.

    The paper's CIFAR networks use it so that res20s has exactly 0.27M parameters.
    """

    def __init__(self, extra_channels: int):
        super().__init__()
        # Split the padding over both sides, as akamaster does, so the identity
        # channels sit in the middle; the parameter count does not depend on it.
        self.before = extra_channels // 2
        self.after = extra_channels - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.before, self.after))


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        downsample = stride != 1 or in_planes != planes
        self.shortcut = _PadShortcut(planes - in_planes) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(in_planes: int, planes: int, stride: int, num_blocks: int) -> nn.Sequential:
    """`num_blocks` BasicBlocks; only the first changes resolution and width."""
    blocks = [_BasicBlock(in_planes, planes, stride)]
    blocks += [_BasicBlock(planes, planes, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: 16/32/64 channels, n blocks per stage."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(16, 16, 1, blocks_per_stage)
        self.layer2 = _stage(16, 32, 2, blocks_per_stage)
        self.layer3 = _stage(32, 64, 2, blocks_per_stage)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # He init (fan_in, ReLU gain) as in the paper and akamaster's code;
                # biases and BatchNorm keep torch's defaults.
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Global average pool; the last stage is 8x8 on CIFAR but 2x2 on 8x8 digits.
        return self.linear(out.mean(dim=(2, 3)))


def res8s(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-8, the family's smallest (1 block per stage, 75k parameters on 10 classes): on
    8x8 digits as accurate as ResNet-20 at half its time, what lets the quickstart run 3
    replicates of every search in minutes."""
    return CifarResNet(1, num_classes, in_channels)


def res20s(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-20 for CIFAR (3 blocks per stage, 0.27M parameters on 10 classes)."""
    return CifarResNet(3, num_classes, in_channels)


def res56s(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-56 for CIFAR (9 blocks per stage, 0.86M parameters on 10 classes)."""
    return CifarResNet(9, num_classes, in_channels)


# --- VGG (Simonyan & Zisserman 2015) with BatchNorm ---

# Configuration D: output channels of each 3x3 conv, "M" for a 2x2 max-pool.
_VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """VGG features, a global average pool and one linear classifier (CIFAR variant)."""

    def __init__(
        self, layers: tuple[int | str, ...], num_classes: int, in_channels: int, image_size: int
    ):
        super().__init__()
        features: list[nn.Module] = []
        channels, size = in_channels, image_size
        for layer in layers:
            if layer == "M":
                # Pooling a 1x1 map would fail (output size 0); 8x8 digits reach 1x1
                # after three pools, so the remaining pools are left out.
                if size > 1:
                    features.append(nn.MaxPool2d(2))
                    size //= 2
            else:
                conv = nn.Conv2d(channels, layer, 3, padding=1)
                features += [conv, nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
                channels = layer
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        # torchvision's VGG initialisation.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg16_bn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """VGG-16 (configuration D) with BatchNorm, about 14.7M parameters on 10 classes."""
    return VGG(_VGG16_LAYERS, num_classes, in_channels, image_size)


# --- Vision Transformer (Dosovitskiy et al. 2021), pre-norm ---


class _SelfAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (fused kernels)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # (batch, tokens, 3*dim) -> 3 x (batch, heads, tokens, head_dim)
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a class token, learned position embeddings and a linear head."""

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, patch_size: int,
        dim: int, depth: int, num_heads: int, mlp_dim: int,
    ):
        super().__init__()
        # A strided conv is the linear patch projection; pixels beyond the last whole
        # patch are dropped, so the grid is image_size // patch_size per side.
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        num_patches = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.layers = nn.Sequential(*(_EncoderLayer(dim, num_heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        # timm's ViT initialisation: small truncated normals keep the pre-norm residual
        # stream near unit scale at the start of training.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed
        return self.head(self.norm(self.layers(tokens))[:, 0])


def vit(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ViT with an 8x8 patch grid (4x4 patches on CIFAR), 384 hidden, 7 layers, 12 heads.

    About 6.3M parameters on 10 classes at 32x32.
    """
    patch_size = max(1, image_size // 8)
    return VisionTransformer(
        num_classes, in_channels, image_size, patch_size,
        dim=384, depth=7, num_heads=12, mlp_dim=384,
    )
