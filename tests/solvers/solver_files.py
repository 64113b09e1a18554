"""A tiny trainable net (random DummyData, Dropout), solver files, and the ``files`` fixture (imported by the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from pipeline.proto import caffe_pb2

TINY = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
"""

SOLVER = """net: "{net}"
test_iter: 2
test_interval: 4
base_lr: 0.1
momentum: 0.9
weight_decay: 0.01
lr_policy: "multistep"
gamma: 0.5
stepvalue: 3
stepvalue: 7
display: 0
max_iter: 10
snapshot_prefix: "{prefix}"
random_seed: 7
solver_mode: CPU
"""


class Files:
    """Writes nets and solvers under a temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "snap").mkdir()

    def net(self, text: str = TINY, name: str = "net.prototxt") -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def solver(self, net_path=None, name: str = "solver.prototxt", extra: str = "", **fields) -> Path:
        """SOLVER with ``fields`` set (lists replace repeated fields, None clears) plus ``extra`` text."""
        net = net_path or self.net()
        param = text_format.Parse(SOLVER.format(net=net, prefix=self.root / "snap" / "tiny") + extra,
                                  caffe_pb2.SolverParameter())
        for k, v in fields.items():
            if isinstance(v, list):
                param.ClearField(k)
                getattr(param, k).extend(v)
            elif v is None:
                param.ClearField(k)
            else:
                setattr(param, k, v)
        path = self.root / name
        path.write_text(text_format.MessageToString(param))
        return path


@pytest.fixture(name="files")
def files_fixture(tmp_path) -> Files:
    return Files(tmp_path)
