"""Real-size InsightFace architectures with random weights, for speed only (``benchmarks/faces.py``).

antelopev2 ships SCRFD-10G (``scrfd_10g_bnkps.onnx``, ~10 GFLOPs at 640x640) and an
ArcFace ResNet-100 (``glintr100.onnx``, ~24 GFLOPs per 112x112 face). Their weights
cannot be downloaded here, but their cost is their shape: these modules rebuild the
shapes (SCRFD-10G: a ResNet-V1e backbone with BasicBlocks (3, 4, 2, 3) of widths
(56, 88, 88, 224), a PAFPN neck to 56 channels and a shared head of three 80-channel
3x3 convs per level, two anchors with box and 5-keypoint outputs; ArcFace-R100: the
IResNet-100 with (3, 13, 30, 3) blocks of (64, 128, 256, 512) channels and a 512-d
embedding), export them to ONNX with the output contract InsightFace routes on, and
``faces.py`` times them through the real ``FaceAnalysis``. Random weights make the
detector's output meaningless, so detections are forced for timing (see faces.py).
"""

from __future__ import annotations

import os
import warnings

STRIDES = (8, 16, 32)


def _torch():
    import torch
    from torch import nn

    return torch, nn


def scrfd_10g():
    torch, nn = _torch()

    def conv_bn(cin, cout, k=3, s=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity(),
                                       nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class SCRFD10G(nn.Module):
        def __init__(self, base=56, blocks=(3, 4, 2, 3), widths=(56, 88, 88, 224), neck=56, head=80, anchors=2):
            super().__init__()
            self.anchors = anchors
            self.stem = nn.Sequential(conv_bn(3, base // 2, s=2), conv_bn(base // 2, base // 2), conv_bn(base // 2, base),
                                      nn.MaxPool2d(3, 2, 1))
            stages, cin = [], base
            for i, (count, width) in enumerate(zip(blocks, widths)):
                layers = [Basic(cin if j == 0 else width, width, (1 if i == 0 else 2) if j == 0 else 1)
                          for j in range(count)]
                stages.append(nn.Sequential(*layers))
                cin = width
            self.stages = nn.ModuleList(stages)
            self.lateral = nn.ModuleList([nn.Conv2d(w, neck, 1) for w in widths[1:]])
            self.smooth = nn.ModuleList([conv_bn(neck, neck) for _ in widths[1:]])
            self.down = nn.ModuleList([conv_bn(neck, neck, s=2) for _ in widths[2:]])
            self.after = nn.ModuleList([conv_bn(neck, neck) for _ in widths[2:]])
            self.tower = nn.Sequential(conv_bn(neck, head), conv_bn(head, head), conv_bn(head, head))
            self.cls = nn.Conv2d(head, anchors, 3, 1, 1)
            self.box = nn.Conv2d(head, anchors * 4, 3, 1, 1)
            self.kps = nn.Conv2d(head, anchors * 10, 3, 1, 1)

        def forward(self, x):
            x = self.stem(x)
            feats = []
            for i, stage in enumerate(self.stages):
                x = stage(x)
                if i >= 1:
                    feats.append(x)
            lat = [layer(f) for layer, f in zip(self.lateral, feats)]
            for i in range(len(lat) - 1, 0, -1):  # top-down
                lat[i - 1] = lat[i - 1] + nn.functional.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
            outs = [conv(level) for conv, level in zip(self.smooth, lat)]
            for i in range(len(outs) - 1):  # bottom-up (PAFPN)
                outs[i + 1] = self.after[i](outs[i + 1] + self.down[i](outs[i]))
            scores, boxes, points = [], [], []
            for level in outs:
                t = self.tower(level)
                flat = lambda y, k: y.permute(0, 2, 3, 1).reshape(-1, k)  # noqa: E731
                scores.append(torch.sigmoid(flat(self.cls(t), 1)))
                boxes.append(flat(self.box(t), 4))
                points.append(flat(self.kps(t), 10))
            return (*scores, *boxes, *points)

    return SCRFD10G()


def arcface_r100():
    torch, nn = _torch()

    class IBasic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                      nn.PReLU(cout), nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return self.body(x) + self.skip(x)

    class IResNet100(nn.Module):
        def __init__(self, blocks=(3, 13, 30, 3), widths=(64, 128, 256, 512), dim=512):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
            layers, cin = [], 64
            for count, width in zip(blocks, widths):
                layers += [IBasic(cin if j == 0 else width, width, 2 if j == 0 else 1) for j in range(count)]
                cin = width
            self.body = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.BatchNorm2d(512), nn.Flatten(), nn.Linear(512 * 7 * 7, dim), nn.BatchNorm1d(dim))

        def forward(self, x):
            return self.head(self.body(self.stem(x)))

    return IResNet100()


def gmacs(module, shape) -> float:
    torch, _ = _torch()
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(torch.zeros(*shape))
    return counter.get_total_flops() / 2e9  # multiply-adds, the unit papers quote


def write_real_size_pack(folder: str) -> str:
    """SCRFD-10G + ArcFace-R100 with random weights as an InsightFace pack folder."""
    torch, _ = _torch()
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    names = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in STRIDES]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(scrfd_10g().eval(), (torch.zeros(1, 3, 640, 640),), os.path.join(folder, "scrfd_10g_bnkps.onnx"),
                          input_names=["input.1"], output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={"input.1": {2: "height", 3: "width"}})
        torch.onnx.export(arcface_r100().eval(), (torch.zeros(1, 3, 112, 112),), os.path.join(folder, "glintr100.onnx"),
                          input_names=["input.1"], output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}})
    return folder
