"""The model zoo in ``models/``: every net builds, has the published shapes and sizes, and trains
with a solver that parses.

Expected values come from the papers and the official Caffe releases, written out here
independently of the prototxts: each net's parameter blobs ``{layer: [shape, ...]}`` are
rebuilt from the papers' tables (so published ``.caffemodel`` files, which load by layer name,
fit), their sum is compared with the published total, and the nets BVLC ships in
``../shared/caffe-zoo`` are run side by side with ours on the same weights.

Data layers are replaced by Input layers of the shapes they would produce (test_zoo_nets's
``stub_data_layers``), as the LMDBs are not part of the repository. Big nets are built once per
model (module-scoped, parametrised fixture) and run forward at batch 1 only.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import numpy as np
import pytest
from test_zoo_nets import IMAGE_SHAPES, stub_data_layers

import pipeline as caffe
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
NAMES = ["lenet", "cifar10_quick", "caffenet", "alexnet", "googlenet", "vgg16", "resnet50", "squeezenet"]
IMAGENET = {"caffenet", "alexnet", "googlenet", "vgg16", "resnet50", "squeezenet"}


# ----------------------------------------------------------------- the published nets, from the papers
def _conv(cin, cout, k, group=1, bias=True):
    """Caffe's Convolution blobs: weight (cout, cin/group, k, k), bias (cout,)."""
    return [(cout, cin // group, k, k), (cout,)] if bias else [(cout, cin // group, k, k)]


def _fc(cin, cout):
    """InnerProduct blobs: weight (cout, cin), bias (cout,)."""
    return [(cout, cin), (cout,)]


def _lenet():
    return {"conv1": _conv(1, 20, 5), "conv2": _conv(20, 50, 5), "ip1": _fc(50 * 4 * 4, 500), "ip2": _fc(500, 10)}


def _cifar10_quick():
    return {"conv1": _conv(3, 32, 5), "conv2": _conv(32, 32, 5), "conv3": _conv(32, 64, 5),
            "ip1": _fc(64 * 4 * 4, 64), "ip2": _fc(64, 10)}


def _alexnet():
    """Krizhevsky et al. 2012, fig. 2: conv2, conv4, conv5 split over two GPUs (group 2)."""
    return {"conv1": _conv(3, 96, 11), "conv2": _conv(96, 256, 5, group=2), "conv3": _conv(256, 384, 3),
            "conv4": _conv(384, 384, 3, group=2), "conv5": _conv(384, 256, 3, group=2),
            "fc6": _fc(256 * 6 * 6, 4096), "fc7": _fc(4096, 4096), "fc8": _fc(4096, 1000)}


# Szegedy et al. 2015, table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), ("4a", 192, 96, 208, 16, 48, 64),
             ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
             ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
             ("5b", 384, 192, 384, 48, 128, 128)]


def _googlenet(aux=False):
    p = {"conv1/7x7_s2": _conv(3, 64, 7), "conv2/3x3_reduce": _conv(64, 64, 1), "conv2/3x3": _conv(64, 192, 3)}
    cin, widths = 192, {}
    for tag, c1, r3, c3, r5, c5, pp in INCEPTION:
        m = f"inception_{tag}/"
        p.update({m + "1x1": _conv(cin, c1, 1), m + "3x3_reduce": _conv(cin, r3, 1), m + "3x3": _conv(r3, c3, 3),
                  m + "5x5_reduce": _conv(cin, r5, 1), m + "5x5": _conv(r5, c5, 5), m + "pool_proj": _conv(cin, pp, 1)})
        cin = widths[tag] = c1 + c3 + c5 + pp
    p["loss3/classifier"] = _fc(1024, 1000)
    if aux:  # auxiliary classifiers on 4a and 4d: 5x5/3 average pool of 14x14 -> 4x4
        for k, tag in ((1, "4a"), (2, "4d")):
            p.update({f"loss{k}/conv": _conv(widths[tag], 128, 1), f"loss{k}/fc": _fc(128 * 4 * 4, 1024),
                      f"loss{k}/classifier": _fc(1024, 1000)})
    return p


def _vgg16():
    """Simonyan & Zisserman 2015, table 1, configuration D."""
    p, cin = {}, 3
    for stage, (width, reps) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for r in range(1, reps + 1):
            p[f"conv{stage}_{r}"] = _conv(cin, width, 3)
            cin = width
    p.update({"fc6": _fc(512 * 7 * 7, 4096), "fc7": _fc(4096, 4096), "fc8": _fc(4096, 1000)})
    return p


def _resnet50():
    """He et al. 2016, table 1 (50-layer), with Kaiming He's Caffe names: conv1 has a bias, the
    other convolutions none; each is followed by BatchNorm (mean, variance, normaliser) and Scale
    with bias."""
    def bn(suffix, c):
        return {f"bn{suffix}": [(c,), (c,), (1,)], f"scale{suffix}": [(c,), (c,)]}

    p = {"conv1": _conv(3, 64, 7), **bn("_conv1", 64)}
    cin = 64
    for stage, width, blocks in [(2, 64, 3), (3, 128, 4), (4, 256, 6), (5, 512, 3)]:
        for i in range(blocks):
            tag = f"{stage}{'abcdef'[i]}"
            if i == 0:
                p.update({f"res{tag}_branch1": _conv(cin, 4 * width, 1, bias=False), **bn(f"{tag}_branch1", 4 * width)})
            for br, ci, co, k in (("2a", cin, width, 1), ("2b", width, width, 3), ("2c", width, 4 * width, 1)):
                p.update({f"res{tag}_branch{br}": _conv(ci, co, k, bias=False), **bn(f"{tag}_branch{br}", co)})
            cin = 4 * width
    p["fc1000"] = _fc(2048, 1000)
    return p


def _squeezenet():
    """DeepScale's v1.1: Fire modules (squeeze, expand) of fire2..fire9."""
    fires = [(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)]
    p, cin = {"conv1": _conv(3, 64, 3)}, 64
    for f, (sq, ex) in enumerate(fires, start=2):
        m = f"fire{f}/"
        p.update({m + "squeeze1x1": _conv(cin, sq, 1), m + "expand1x1": _conv(sq, ex, 1),
                  m + "expand3x3": _conv(sq, ex, 3)})
        cin = 2 * ex
    p["conv10"] = _conv(512, 1000, 1)
    return p


PUBLISHED_PARAMS = {"lenet": _lenet, "cifar10_quick": _cifar10_quick, "caffenet": _alexnet, "alexnet": _alexnet,
                    "googlenet": _googlenet, "vgg16": _vgg16, "resnet50": _resnet50, "squeezenet": _squeezenet}

# Published parameter totals of the deploy nets (BatchNorm statistics not counted).
PUBLISHED_COUNT = {
    "lenet": 431_080,            # no published total: conv1 520 + conv2 25,050 + ip1 400,500 + ip2 5,010
    "cifar10_quick": 145_578,    # no published total: 2,432 + 25,632 + 51,264 + 65,600 + 650
    "caffenet": 60_965_224,      # BVLC CaffeNet/AlexNet with grouped convolutions
    "alexnet": 60_965_224,
    "googlenet": 6_998_552,      # BVLC deploy (no auxiliary classifiers)
    "vgg16": 138_357_544,        # configuration D ("138M", Simonyan & Zisserman table 2)
    "resnet50": 25_557_032 + 64,  # the usual 25,557,032 (conv + fc + BN scale/shift) + conv1's 64 biases
    "squeezenet": 1_235_496,     # SqueezeNet v1.1
}
BN_STATISTICS = {"resnet50": 2 * 26_560 + 53}  # mean + variance per channel, one normaliser per BatchNorm

# Deploy output shapes, from the published architectures (deploy batch in the first axis).
DEPLOY_SHAPES = {
    "lenet": {"prob": (64, 10), "pool2": (64, 50, 4, 4)},
    "cifar10_quick": {"prob": (1, 10), "pool3": (1, 64, 4, 4)},
    "caffenet": {"prob": (10, 1000), "conv1": (10, 96, 55, 55), "norm2": (10, 256, 13, 13), "pool5": (10, 256, 6, 6)},
    "alexnet": {"prob": (10, 1000), "norm1": (10, 96, 55, 55), "pool2": (10, 256, 13, 13), "pool5": (10, 256, 6, 6)},
    "googlenet": {"prob": (10, 1000), "inception_3a/output": (10, 256, 28, 28),
                  "inception_4e/output": (10, 832, 14, 14), "inception_5b/output": (10, 1024, 7, 7),
                  "pool5/7x7_s1": (10, 1024, 1, 1)},
    "vgg16": {"prob": (10, 1000), "conv1_2": (10, 64, 224, 224), "pool5": (10, 512, 7, 7), "fc6": (10, 4096)},
    "resnet50": {"prob": (10, 1000), "conv1": (10, 64, 112, 112), "pool1": (10, 64, 56, 56),
                 "res2c": (10, 256, 56, 56), "res3d": (10, 512, 28, 28), "res4f": (10, 1024, 14, 14),
                 "res5c": (10, 2048, 7, 7), "pool5": (10, 2048, 1, 1)},
    # Caffe's SqueezeNet classifier is a global pooling: prob stays 4-D, as in DeepScale's release.
    "squeezenet": {"prob": (10, 1000, 1, 1), "conv1": (10, 64, 113, 113), "pool1": (10, 64, 56, 56),
                   "fire9/concat": (10, 512, 14, 14), "pool10": (10, 1000, 1, 1)},
}
SCORES = {"lenet": "ip2", "cifar10_quick": "ip2", "caffenet": "fc8", "alexnet": "fc8",
          "googlenet": "loss3/classifier", "vgg16": "fc8", "resnet50": "fc1000", "squeezenet": "pool10"}

# BVLC's own files for the nets they released (../shared/caffe-zoo/BVLC__caffe).
BVLC_DEPLOY = {"lenet": "examples/mnist/lenet.prototxt", "cifar10_quick": "examples/cifar10/cifar10_quick.prototxt",
               "caffenet": "models/bvlc_reference_caffenet/deploy.prototxt",
               "alexnet": "models/bvlc_alexnet/deploy.prototxt", "googlenet": "models/bvlc_googlenet/deploy.prototxt"}


def _count(shapes) -> int:
    return sum(math.prod(s) for blobs in shapes.values() for s in blobs)


def _param_shapes(net) -> dict:
    return {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}


def _stub(name, batch=None) -> caffe_pb2.NetParameter:
    """train_val with its Data layers as Input layers (digits: 1x28x28 like MNIST)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(IMAGE_SHAPES, "digits", (1, 28, 28))
        net = stub_data_layers(prototxt.read_net(MODELS / name / "train_val.prototxt"))
    if batch is not None:
        for lp in net.layer:
            if lp.type == "Input":
                for s in lp.input_param.shape:
                    s.dim[0] = batch
    return net


def _randomise(net, seed=0) -> None:
    """He-scaled random weights (so activations stay finite through deep nets); BatchNorm
    statistics of a unit-ish distribution with normaliser 1. Drawn in place, in float32."""
    rng = np.random.default_rng(seed)
    kinds = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            d = b.data
            if kinds[name] == "BatchNorm":
                d[...] = [rng.normal(0, 0.1, d.shape), rng.uniform(0.5, 1.5, d.shape), 1.0][i]
            elif kinds[name] == "Scale":
                d[...] = rng.uniform(0.5, 1.5, d.shape) if i == 0 else rng.normal(0, 0.1, d.shape)
            else:
                rng.standard_normal(out=d, dtype=np.float32)
                d *= math.sqrt(2.0 / math.prod(d.shape[1:])) if d.ndim > 1 else 0.01


class Zoo:
    """One model's deploy net (randomised weights) and its train_val TEST net, built once."""

    def __init__(self, name):
        self.name = name
        self.deploy = caffe.Net(str(MODELS / name / "deploy.prototxt"), caffe.TEST)
        self.deploy_shapes = {b: blob.data.shape for b, blob in self.deploy.blobs.items()}  # before any forward
        self._test = None
        self._random = False

    def randomised(self):
        """The deploy net with random weights (drawn on first use)."""
        if not self._random:
            _randomise(self.deploy)
            self._random = True
        return self.deploy

    @property
    def test_net(self):
        if self._test is None:
            self._test = caffe.Net(_stub(self.name), caffe.TEST)
            self.test_data_shape = self._test.blobs["data"].data.shape
        return self._test

    def image(self, seed=1):
        shape = (1,) + tuple(self.deploy.blobs["data"].data.shape[1:])
        return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# Forward passes of VGG16 (15 GFLOP at batch 1, twice) are slow on CI's cores.
FORWARD = [pytest.param(n, marks=pytest.mark.slow) if n == "vgg16" else n for n in NAMES]


@pytest.fixture(scope="module", params=NAMES)
def zoo(request):
    z = Zoo(request.param)
    yield z
    del z.deploy, z._test
    gc.collect()  # nets hold reference cycles: free the big ones before the next model


# ----------------------------------------------------------------- deploy nets
def test_deploy_shapes_equal_published(zoo):
    net = zoo.deploy
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    for blob, shape in DEPLOY_SHAPES[zoo.name].items():
        assert zoo.deploy_shapes[blob] == shape, blob
    types = [layer.type for layer in net.layers]
    assert types[0] == "Input" and types[-1] == "Softmax"
    assert not {"Data", "SoftmaxWithLoss", "Accuracy"} & set(types)


def test_deploy_params_equal_published(zoo):
    """Layer names and blob shapes are the published ones, so released .caffemodels load by name."""
    expected = PUBLISHED_PARAMS[zoo.name]()
    assert _param_shapes(zoo.deploy) == expected
    assert _count(expected) == PUBLISHED_COUNT[zoo.name] + BN_STATISTICS.get(zoo.name, 0)


def test_deploy_param_count(zoo):
    """Sum of p.numel() over net.learnable_params; BatchNorm statistics are learnable_params
    with lr_mult 0 and are counted separately."""
    net = zoo.deploy
    total = sum(p.numel() for p in net.learnable_params)
    bn_layers = [n for n, layer in zip(net._layer_names, net.layers) if layer.type == "BatchNorm"]
    stats = sum(b.count for n in bn_layers for b in net.params[n])
    assert total - stats == PUBLISHED_COUNT[zoo.name]
    assert stats == BN_STATISTICS.get(zoo.name, 0)
    assert sum(p.numel() for p, lr in zip(net.learnable_params, net.lr_mults) if lr == 0) == stats


@pytest.mark.parametrize("zoo", FORWARD, indirect=True)
def test_deploy_forward_batch1_is_softmax_of_scores(zoo):
    net = zoo.randomised()
    out = net.forward(data=zoo.image(), blobs=[SCORES[zoo.name]])
    scores = out[SCORES[zoo.name]].astype(np.float64).reshape(1, -1)
    assert np.isfinite(scores).all() and scores.std() > 0
    ref = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(out["prob"].reshape(1, -1), ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("zoo", sorted(BVLC_DEPLOY), indirect=True)
def test_bvlc_release_matches(zoo, caffe_zoo):
    """Our deploy net equals BVLC's file: same layers, same blobs, same outputs on the same weights."""
    theirs = caffe.Net(str(caffe_zoo / "BVLC__caffe" / BVLC_DEPLOY[zoo.name]), caffe.TEST)
    ours = zoo.randomised()
    assert [(n, lay.type) for n, lay in zip(theirs._layer_names, theirs.layers) if lay.type != "Input"] == \
           [(n, lay.type) for n, lay in zip(ours._layer_names, ours.layers) if lay.type != "Input"]
    assert _param_shapes(theirs) == _param_shapes(ours)
    theirs.share_with(ours)
    x = zoo.image()
    np.testing.assert_array_equal(theirs.forward(data=x)["prob"], ours.forward(data=x)["prob"])


# ----------------------------------------------------------------- train_val nets
def _data_layers(name):
    net = prototxt.read_net(MODELS / name / "train_val.prototxt")
    data = {lp.include[0].phase: lp for lp in net.layer if lp.type == "Data"}
    assert len(data) == 2 and len([lp for lp in net.layer if lp.type == "Data"]) == 2
    return net, data


@pytest.mark.parametrize("name", NAMES)
def test_train_val_data_layers(name):
    net, data = _data_layers(name)
    train, test = data[caffe.TRAIN], data[caffe.TEST]
    for lp in (train, test):
        assert list(lp.top) == ["data", "label"] and lp.data_param.backend == caffe_pb2.DataParameter.LMDB
        assert not lp.transform_param.mean_file
    if name == "lenet":
        assert (train.data_param.source, test.data_param.source) == ("data/digits/train_lmdb", "data/digits/test_lmdb")
        assert train.transform_param.scale == test.transform_param.scale == np.float32(0.00390625)
        assert not train.transform_param.mean_value and not train.transform_param.crop_size
    elif name == "cifar10_quick":
        assert list(train.transform_param.mean_value) == pytest.approx([125.3, 123.0, 113.9])  # R, G, B
    else:
        crop = 227 if name in ("caffenet", "alexnet", "squeezenet") else 224
        mean = [103.939, 116.779, 123.68] if name == "vgg16" else [104, 117, 123]  # B, G, R
        assert train.data_param.source == "examples/imagenet/ilsvrc12_train_lmdb"
        assert test.data_param.source == "examples/imagenet/ilsvrc12_val_lmdb"
        for lp, mirror in ((train, True), (test, False)):
            t = lp.transform_param
            assert (t.crop_size, t.mirror, t.scale) == (crop, mirror, 1)
            assert list(t.mean_value) == pytest.approx(mean)
    if name == "resnet50":
        assert not any(lp.batch_norm_param.HasField("use_global_stats") for lp in net.layer)


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST], ids=["TRAIN", "TEST"])
def test_train_val_builds(zoo, phase):
    _, data = _data_layers(zoo.name)
    if phase == caffe.TEST:
        net = zoo.test_net
        shape = zoo.test_data_shape  # as built (a forward at batch 1 may have reshaped it since)
    else:
        net = caffe.Net(_stub(zoo.name), caffe.TRAIN)
        shape = net.blobs["data"].data.shape
    lp = data[phase]
    c, h, w = (1, 28, 28) if zoo.name == "lenet" else (3, 32, 32) if zoo.name == "cifar10_quick" else (3, 0, 0)
    h = w = lp.transform_param.crop_size or h
    assert shape == (lp.data_param.batch_size, c, h, w)
    losses = [n for n, layer in zip(net._layer_names, net.layers) if layer.type == "SoftmaxWithLoss"]
    accs = {n: net.layer_dict[n] for n, layer in zip(net._layer_names, net.layers) if layer.type == "Accuracy"}
    heads = 3 if zoo.name == "googlenet" else 1
    assert len(losses) == heads
    if phase == caffe.TRAIN:
        assert not accs and len(net.outputs) == heads
    else:
        assert len(accs) == heads * (2 if zoo.name in IMAGENET else 1)
        assert set(net.outputs) == {t for n in losses + list(accs) for t in net.top_names[n]}
    if zoo.name == "googlenet":
        assert net.blob_loss_weights["loss1/loss1"] == net.blob_loss_weights["loss2/loss2"] == pytest.approx(0.3)
    bn = [layer for layer in net.layers if layer.type == "BatchNorm"]
    assert len(bn) == (53 if zoo.name == "resnet50" else 0)
    assert all(layer.module.use_global_stats == (phase == caffe.TEST) for layer in bn)  # Caffe's phase default
    del net


