"""Fork-layer nets for the tests, written with pipeline.netspec after the published architectures.

- ``ssd300_vgg16()``: SSD300 on VGG16 for VOC (21 classes) as weiliu89/caffe's
  ``examples/ssd/ssd_pascal.py`` writes its deploy net: reduced VGG16 with pool5
  3x3/1 and the dilated fc6, extra layers conv6_1 .. conv9_2, conv4_3_norm
  (Normalize, scale 20), six heads with priors min 30/60/111/162/213/264, max
  60/111/162/213/264/315, steps 8/16/32/64/100/300, aspect ratios [2], [2, 3] x 3,
  [2], [2] (8732 priors); DetectionOutput with NMS 0.45, top_k 400, keep_top_k
  200, confidence 0.01, CENTER_SIZE.
- ``mobilenet_ssd()``: chuanqi305/MobileNet-SSD's deploy net (``gen.py -s deploy
  -c 21``): MobileNet v1 (depthwise 3x3 convolutions with group = channels, batch
  norm merged into biases), extra layers conv14_1 .. conv17_2, heads on conv11,
  conv13, conv14_2 .. conv17_2 with 1x1 convolutions, priors 60 (aspect ratio 2,
  no max), then 105/150, 150/195, 195/240, 240/285, 285/300 with ratios 2 and 3
  (1917 priors); DetectionOutput with NMS 0.45, top_k 100, keep_top_k 100,
  confidence 0.25.
- ``se_resnet_tiny()``: SE-ResNet blocks as hujie-frank/SENet writes them (BatchNorm
  + Scale, global AVE pooling, 1x1 down/up, Sigmoid, Axpy onto the shortcut).
- ``densenet_tiny(ceil_mode)``: a DenseNet stem and dense block as shicai/DenseNet-Caffe
  writes them, pooling with the fork's ``ceil_mode``.

``write_all(folder)`` writes them as prototxt files (tests/data_nets/*.prototxt
are this output; a test checks they are current).
"""

from __future__ import annotations

from pathlib import Path

from pipeline import layers as L
from pipeline import params as P
from pipeline.formats import prototxt
from pipeline.netspec import NetSpec

XAVIER = dict(type="xavier")
MSRA = dict(type="msra")
ZERO = dict(type="constant", value=0)
LR = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def _conv(n, name, bottom, num, kernel, pad=0, stride=1, dilation=1, group=1, filler=XAVIER):
    kw = dict(num_output=num, kernel_size=kernel, pad=pad, stride=stride, weight_filler=filler,
              bias_filler=ZERO, param=LR)
    if dilation > 1:
        kw["dilation"] = dilation
    if group > 1:
        kw.update(group=group, engine=P.Convolution.CAFFE)
    n[name] = L.Convolution(bottom, **kw)
    return n[name]


def _conv_relu(n, name, bottom, num, kernel, relu_name=None, **kw):
    top = _conv(n, name, bottom, num, kernel, **kw)
    n[relu_name or f"{name}/relu"] = L.ReLU(top, in_place=True)
    return top


def _head(n, source, name, priors_per_cell, classes, kernel, pad, prior_kw, data, filler):
    """SSD's CreateMultiBoxHead for one source: loc and conf convs, permute, flatten, priors."""
    out = {}
    for kind, num in (("loc", priors_per_cell * 4), ("conf", priors_per_cell * classes)):
        conv = f"{name}_mbox_{kind}"
        _conv(n, conv, source, num, kernel, pad=pad, filler=filler)
        n[f"{conv}_perm"] = L.Permute(n[conv], order=[0, 2, 3, 1])
        n[f"{conv}_flat"] = L.Flatten(n[f"{conv}_perm"], axis=1)
        out[kind] = n[f"{conv}_flat"]
    n[f"{name}_mbox_priorbox"] = L.PriorBox(source, data, **prior_kw)
    out["prior"] = n[f"{name}_mbox_priorbox"]
    return out


def _predict(n, heads, classes, detection):
    n.mbox_loc = L.Concat(*[h["loc"] for h in heads], axis=1)
    n.mbox_conf = L.Concat(*[h["conf"] for h in heads], axis=1)
    n.mbox_priorbox = L.Concat(*[h["prior"] for h in heads], axis=2)
    n.mbox_conf_reshape = L.Reshape(n.mbox_conf, shape=dict(dim=[0, -1, classes]))
    n.mbox_conf_softmax = L.Softmax(n.mbox_conf_reshape, axis=2)
    n.mbox_conf_flatten = L.Flatten(n.mbox_conf_softmax, axis=1)
    n.detection_out = L.DetectionOutput(
        n.mbox_loc, n.mbox_conf_flatten, n.mbox_priorbox,
        detection_output_param=dict(num_classes=classes, share_location=True, background_label_id=0,
                                    code_type="CENTER_SIZE", **detection))


