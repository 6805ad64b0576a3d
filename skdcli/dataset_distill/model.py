"""The conditional GAN (DiM's generator and AC-WGAN discriminator) and the classifiers of the model
pool / evaluation (ConvNet-3, ResNet-10/18, ResNet-10/18-AP), after vimar-gu/DiM @ 36573394
(gan_model.py, models/convnet.py, models/resnet.py, models/resnet_ap.py), sized by config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ClassifierConfig, DiscriminatorConfig, GeneratorConfig


def conditional_noise(
    labels: Tensor, noise_dim: int, num_classes: int, generator: torch.Generator | None = None
) -> Tensor:
    """z ~ N(0, I) of size noise_dim with its first C dims overwritten by one_hot(label) (DiM)."""
    z = torch.randn(len(labels), noise_dim, generator=generator).to(labels.device)
    return write_label(z, labels, num_classes)


def write_label(z: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    return torch.cat([F.one_hot(labels, num_classes).to(z.dtype), z[:, num_classes:]], dim=1)


# -- GAN -----------------------------------------------------------------------------------------------------------
def _upsample_sizes(size: int, upsamples: int) -> list[int]:
    """Spatial sizes from the FC's map to the output: 32 -> [4, 8, 16, 32]; 28 -> [4, 7, 14, 28]."""
    sizes = [size]
    for _ in range(upsamples):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


