"""Small nets for the command tests, fed by a deterministic data source.

``NpyBatches`` is a ``type: "Python"`` source layer (no bottoms) that hands out
consecutive batches of two ``.npy`` files (data, labels), wrapping around at the
end, so a test knows exactly which items batch k holds and can compute the
expected outputs with numpy. ``classifier_net`` writes the arrays, a net
(source -> InnerProduct -> SoftmaxWithLoss + Accuracy, plus an extra output) and
its weights, and returns everything a test needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pipeline as caffe


class NpyBatches(caffe.Layer):
    """param_str ``"data.npy,labels.npy,batch"``: tops (batch, ...) and (batch,)."""

    def setup(self, bottom, top):
        data_path, label_path, batch = self.param_str.split(",")
        self.x = np.load(data_path).astype(np.float32)
        self.y = np.load(label_path).astype(np.float32)
        self.batch = int(batch)
        self.pos = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, *self.x.shape[1:])
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        idx = (self.pos + np.arange(self.batch)) % len(self.x)
        top[0].data[...] = self.x[idx]
        top[1].data[...] = self.y[idx]
        self.pos = (self.pos + self.batch) % len(self.x)


@dataclass
class ClassifierNet:
    model: Path
    weights: Path
    x: np.ndarray  # (items, D) float32
    y: np.ndarray  # (items,) labels
    batch: int
    w: np.ndarray  # (C, D) InnerProduct weight
    b: np.ndarray  # (C,)

    def batch_items(self, k: int):
        idx = (k * self.batch + np.arange(self.batch)) % len(self.x)
        return self.x[idx].astype(np.float64), self.y[idx].astype(np.int64)


def source_layer(data: Path, labels: Path, batch: int, tops=("data", "label")) -> str:
    return (
        f'layer {{ name: "source" type: "Python" top: "{tops[0]}" top: "{tops[1]}"\n'
        f'  python_param {{ module: "source_nets" layer: "NpyBatches" param_str: "{data},{labels},{batch}" }} }}\n'
    )


def classifier_net(
    tmp_path: Path, items=12, dim=5, classes=4, batch=4, loss_weight=0.5, seed=0, extra=""
) -> ClassifierNet:
    """Source -> ip (InnerProduct) -> 'z_acc' (Accuracy) and 'a_loss' (SoftmaxWithLoss, weight
    ``loss_weight``), plus 'scaled' = 2·ip (a multi-element output). ``extra`` is appended."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(items, dim)).astype(np.float32)
    y = rng.integers(0, classes, size=items).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    model = tmp_path / "net.prototxt"
    model.write_text(
        'name: "classifier"\n'
        + source_layer(tmp_path / "x.npy", tmp_path / "y.npy", batch)
        + f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        f'  inner_product_param {{ num_output: {classes} weight_filler {{ type: "gaussian" std: 1 }}\n'
        f'    bias_filler {{ type: "gaussian" std: 1 }} }} }}\n'
        'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "z_acc" }\n'
        f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "a_loss"\n'
        f"  loss_weight: {loss_weight} }}\n"
        'layer { name: "scale" type: "Power" bottom: "ip" top: "scaled" power_param { scale: 2 } }\n' + extra
    )
    caffe.set_random_seed(seed)
    net = caffe.Net(str(model), caffe.TEST)
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    w, b = (np.array(p.data, np.float64) for p in net.params["ip"])
    return ClassifierNet(model, weights, x, y, batch, w, b)


def softmax_loss_and_accuracy(logits: np.ndarray, labels: np.ndarray):
    """float64 reference: mean cross-entropy (Caffe's VALID normalization) and top-1 accuracy
    (correct iff no other class scores >= the true one)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -logp[rows, labels].mean()
    true = logits[rows, labels][:, None]
    higher = (logits >= true).sum(axis=1) - 1
    return loss, float((higher < 1).mean())


# glog's prefix: I<MMDD> <HH:MM:SS.micro> <thread id> <file>:<line>] <message>
GLOG_LINE = re.compile(r"^([IWEF])(\d{4}) (\d\d:\d\d:\d\d\.\d{6}) +(\d+) ([\w.]+):(\d+)\] (.*)$")


def glog_messages(stderr: str) -> list[str]:
    """The messages of the glog lines in ``stderr``; fails on a line that is not one."""
    out = []
    for line in stderr.splitlines():
        m = GLOG_LINE.match(line)
        assert m, f"not a glog line: {line!r}"
        out.append(m.group(7))
    return out