def ssd300_vgg16(classes: int = 21):
    """SSD300 VGG16 deploy net (see the module docstring)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 300, 300]))
    x = n.data
    for stage, (num, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for k in range(1, convs + 1):
            x = _conv_relu(n, f"conv{stage}_{k}", x, num, 3, relu_name=f"relu{stage}_{k}", pad=1)
        if stage < 5:
            n[f"pool{stage}"] = L.Pooling(x, pool="MAX", kernel_size=2, stride=2)
        else:
            n.pool5 = L.Pooling(x, pool="MAX", kernel_size=3, stride=1, pad=1)
        x = n[f"pool{stage}"]
    fc6 = _conv_relu(n, "fc6", x, 1024, 3, relu_name="relu6", pad=6, dilation=6)
    fc7 = _conv_relu(n, "fc7", fc6, 1024, 1, relu_name="relu7")
    x, sources = fc7, {"fc7": fc7}
    for name, (num1, num2, pad, stride) in {"conv6": (256, 512, 1, 2), "conv7": (128, 256, 1, 2),
                                             "conv8": (128, 256, 0, 1), "conv9": (128, 256, 0, 1)}.items():
        x = _conv_relu(n, f"{name}_1", x, num1, 1, relu_name=f"{name}_1_relu")
        x = _conv_relu(n, f"{name}_2", x, num2, 3, relu_name=f"{name}_2_relu", pad=pad, stride=stride)
        sources[f"{name}_2"] = x
    n.conv4_3_norm = L.Normalize(n.conv4_3, across_spatial=False, channel_shared=False,
                                 scale_filler=dict(type="constant", value=20))
    spec = [("conv4_3_norm", n.conv4_3_norm, 30, 60, [2], 8), ("fc7", fc7, 60, 111, [2, 3], 16),
            ("conv6_2", sources["conv6_2"], 111, 162, [2, 3], 32),
            ("conv7_2", sources["conv7_2"], 162, 213, [2, 3], 64),
            ("conv8_2", sources["conv8_2"], 213, 264, [2], 100),
            ("conv9_2", sources["conv9_2"], 264, 315, [2], 300)]
    heads = []
    for name, src, mn, mx, ars, step in spec:
        per_cell = 2 + 2 * len(ars)
        heads.append(_head(n, src, name, per_cell, classes, 3, 1,
                           dict(min_size=mn, max_size=mx, aspect_ratio=ars, flip=True, clip=False,
                                variance=[0.1, 0.1, 0.2, 0.2], step=step, offset=0.5), n.data, XAVIER))
    _predict(n, heads, classes, dict(nms_param=dict(nms_threshold=0.45, top_k=400), keep_top_k=200,
                                     confidence_threshold=0.01))
    net = n.to_proto()
    net.name = "VGG_VOC0712_SSD_300x300_deploy"
    return net


def mobilenet_ssd(classes: int = 21):
    """chuanqi305/MobileNet-SSD deploy net (see the module docstring)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 300, 300]))
    x = _conv_relu(n, "conv0", n.data, 32, 3, pad=1, stride=2, filler=MSRA)
    for k, (inp, outp, stride) in enumerate([(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2),
                                             (256, 256, 1), (256, 512, 2), (512, 512, 1), (512, 512, 1),
                                             (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 1024, 2),
                                             (1024, 1024, 1)], start=1):
        x = _conv_relu(n, f"conv{k}/dw", x, inp, 3, pad=1, stride=stride, group=inp, filler=MSRA)
        x = _conv_relu(n, f"conv{k}", x, outp, 1, filler=MSRA)
    sources = {"conv11": n.conv11, "conv13": n.conv13}
    for k, (num1, num2) in zip(range(14, 18), [(256, 512), (128, 256), (128, 256), (64, 128)]):
        x = _conv_relu(n, f"conv{k}_1", x, num1, 1, filler=MSRA)
        x = _conv_relu(n, f"conv{k}_2", x, num2, 3, pad=1, stride=2, filler=MSRA)
        sources[f"conv{k}_2"] = x
    sizes = [(60, None), (105, 150), (150, 195), (195, 240), (240, 285), (285, 300)]
    heads = []
    for (name, src), (mn, mx) in zip(sources.items(), sizes):
        ars = [2.0] if mx is None else [2.0, 3.0]
        prior = dict(min_size=mn, aspect_ratio=ars, flip=True, clip=False,
                     variance=[0.1, 0.1, 0.2, 0.2], offset=0.5)
        if mx is not None:
            prior["max_size"] = mx
        per_cell = 1 + 2 * len(ars) + (mx is not None)
        heads.append(_head(n, src, name, per_cell, classes, 1, 0, prior, n.data, MSRA))
    _predict(n, heads, classes, dict(nms_param=dict(nms_threshold=0.45, top_k=100), keep_top_k=100,
                                     confidence_threshold=0.25))
    net = n.to_proto()
    net.name = "MobileNet-SSD"
    return net


def _bn_scale(n, name, bottom):
    n[f"{name}/bn"] = L.BatchNorm(bottom, in_place=True, batch_norm_param=dict(use_global_stats=True))
    n[f"{name}/bn/scale"] = L.Scale(bottom, in_place=True, bias_term=True)