@pytest.mark.parametrize("zoo", FORWARD, indirect=True)
def test_train_val_computes_what_deploy_computes(zoo):
    """Sharing the deploy net's weights by name, the TEST net gives the same class scores."""
    net = zoo.test_net
    deploy = zoo.randomised()
    deploy_params = _param_shapes(deploy)
    expected = PUBLISHED_PARAMS[zoo.name](aux=True) if zoo.name == "googlenet" else PUBLISHED_PARAMS[zoo.name]()
    assert _param_shapes(net) == expected and set(deploy_params) <= set(expected)
    net.share_with(deploy)
    x = zoo.image(seed=2)
    scores = SCORES[zoo.name]
    net.blobs["data"].reshape(*x.shape)
    net.blobs["label"].reshape(1)
    ours = net.forward(data=x, label=np.zeros(1, np.float32), blobs=[scores])[scores]
    ref = deploy.forward(data=x, blobs=[scores])[scores]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_lenet_weights_round_trip(tmp_path):
    """A trained LeNet saved from train_val loads into deploy by name (what the main job does)."""
    train = caffe.Net(_stub("lenet"), caffe.TRAIN)
    _randomise(train, seed=3)
    path = tmp_path / "lenet.caffemodel"
    train.save(str(path))
    deploy = caffe.Net(str(MODELS / "lenet/deploy.prototxt"), str(path), caffe.TEST)
    for name, blobs in train.params.items():
        for a, b in zip(blobs, deploy.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


# ----------------------------------------------------------------- solvers
# (field: value) from the published schedules; lr values as float32 like the proto.
SCHEDULES = {
    "lenet": {"base_lr": 0.01, "lr_policy": "inv", "gamma": 1e-4, "power": 0.75, "momentum": 0.9,
              "weight_decay": 5e-4, "max_iter": 1400, "test_iter": [5], "test_interval": 200},  # 500 real digits
    "cifar10_quick": {"base_lr": 0.001, "lr_policy": "multistep", "gamma": 0.1, "stepvalue": [4000],
                      "momentum": 0.9, "weight_decay": 0.004, "max_iter": 5000, "test_iter": [100],
                      "snapshot": 4000},
    "caffenet": {"base_lr": 0.01, "lr_policy": "step", "gamma": 0.1, "stepsize": 100_000, "momentum": 0.9,
                 "weight_decay": 5e-4, "max_iter": 450_000, "test_iter": [1000]},
    "alexnet": {"base_lr": 0.01, "lr_policy": "step", "gamma": 0.1, "stepsize": 100_000, "momentum": 0.9,
                "weight_decay": 5e-4, "max_iter": 450_000, "test_iter": [1000]},
    "googlenet": {"base_lr": 0.01, "lr_policy": "poly", "power": 0.5, "momentum": 0.9, "weight_decay": 2e-4,
                  "max_iter": 2_400_000, "test_iter": [1000]},
    "vgg16": {"base_lr": 0.01, "lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100_000, 200_000, 300_000],
              "momentum": 0.9, "weight_decay": 5e-4, "max_iter": 370_000, "iter_size": 4, "test_iter": [1000]},
    "resnet50": {"base_lr": 0.1, "lr_policy": "multistep", "gamma": 0.1, "stepvalue": [150_000, 300_000, 450_000],
                 "momentum": 0.9, "weight_decay": 1e-4, "max_iter": 600_000, "iter_size": 8, "test_iter": [1000]},
    "squeezenet": {"base_lr": 0.04, "lr_policy": "poly", "power": 1.0, "momentum": 0.9, "weight_decay": 2e-4,
                   "max_iter": 170_000, "iter_size": 16, "random_seed": 42, "test_iter": [2000]},
}
# Effective training batch (batch_size x iter_size) and test-set size, as published.
BATCH = {"lenet": 64, "cifar10_quick": 100, "caffenet": 256, "alexnet": 256, "googlenet": 32, "vgg16": 256,
         "resnet50": 256, "squeezenet": 512}
TEST_SET = {"lenet": 500, "cifar10_quick": 10_000}  # lenet: the main job's 500 test digits (tools/demo.py)


@pytest.mark.parametrize("name", NAMES)
def test_solver_parses_and_follows_published_schedule(name):
    s = prototxt.read_solver(MODELS / name / "solver.prototxt")
    assert s.net == f"models/{name}/train_val.prototxt" and (REPO / s.net).is_file()
    assert s.snapshot_prefix == f"models/{name}/{name}" and s.type == "SGD"
    for field, value in SCHEDULES[name].items():
        got = getattr(s, field)
        got = list(got) if isinstance(value, list) else got
        assert got == (pytest.approx(value) if isinstance(value, float) else value), field
    _, data = _data_layers(name)
    assert data[caffe.TRAIN].data_param.batch_size * s.iter_size == BATCH[name]
    assert s.test_iter[0] * data[caffe.TEST].data_param.batch_size == TEST_SET.get(name, 50_000)
    if name in ("lenet", "cifar10_quick"):
        assert not s.HasField("solver_mode")  # CPU unless --gpu, as with `caffe train`


def _lr(s, it, step=0):
    """Caffe's multistep rate (float64), stepping through stepvalue as SGDSolver does."""
    while step < len(s.stepvalue) and it >= s.stepvalue[step]:
        step += 1
    return s.base_lr * s.gamma ** step


def test_cifar10_quick_solver_equals_bvlc_two_stage_schedule(caffe_zoo):
    ours = prototxt.read_solver(MODELS / "cifar10_quick/solver.prototxt")
    d = caffe_zoo / "BVLC__caffe/examples/cifar10"
    first = prototxt.read_solver(d / "cifar10_quick_solver.prototxt")
    second = prototxt.read_solver(d / "cifar10_quick_solver_lr1.prototxt")
    assert (first.lr_policy, second.lr_policy) == ("fixed", "fixed")
    for it in (0, 1, 3999, 4000, 4001, 4999):
        bvlc = first.base_lr if it < first.max_iter else second.base_lr
        assert _lr(ours, it) == pytest.approx(bvlc, rel=1e-6), it
    assert (ours.max_iter, ours.snapshot) == (second.max_iter, first.max_iter)
    for f in ("momentum", "weight_decay", "test_iter", "test_interval"):
        assert getattr(ours, f) == getattr(first, f) == getattr(second, f)