class Generator(nn.Module):
    """FC -> BN1d -> ReLU -> (ch, s0, s0); per upsampling ConvTranspose x2 (kernel 4, or 3 where the
    next size is odd: DiM's 4 -> 7 for 28x28) + BN + ReLU and ``convs_after_upsample[i]`` 3x3
    conv + BN + ReLU; a last 3x3 conv to the image channels; tanh."""

    def __init__(self, cfg: GeneratorConfig, channels: int, size: int, num_classes: int):
        super().__init__()
        if cfg.noise_dim <= num_classes:
            raise ValueError(
                f"generator.noise_dim={cfg.noise_dim} must exceed the {num_classes} classes "
                "(the one-hot label is written into the first noise dims)"
            )
        self.noise_dim, self.num_classes, self.ch = cfg.noise_dim, num_classes, cfg.channels
        self.sizes = _upsample_sizes(size, cfg.upsamples)
        if self.sizes[0] < 1:
            raise ValueError(f"image size {size} is too small for {cfg.upsamples} upsamplings")
        s0 = self.sizes[0]
        self.fc = nn.Linear(cfg.noise_dim, cfg.channels * s0 * s0)
        self.bn0 = nn.BatchNorm1d(cfg.channels * s0 * s0)
        layers: list[nn.Module] = []
        for i, n_convs in enumerate(cfg.convs_after_upsample):
            kernel = 4 if self.sizes[i + 1] == 2 * self.sizes[i] else 3
            layers += [
                nn.ConvTranspose2d(cfg.channels, cfg.channels, kernel, stride=2, padding=1),
                nn.BatchNorm2d(cfg.channels),
                nn.ReLU(),
            ]
            for _ in range(n_convs):
                layers += [nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1), nn.BatchNorm2d(cfg.channels), nn.ReLU()]
        layers += [nn.Conv2d(cfg.channels, channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        s0 = self.sizes[0]
        h = F.relu(self.bn0(self.fc(z)))
        return self.body(h.view(-1, self.ch, s0, s0))


class Discriminator(nn.Module):
    """3x3 convs (stride per config) each with LayerNorm([C, h, w]) + LeakyReLU(0.01), a global max
    pool, a source head (1) and a class head (C) (AC-GAN)."""

    def __init__(self, cfg: DiscriminatorConfig, channels: int, size: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, s = channels, size
        for stride in cfg.strides:
            s = (s - 1) // stride + 1  # kernel 3, padding 1
            layers += [
                nn.Conv2d(in_ch, cfg.channels, 3, stride=stride, padding=1),
                nn.LayerNorm([cfg.channels, s, s]),
                nn.LeakyReLU(),
            ]
            in_ch = cfg.channels
        self.body = nn.Sequential(*layers)
        self.source = nn.Linear(cfg.channels, 1)
        self.classes = nn.Linear(cfg.channels, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x).amax(dim=(2, 3))  # DiM: MaxPool2d(4) on the final 4x4 map = a global max
        return self.source(h).squeeze(1), self.classes(h)


class ConditionalGAN(nn.Module):
    """What the engine trains and checkpoints: both players. Export uses ``Sampler`` (G only)."""

    def __init__(
        self, gen_cfg: GeneratorConfig, disc_cfg: DiscriminatorConfig, channels: int, size: int, num_classes: int
    ):
        super().__init__()
        self.generator = Generator(gen_cfg, channels, size, num_classes)
        self.discriminator = Discriminator(disc_cfg, channels, size, num_classes)
        self.num_classes = num_classes

    def noise(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return conditional_noise(labels, self.generator.noise_dim, self.num_classes, generator)


class Sampler(nn.Module):
    """The exported program: (z, labels) -> images in [0, 1]; the label goes into z's first C dims."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        z = write_label(z, labels, self.generator.num_classes)
        return (self.generator(z) + 1.0) * 0.5


# -- classifiers -----------------------------------------------------------------------------------------------------
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # DiM's "instance" norm: GroupNorm with one group per channel, affine
        return nn.GroupNorm(channels, channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """DiM ConvNet: depth x [3x3 conv (width), norm, ReLU, 2x2 average pool], then a linear layer on
    the flattened map. A 28x28 one-channel input is padded to 32x32 by the first conv (padding 3)."""

    def __init__(
        self, channels: int, size: int, num_classes: int, width: int = 128, depth: int = 3, norm: str = "instance"
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, s = channels, size
        for d in range(depth):
            pad = 3 if (d == 0 and channels == 1 and size == 28) else 1
            s = s + 2 * pad - 2
            layers += [nn.Conv2d(in_ch, width, 3, padding=pad), _norm(norm, width), nn.ReLU(), nn.AvgPool2d(2)]
            s //= 2
            in_ch = width
            if s < 1:
                raise ValueError(f"ConvNet depth {depth} pools a {size}x{size} image below 1x1")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * s * s, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, avg_pool: bool):
        super().__init__()
        self.avg_pool = avg_pool and stride != 1
        conv_stride = 1 if avg_pool else stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = _norm(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if avg_pool:  # ResNet-AP: 1x1 conv, then average pooling instead of a strided conv
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, bias=False),
                    nn.AvgPool2d(stride) if stride != 1 else nn.Identity(),
                    _norm(norm, out_ch),
                )
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(norm, out_ch)
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.avg_pool:
            out = F.avg_pool2d(out, 2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """DiM's CIFAR-branch ResNet: a 3x3 stem (width w), four stages of BasicBlocks at w, 2w, 4w, 8w
    (strides 1, 2, 2, 2; one block per stage for depth 10, two for 18), global average pool, FC.
    ``avg_pool=True`` is ResNet-AP (downsampling by average pooling)."""

    BLOCKS = {10: 1, 18: 2}

    def __init__(
        self,
        channels: int,
        num_classes: int,
        depth: int = 18,
        width: int = 32,
        norm: str = "batch",
        avg_pool: bool = False,
    ):
        super().__init__()
        if depth not in self.BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(self.BLOCKS)}, got {depth}")
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU())
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for b in range(self.BLOCKS[depth]):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_ch, width * mult, stride, norm, avg_pool))
                in_ch = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():  # DiM's init: He-normal on fan_out for convs, unit norms
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem(x))
        return self.fc(h.mean(dim=(2, 3)))


def build_classifier(arch: str, cfg: ClassifierConfig, channels: int, size: int, num_classes: int) -> nn.Module:
    if arch == "convnet":
        return ConvNet(channels, size, num_classes, cfg.convnet_width, cfg.convnet_depth, cfg.convnet_norm)
    if arch.startswith("resnet"):
        depth = int(arch.removeprefix("resnet").removesuffix("_ap"))
        return ResNet(channels, num_classes, depth, cfg.resnet_width, cfg.resnet_norm, avg_pool=arch.endswith("_ap"))
    raise ValueError(f"unknown architecture {arch!r}")