def se_resnet_tiny():
    """Two SE-ResNet bottleneck blocks (SE-ResNet-50's conv2_1 and conv2_2 at 1/4 width)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 32, 32]))
    n["conv1"] = L.Convolution(n.data, num_output=16, kernel_size=7, pad=3, stride=2, bias_term=False,
                               weight_filler=MSRA)
    _bn_scale(n, "conv1", n["conv1"])
    n["conv1/relu"] = L.ReLU(n["conv1"], in_place=True)
    n["pool1"] = L.Pooling(n["conv1"], pool="MAX", kernel_size=3, stride=2)
    shortcut = n["pool1"]
    for block in ("conv2_1", "conv2_2"):
        x = shortcut
        for part, num, k, pad in (("1x1_reduce", 16, 1, 0), ("3x3", 16, 3, 1), ("1x1_increase", 64, 1, 0)):
            name = f"{block}_{part}"
            n[name] = L.Convolution(x, num_output=num, kernel_size=k, pad=pad, bias_term=False,
                                    weight_filler=MSRA)
            _bn_scale(n, name, n[name])
            if part != "1x1_increase":
                n[f"{name}/relu"] = L.ReLU(n[name], in_place=True)
            x = n[name]
        n[f"{block}_global_pool"] = L.Pooling(x, pool="AVE", global_pooling=True)
        n[f"{block}_1x1_down"] = L.Convolution(n[f"{block}_global_pool"], num_output=4, kernel_size=1,
                                               weight_filler=MSRA)
        n[f"{block}_1x1_down/relu"] = L.ReLU(n[f"{block}_1x1_down"], in_place=True)
        n[f"{block}_1x1_up"] = L.Convolution(n[f"{block}_1x1_down"], num_output=64, kernel_size=1,
                                             weight_filler=MSRA)
        n[f"{block}_prob"] = L.Sigmoid(n[f"{block}_1x1_up"], in_place=True)
        if block == "conv2_1":
            n["conv2_1_1x1_proj"] = L.Convolution(shortcut, num_output=64, kernel_size=1, bias_term=False,
                                                  weight_filler=MSRA)
            _bn_scale(n, "conv2_1_1x1_proj", n["conv2_1_1x1_proj"])
            shortcut = n["conv2_1_1x1_proj"]
        n[block] = L.Axpy(n[f"{block}_1x1_up"], x, shortcut)
        n[f"{block}/relu"] = L.ReLU(n[block], in_place=True)
        shortcut = n[block]
    n.pool5 = L.Pooling(shortcut, pool="AVE", global_pooling=True)
    n.fc = L.InnerProduct(n.pool5, num_output=10, weight_filler=MSRA)
    n.prob = L.Softmax(n.fc)
    net = n.to_proto()
    net.name = "SE-ResNet-tiny"
    return net


def densenet_tiny(ceil_mode: bool = False):
    """DenseNet-121's stem, one 2-layer dense block and a transition, at 1/4 width."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 57, 57]))
    n.conv1 = L.Convolution(n.data, num_output=16, kernel_size=7, pad=3, stride=2, bias_term=False,
                            weight_filler=MSRA)
    _bn_scale(n, "conv1", n.conv1)
    n["relu1"] = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.conv1, pool="MAX", kernel_size=3, stride=2, pad=1, ceil_mode=ceil_mode)
    x = n.pool1
    for k in (1, 2):
        name = f"conv2_{k}"
        n[f"{name}/x1/bn"] = L.BatchNorm(x, batch_norm_param=dict(use_global_stats=True))
        n[f"{name}/x1/scale"] = L.Scale(n[f"{name}/x1/bn"], in_place=True, bias_term=True)
        n[f"relu{name[4:]}/x1"] = L.ReLU(n[f"{name}/x1/bn"], in_place=True)
        n[f"{name}/x1"] = L.Convolution(n[f"{name}/x1/bn"], num_output=32, kernel_size=1, bias_term=False,
                                        weight_filler=MSRA)
        n[f"{name}/x2"] = L.Convolution(n[f"{name}/x1"], num_output=8, kernel_size=3, pad=1,
                                        bias_term=False, weight_filler=MSRA)
        n[f"concat_2_{k}"] = L.Concat(x, n[f"{name}/x2"])
        x = n[f"concat_2_{k}"]
    n["conv2_blk"] = L.Convolution(x, num_output=16, kernel_size=1, bias_term=False, weight_filler=MSRA)
    n.pool2 = L.Pooling(n["conv2_blk"], pool="AVE", kernel_size=2, stride=2, ceil_mode=ceil_mode)
    net = n.to_proto()
    net.name = "DenseNet-tiny"
    return net


NETS = {"ssd300_vgg16_deploy": ssd300_vgg16, "mobilenet_ssd_deploy": mobilenet_ssd,
        "se_resnet_tiny": se_resnet_tiny, "densenet_tiny_ceil_false": densenet_tiny}


def write_all(folder) -> list[Path]:
    """Write every net as ``<folder>/<name>.prototxt``; returns the paths."""
    paths = []
    for name, build in NETS.items():
        path = Path(folder) / f"{name}.prototxt"
        prototxt.write_text(build(), path)
        paths.append(path)
    return paths


if __name__ == "__main__":  # regenerate the checked-in files: python tests/data_nets/fork_nets.py
    for p in write_all(Path(__file__).parent):
        print(p)
