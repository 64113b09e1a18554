"""Every net in ../shared/caffe-zoo builds in TRAIN and TEST; deploy nets give Caffe's shapes.

Data layers are replaced by Input layers of the shapes they would produce (in this
test only: real data layers are tested with real databases elsewhere).
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format

import pipeline as caffe
from conftest import caffe_zoo_dir
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2

ZOO = caffe_zoo_dir()

# Expected output shapes of the deploy nets, from the published architectures.
DEPLOY = {
    "models/bvlc_alexnet/deploy.prototxt": {"prob": (10, 1000), "pool5": (10, 256, 6, 6), "fc6": (10, 4096)},
    "models/bvlc_reference_caffenet/deploy.prototxt": {"prob": (10, 1000), "conv1": (10, 96, 55, 55),
                                                       "pool2": (10, 256, 13, 13)},
    "models/bvlc_googlenet/deploy.prototxt": {"prob": (10, 1000), "inception_3a/output": (10, 256, 28, 28),
                                              "inception_5b/output": (10, 1024, 7, 7),
                                              "pool5/7x7_s1": (10, 1024, 1, 1)},
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": {"fc-rcnn": (10, 200)},
    "models/finetune_flickr_style/deploy.prototxt": {"prob": (10, 20)},
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt": {"prob": (1, 1000, 8, 8), "fc6-conv": (1, 4096, 8, 8)},
    "examples/net_surgery/conv.prototxt": {"conv": (1, 3, 96, 96)},
    "examples/mnist/lenet.prototxt": {"prob": (64, 10), "pool2": (64, 50, 4, 4)},
    "examples/cifar10/cifar10_quick.prototxt": {"prob": (1, 10), "pool3": (1, 64, 4, 4)},
    "examples/cifar10/cifar10_full.prototxt": {"prob": (1, 10), "pool3": (1, 64, 4, 4)},
    "examples/siamese/mnist_siamese.prototxt": {"feat": (10000, 2)},
}

# (N, C, H, W) of the images each training database holds, by source path fragment.
IMAGE_SHAPES = {"siamese": (2, 28, 28), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def _data_shape(lp):
    t = lp.transform_param
    if lp.type == "Data":
        bs = lp.data_param.batch_size
        src = lp.data_param.source
        key = next((k for k in IMAGE_SHAPES if k in src), None)
        c, h, w = IMAGE_SHAPES[key] if key else (3, 256, 256)
        if t.crop_size:
            h = w = t.crop_size
        return [(bs, c, h, w), (bs,)]
    if lp.type == "ImageData":
        p = lp.image_data_param
        return [(p.batch_size, 3, t.crop_size or p.new_height, t.crop_size or p.new_width), (p.batch_size,)]
    if lp.type == "WindowData":
        p = lp.window_data_param
        return [(p.batch_size, 3, t.crop_size, t.crop_size), (p.batch_size,)]
    if lp.type == "HDF5Data":
        bs = lp.hdf5_data_param.batch_size
        return [(bs, 4), (bs,)]  # examples/hdf5_classification: 4 features, one label
    raise AssertionError(lp.type)


def stub_data_layers(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for lp in out.layer:
        if lp.type in ("Data", "ImageData", "WindowData", "HDF5Data"):
            shapes = _data_shape(lp)[: len(lp.top)]
            keep = caffe_pb2.LayerParameter(name=lp.name, type="Input", top=lp.top, include=lp.include,
                                            exclude=lp.exclude)
            for s in shapes:
                keep.input_param.shape.add().dim.extend(s)
            lp.CopyFrom(keep)
    return out


NETS = sorted(p for p in ZOO.rglob("*.prototxt") if "solver" not in p.name) if ZOO else []


def _rel(p):
    return str(p.relative_to(ZOO / "BVLC__caffe"))


@pytest.mark.parametrize("path", NETS, ids=_rel)
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST], ids=["TRAIN", "TEST"])
def test_zoo_net_builds(path, phase):
    param = stub_data_layers(prototxt.read_net(path))
    stages = ["test-on-test"] if "mnist_autoencoder" in path.name else []
    net = caffe.Net(param, phase, stages=stages)
    assert len(net.layers) > 0
    for name, blob in net.blobs.items():
        assert all(d >= 0 for d in blob.shape), (name, blob.shape)


@pytest.mark.parametrize("rel", sorted(DEPLOY))
def test_deploy_output_shapes_equal_caffe(rel, caffe_zoo):
    net = caffe.Net(str(caffe_zoo / "BVLC__caffe" / rel), caffe.TEST)
    for blob, shape in DEPLOY[rel].items():
        assert net.blobs[blob].data.shape == shape, blob
    assert set(net.outputs) >= {b for b in DEPLOY[rel] if b in ("prob", "fc-rcnn", "feat", "conv")}


def test_lenet_train_test_phases_pick_their_layers(caffe_zoo):
    path = caffe_zoo / "BVLC__caffe/examples/mnist/lenet_train_test.prototxt"
    param = stub_data_layers(prototxt.read_net(path))
    train = caffe.Net(param, caffe.TRAIN)
    test = caffe.Net(param, caffe.TEST)
    assert "accuracy" not in train._layer_names and "accuracy" in test._layer_names
    assert train.blobs["data"].shape == (64, 1, 28, 28) and test.blobs["data"].shape == (100, 1, 28, 28)
    assert train.outputs == ["loss"] and set(test.outputs) == {"accuracy", "loss"}


def test_stub_keeps_rules():
    net = text_format.Parse(
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST } '
        'data_param { source: "mnist_test_lmdb" batch_size: 5 } }', caffe_pb2.NetParameter())
    lp = stub_data_layers(net).layer[0]
    assert lp.type == "Input" and lp.include[0].phase == caffe.TEST
    assert [list(s.dim) for s in lp.input_param.shape] == [[5, 1, 28, 28], [5]]
