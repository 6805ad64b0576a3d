"""Backbones with a 1-channel (or VV+VH 2-channel) SAR input, stage taps, BYOT exits and Grad-CAM.

``SarNet`` wraps a torchvision classifier (resnet18, resnet50, vgg16, densenet121, mobilenet_v2) as
``self.net`` so its state-dict keys stay torchvision's (``net.layer1...``), and exposes:

    features(x)      the outputs of 4 stages (strides 4/8/16/32 for torchvision; 2/4/8/16 for resnet10t)
    classify(fmap)   the torchvision head on the last stage's output -> logits
    dense_logits     the linear classifier applied at every position of the last feature map (Zipf's LS)

``resnet10t`` (OURS, for CPU-sized runs) is a quarter-width ResNet-10 from torchvision's BasicBlock.
BYOT (Zhang et al., ICCV 2019) adds one exit per shallow stage, shaped like mmrazor's BYOTConnector:
a sigmoid attention map from a stride-2 separable convolution, then stride-2 separable convolutions up
to the deepest stage's width, global pooling (the exit's feature) and a linear classifier.
Nothing is downloaded: pretrained weights come from a local file (``load_pretrained``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.errors import SkdError
from ..engine.weights import read_state_dict as engine_read_state_dict

VGG16_STAGE_ENDS = (10, 17, 24, 31)  # features[:10] = blocks 1-2 (stride 4), then blocks 3, 4, 5
MOBILENET_STAGE_ENDS = (4, 7, 14, 19)  # features split at strides 4, 8, 16, 32


class ResNet10T(nn.Module):
    """stem (3x3, stride 2) + one BasicBlock per stage at widths w, 2w, 4w, 8w; global pool; fc."""

    def __init__(self, in_chans: int, num_classes: int, width: int = 16):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers, c_in = [], width
        for i in range(4):
            c_out, stride = width * 2**i, 1 if i == 0 else 2
            down = (
                None
                if stride == 1 and c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            )
            layers.append(BasicBlock(c_in, c_out, stride, down))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _torchvision(backbone: str, num_classes: int, in_chans: int) -> nn.Module:
    from torchvision import models

    net = getattr(models, backbone)(weights=None, num_classes=num_classes)
    if backbone.startswith("resnet"):
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    elif backbone == "vgg16":
        net.features[0] = nn.Conv2d(in_chans, 64, 3, padding=1)
    elif backbone == "densenet121":
        net.features.conv0 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    elif backbone == "mobilenet_v2":
        net.features[0][0] = nn.Conv2d(in_chans, 32, 3, 2, 1, bias=False)
    else:
        raise SkdError(f"unknown backbone '{backbone}'")
    return net


class SepConv(nn.Sequential):
    """DARTS-style separable convolution (two depthwise + pointwise pairs), as in BYOT's exits."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class ByotExit(nn.Module):
    """A shallow classifier: attention-weighted stage output -> ``hops`` stride-2 SepConvs -> pool -> fc."""

    def __init__(self, c_in: int, c_out: int, hops: int, num_classes: int):
        super().__init__()
        self.attention = nn.Sequential(SepConv(c_in, c_in, 2), nn.BatchNorm2d(c_in), nn.ReLU())
        chans = [round(c_in * (c_out / c_in) ** (k / hops)) for k in range(hops + 1)]
        chans[-1] = c_out
        self.scala = nn.Sequential(*[SepConv(chans[k], chans[k + 1], 2) for k in range(hops)])
        self.fc = nn.Linear(c_out, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        att = torch.sigmoid(F.interpolate(self.attention(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        feat = F.adaptive_avg_pool2d(self.scala(att * x), 1).flatten(1)
        return feat, self.fc(feat)


class SarNet(nn.Module):
    def __init__(
        self,
        backbone: str,
        num_classes: int,
        in_chans: int = 1,
        width: int = 16,
        dropout: float = 0.0,
        byot_exits: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.net = (
            ResNet10T(in_chans, num_classes, width)
            if backbone == "resnet10t"
            else _torchvision(backbone, num_classes, in_chans)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.exits = nn.ModuleList()
        if byot_exits:
            with torch.no_grad():
                was = self.training
                self.eval()
                chans = [f.shape[1] for f in self.features(torch.zeros(1, in_chans, 64, 64))]
                self.train(was)
            self.exits = nn.ModuleList(
                ByotExit(c, chans[-1], len(chans) - 1 - i, num_classes) for i, c in enumerate(chans[:-1])
            )

    # -- stages ---------------------------------------------------------------------------------------------
    def features(self, x: Tensor) -> list[Tensor]:
        n, b = self.net, self.backbone
        outs = []
        if b == "resnet10t" or b.startswith("resnet"):
            x = n.stem(x) if b == "resnet10t" else n.maxpool(n.relu(n.bn1(n.conv1(x))))
            for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
                x = layer(x)
                outs.append(x)
        elif b in ("vgg16", "mobilenet_v2"):
            start = 0
            for end in VGG16_STAGE_ENDS if b == "vgg16" else MOBILENET_STAGE_ENDS:
                x = n.features[start:end](x)
                outs.append(x)
                start = end
        else:  # densenet121
            f = n.features
            parts = (
                (f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1),
                (f.transition1, f.denseblock2),
                (f.transition2, f.denseblock3),
                (f.transition3, f.denseblock4, f.norm5),
            )
            for part in parts:
                for m in part:
                    x = m(x)
                outs.append(x)
        return outs

    def pooled(self, fmap: Tensor) -> Tensor:
        if self.backbone == "densenet121":
            fmap = F.relu(fmap)
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def classify(self, fmap: Tensor) -> Tensor:
        n, b = self.net, self.backbone
        if b == "vgg16":
            return n.classifier(torch.flatten(n.avgpool(fmap), 1))
        if b in ("densenet121", "mobilenet_v2"):
            return n.classifier(self.pooled(fmap))
        return n.fc(self.dropout(self.pooled(fmap)))

    def _linear_head(self) -> nn.Linear | None:
        b = self.backbone
        if b == "vgg16":
            return None  # a 3-layer MLP on the 7x7 map: no per-position classifier
        if b == "densenet121":
            return self.net.classifier
        if b == "mobilenet_v2":
            return self.net.classifier[-1]
        return self.net.fc

    def dense_logits(self, fmap: Tensor) -> Tensor | None:
        """(B, H*W, K): the linear classifier at every position of ``fmap`` (None for vgg16)."""
        head = self._linear_head()
        if head is None:
            return None
        if self.backbone == "densenet121":
            fmap = F.relu(fmap)
        return head(fmap.flatten(2).transpose(1, 2))

    def forward(self, x: Tensor, output: str = "logits"):
        """``output``: logits (B, K) | dense: (logits, dense_logits) | exits: ``forward_exits``.
        One entry point, so a DistributedDataParallel wrapper sees every training forward."""
        if output == "exits":
            return self.forward_exits(x)
        fmap = self.features(x)[-1]
        if output == "dense":
            return self.classify(fmap), self.dense_logits(fmap)
        return self.classify(fmap)

    def forward_exits(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """BYOT: (exit features, exit logits, deepest feature, deepest logits)."""
        stages = self.features(x)
        feats, logits = [], []
        for exit_, s in zip(self.exits, stages[:-1]):
            f, z = exit_(s)
            feats.append(f)
            logits.append(z)
        return feats, logits, self.pooled(stages[-1]), self.classify(stages[-1])


def build_model(cfg_model, num_classes: int, in_chans: int, byot_exits: bool = False) -> SarNet:
    model = SarNet(cfg_model.backbone, num_classes, in_chans, cfg_model.width, cfg_model.dropout, byot_exits)
    if cfg_model.pretrained:
        load_pretrained(model, cfg_model.pretrained)
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A local weights file: safetensors, or a torch state dict (``weights_only=True``; a ``state_dict``
    / ``model`` / ``net`` entry is unwrapped). Never unpickles arbitrary objects."""
    return engine_read_state_dict(path, unwrap=("state_dict", "model", "net"))


def load_pretrained(model: SarNet, path: str | Path) -> dict:
    """Copy every tensor of ``path`` whose name and shape fit (torchvision names are matched under
    ``net.``); a 3-channel first convolution is summed over RGB to the SAR input; a head of another
    shape keeps its random initialisation. Returns what was loaded and skipped."""
    state = read_state_dict(path)
    own = model.state_dict()
    loaded, reshaped, skipped = [], [], []
    with torch.no_grad():
        for name, value in state.items():
            target = name if name in own else f"net.{name}"
            if target not in own:
                skipped.append(name)
                continue
            mine = own[target]
            if value.shape == mine.shape:
                mine.copy_(value)
                loaded.append(target)
            elif (
                value.dim() == 4
                and value.shape[1] == 3
                and value.shape[0] == mine.shape[0]
                and value.shape[2:] == mine.shape[2:]
            ):
                mine.copy_(value.sum(dim=1, keepdim=True).repeat(1, mine.shape[1], 1, 1) / mine.shape[1])
                reshaped.append(target)
            else:
                skipped.append(name)
    if not loaded:
        raise SkdError(f"no tensor fits the {model.backbone} backbone (first keys: {list(state)[:3]})", path)
    return {"loaded": len(loaded), "first_conv_from_rgb": reshaped, "skipped": skipped}


def gradcam(model: SarNet, x: Tensor, class_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Grad-CAM (Selvaraju et al., 2017) on the last stage: per-sample maps (B, H, W) in [0, 1] at the
    input size, and the logits. ``class_index`` defaults to the predicted class."""
    model.eval()
    with torch.enable_grad():
        fmap = model.features(x)[-1].detach().requires_grad_(True)
        logits = model.classify(fmap)
        idx = logits.argmax(1) if class_index is None else class_index
        (grad,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), fmap)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * fmap).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    return (cam / peak).detach(), logits.detach()
