"""Hand-written plain PyTorch versions of the zoo nets, for the benchmarks.

``tools/bench_net.py`` and ``tools/benchmark.py`` compare ``pipeline.Net`` built from a
prototxt against these modules -- what a user would write by hand with ``nn.Conv2d``,
``nn.ReLU(inplace=True)``, ``nn.MaxPool2d(ceil_mode=True)`` (Caffe rounds pooled sizes
up), ``nn.LocalResponseNorm``, ``nn.BatchNorm2d``, ``nn.Linear``, ``torch.cat``.

Every module has ``logits(x)`` (N, 1000 or 10) and ``forward(x) = softmax(logits)``
(the deploy net's ``prob``), and ``caffe_map()``: ``(caffe layer, module, kind)`` with
kind ``"wb"`` (weight, bias), ``"bn"`` (Caffe BatchNorm blobs: mean*s, var*s, s) or
``"scale"`` (Caffe Scale blobs: gamma, beta -> the BatchNorm2d's affine weight, bias).
``copy_from_net(net, model)`` copies a Net's blobs into the module through that map.

Caffe BatchNorm + Scale is ``nn.BatchNorm2d(eps=1e-5, affine=True)``; in training the
running statistics update differs (Caffe keeps unnormalised sums and a factor, torch an
exponential average with unbiased variance) -- the same amount of work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------ plain PyTorch nets
class ChannelSumLRN(nn.Module):
    """Cross-channel LRN as Caffe writes it: x * (k + alpha/n * window sum of x^2)^-beta.

    The same formula as ``nn.LocalResponseNorm``, summed with ``unfold`` instead of
    ``avg_pool3d`` (``--plain-lrn sum``: leaves the plain net no LRN-kernel advantage
    or handicap, so the ratio shows the Net's own overhead).
    """

    def __init__(self, size, alpha, beta, k):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        p = (self.size - 1) // 2
        win = F.pad(x * x, (0, 0, 0, 0, p, p)).unfold(1, self.size, 1).sum(-1)
        return x * (self.k + self.alpha / self.size * win).pow(-self.beta)


def make_lrn(kind):
    if kind == "sum":
        return ChannelSumLRN(5, alpha=1e-4, beta=0.75, k=1.0)
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class CaffeNetPlain(nn.Module):
    """bvlc_reference_caffenet written out by hand (AlexNet with pool before LRN)."""

    def __init__(self, lrn="nn"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm = make_lrn(lrn)
        self.drop = nn.Dropout(0.5)

    def logits(self, x):
        x = self.norm(self.pool(self.relu(self.conv1(x))))
        x = self.norm(self.pool(self.relu(self.conv2(x))))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        x = self.pool(self.relu(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return self.fc8(x)

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)

    def caffe_layers(self):
        """(Caffe layer name, module) for every layer with weights."""
        return [(n, getattr(self, n)) for n in
                ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")]


class Inception(nn.Module):
    """GoogLeNet's Inception module: 1x1 | 1x1-3x3 | 1x1-5x5 | pool-1x1, concatenated."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1 = nn.Conv2d(cin, c1, 1)
        self.b3r = nn.Conv2d(cin, c3r, 1)
        self.b3 = nn.Conv2d(c3r, c3, 3, padding=1)
        self.b5r = nn.Conv2d(cin, c5r, 1)
        self.b5 = nn.Conv2d(c5r, c5, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.proj = nn.Conv2d(cin, cp, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        r = self.relu
        return torch.cat([
            r(self.b1(x)),
            r(self.b3(r(self.b3r(x)))),
            r(self.b5(r(self.b5r(x)))),
            r(self.proj(self.pool(x))),
        ], 1)

    def caffe_layers(self, prefix):
        names = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
        mods = (self.b1, self.b3r, self.b3, self.b5r, self.b5, self.proj)
        return [(f"{prefix}/{n}", m) for n, m in zip(names, mods)]


_INCEPTIONS = {  # name: (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetPlain(nn.Module):
    """bvlc_googlenet (deploy: no auxiliary classifiers) written out by hand."""

    def __init__(self, lrn="nn"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.conv2_reduce = nn.Conv2d(64, 64, 1)
        self.conv2 = nn.Conv2d(64, 192, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm = make_lrn(lrn)
        self.inc = nn.ModuleDict({k: Inception(*v) for k, v in _INCEPTIONS.items()})
        self.avgpool = nn.AvgPool2d(7, stride=1, ceil_mode=True)
        self.drop = nn.Dropout(0.4)
        self.fc = nn.Linear(1024, 1000)

    def logits(self, x):
        r, inc = self.relu, self.inc
        x = self.norm(self.pool(r(self.conv1(x))))
        x = self.pool(self.norm(r(self.conv2(r(self.conv2_reduce(x))))))
        x = self.pool(inc["3b"](inc["3a"](x)))
        for k in ("4a", "4b", "4c", "4d", "4e"):
            x = inc[k](x)
        x = self.pool(x)
        x = self.avgpool(inc["5b"](inc["5a"](x)))
        return self.fc(torch.flatten(self.drop(x), 1))

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)

    def caffe_layers(self):
        out = [("conv1/7x7_s2", self.conv1), ("conv2/3x3_reduce", self.conv2_reduce),
               ("conv2/3x3", self.conv2)]
        for k, m in self.inc.items():
            out += m.caffe_layers(f"inception_{k}")
        return out + [("loss3/classifier", self.fc)]


class LeNetPlain(nn.Module):
    """Caffe's MNIST LeNet: conv(20,5) pool conv(50,5) pool ip(500) relu ip(10)."""

    def __init__(self, lrn="nn"):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)
        self.relu = nn.ReLU(inplace=True)

    def logits(self, x):
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.ip2(self.relu(self.ip1(torch.flatten(x, 1))))

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)

    def caffe_layers(self):
        return [(n, getattr(self, n)) for n in ("conv1", "conv2", "ip1", "ip2")]


class ConvBN(nn.Module):
    """Caffe's conv (no bias) -> BatchNorm -> Scale [-> ReLU], names from Kaiming He's release."""

    def __init__(self, cin, cout, k, stride=1, pad=0, relu=True, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x, inplace=True) if self.relu else x

    def caffe_map(self, conv, bn, scale):
        return [(conv, self.conv, "wb"), (bn, self.bn, "bn"), (scale, self.bn, "scale")]


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (Caffe release: the stride sits on the first 1x1 conv)."""

    def __init__(self, name, cin, mid, cout, stride, project):
        super().__init__()
        self.name = name
        self.a = ConvBN(cin, mid, 1, stride)
        self.b = ConvBN(mid, mid, 3, 1, 1)
        self.c = ConvBN(mid, cout, 1, relu=False)
        self.proj = ConvBN(cin, cout, 1, stride, relu=False) if project else None

    def forward(self, x):
        short = self.proj(x) if self.proj is not None else x
        return F.relu(self.c(self.b(self.a(x))) + short, inplace=True)

    def caffe_map(self):
        n, out = self.name, []
        if self.proj is not None:
            out += self.proj.caffe_map(f"res{n}_branch1", f"bn{n}_branch1", f"scale{n}_branch1")
        for part, m in (("2a", self.a), ("2b", self.b), ("2c", self.c)):
            out += m.caffe_map(f"res{n}_branch{part}", f"bn{n}_branch{part}", f"scale{n}_branch{part}")
        return out


class ResNet50Plain(nn.Module):
    """ResNet-50 as in Kaiming He's Caffe deploy prototxt (conv1 with bias, fc1000)."""

    def __init__(self, lrn="nn"):
        super().__init__()
        self.conv1 = ConvBN(3, 64, 7, 2, 3, bias=True)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        blocks, cin = [], 64
        for stage, (mid, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=2):
            for i in range(n):
                stride = 2 if (i == 0 and stage > 2) else 1
                blocks.append(Bottleneck(f"{stage}{'abcdef'[i]}", cin, mid, mid * 4, stride, i == 0))
                cin = mid * 4
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AvgPool2d(7, stride=1, ceil_mode=True)
        self.fc = nn.Linear(2048, 1000)

    def logits(self, x):
        x = self.avgpool(self.blocks(self.pool(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)

    def caffe_map(self):
        out = self.conv1.caffe_map("conv1", "bn_conv1", "scale_conv1")
        for b in self.blocks:
            out += b.caffe_map()
        return out + [("fc1000", self.fc, "wb")]


def caffe_map(model):
    """(caffe layer, module, kind) for every Caffe layer with blobs."""
    if hasattr(model, "caffe_map"):
        return model.caffe_map()
    return [(n, m, "wb") for n, m in model.caffe_layers()]


def copy_from_net(net, model) -> None:
    """Copy our Net's blobs into the plain model (names and shapes checked)."""
    mapped = caffe_map(model)
    missing = set(net.params) - {n for n, _, _ in mapped}
    if missing:
        raise SystemExit(f"plain model has no layer for: {sorted(missing)}")
    with torch.no_grad():
        for name, mod, kind in mapped:
            blobs = [b.detach() for b in net.layer_dict[name].module.blobs]
            if kind == "bn":
                s = float(blobs[2].reshape(-1)[0])
                s = 0.0 if s == 0 else 1.0 / s
                pairs = [(blobs[0] * s, mod.running_mean), (blobs[1] * s, mod.running_var)]
            elif kind == "scale":
                pairs = list(zip(blobs, (mod.weight, mod.bias)))
            else:
                pairs = list(zip(blobs, (mod.weight, mod.bias)))
            for src, dst in pairs:
                if dst is None or tuple(src.shape) != tuple(dst.shape):
                    raise SystemExit(f"{name}: our blob {tuple(src.shape)} vs plain "
                                     f"{None if dst is None else tuple(dst.shape)}")
                dst.copy_(src)


def randomize(net, gen) -> None:
    """Non-degenerate random blobs in our Net, by layer type.

    Convolution / InnerProduct: He-normal weights, biases N(0, 0.01^2). BatchNorm: mean
    N(0, 0.1^2), variance U(0.5, 1.5), factor 1. Scale: gamma 1 + N(0, 0.1^2), beta
    N(0, 0.1^2); the last Scale of each residual branch (``*branch2c``) gets gamma x 0.2
    so fifty layers of residual sums stay O(1).
    """
    with torch.no_grad():
        for name in net.params:
            lay = net.layer_dict[name]
            blobs = list(lay.module.blobs)
            kind = lay.type
            if kind == "BatchNorm":
                blobs[0].copy_(torch.randn(blobs[0].shape, generator=gen) * 0.1)
                blobs[1].copy_(torch.rand(blobs[1].shape, generator=gen) + 0.5)
                blobs[2].fill_(1.0)
            elif kind == "Scale":
                g = 1 + torch.randn(blobs[0].shape, generator=gen) * 0.1
                blobs[0].copy_(g * (0.2 if name.endswith("branch2c") else 1.0))
                for b in blobs[1:]:
                    b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            else:
                w = blobs[0]
                w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / w[0].numel()) ** 0.5)
                for b in blobs[1:]:
                    b.copy_(torch.randn(b.shape, generator=gen) * 0.01)
