"""Data-parallel ``pipeline train --nproc 2`` (gloo) against one process with the batch doubled.

A LeNet-style net (Data layer over an LMDB written here with plain ``lmdb`` and
``caffe_pb2``, conv -> pool -> ip -> relu -> ip -> SoftmaxWithLoss) trains a few SGD
iterations (momentum, weight decay, iter_size 2) with 2 gloo processes of batch 4 and
with one process of batch 8. Rank r reads the records with offset % 2 == r, so the two
runs see the same 8 records per pass and, with the gradients averaged, must end with
the same weights up to float summation order. The shards are checked to be disjoint
with their union the single-process batch.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from pipeline.commands import cli
from pipeline.formats import binary
from pipeline.formats.blob import blobproto_to_array
from pipeline.proto import caffe_pb2
from pipeline.solvers import distributed

N_RECORDS = 40

NET = """name: "lenet_small"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "%(db)s" batch_size: %(batch)d backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "%(db)s" batch_size: 5 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def write_lmdb(path: Path) -> None:
    rng = np.random.default_rng(7)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(N_RECORDS):
            img = rng.integers(0, 256, (1, 12, 12), dtype=np.uint8)
            d = caffe_pb2.Datum(channels=1, height=12, width=12, data=img.tobytes(), label=int(i % 3))
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()


def write_solver(root: Path, db: Path, batch: int, name: str) -> Path:
    root.mkdir()
    (root / "net.prototxt").write_text(NET % {"db": db, "batch": batch})
    p = caffe_pb2.SolverParameter(
        net=str(root / "net.prototxt"), base_lr=0.1, momentum=0.9, weight_decay=0.01, lr_policy="step",
        gamma=0.5, stepsize=2, max_iter=4, iter_size=2, display=1, test_interval=2, snapshot=0,
        snapshot_prefix=str(root / name), random_seed=11, solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    p.test_iter.append(2)
    path = root / "solver.prototxt"
    path.write_text(text_format.MessageToString(p))
    return path


def read_weights(path: Path) -> dict:
    net = binary.read_caffemodel(path)
    return {f"{layer.name}[{i}]": blobproto_to_array(b) for layer in net.layer for i, b in enumerate(layer.blobs)}


def test_two_gloo_processes_match_one_process_with_the_batch_doubled(tmp_path, capfd):
    db = tmp_path / "train_lmdb"
    write_lmdb(db)
    one = write_solver(tmp_path / "one", db, 8, "one")
    two = write_solver(tmp_path / "two", db, 4, "two")
    assert cli.main(["train", "--solver", str(one)]) == 0
    single_log = capfd.readouterr().err
    code = cli.main(["train", "--solver", str(two), "--nproc", "2"])
    log = capfd.readouterr().err
    assert code == 0, log[-3000:]
    assert "Data-parallel training: 2 processes (gloo)" in log
    assert log.count("Testing net (#0)") == single_log.count("Testing net (#0)") == 3  # rank 0 only
    a = read_weights(tmp_path / "one" / "one_iter_4.caffemodel")
    b = read_weights(tmp_path / "two" / "two_iter_4.caffemodel")
    assert sorted(a) == sorted(b) == ["conv1[0]", "conv1[1]", "ip1[0]", "ip1[1]", "ip2[0]", "ip2[1]"]
    init = read_weights_init(tmp_path)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
        assert not np.allclose(a[k], init[k]), f"{k} did not train"  # the comparison can fail
    # one snapshot only, written by rank 0; the other rank wrote its data positions beside it
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if "iter_4" in p.name) == [
        "two_iter_4.caffemodel", "two_iter_4.solverstate", "two_iter_4.solverstate.pipeline",
        "two_iter_4.solverstate.rank1.pipeline"]


def read_weights_init(tmp_path: Path) -> dict:
    """The weights both runs start from (random_seed 11, rank 0's fillers)."""
    from pipeline import Net, TRAIN, set_random_seed

    set_random_seed(11)
    net = Net(str(tmp_path / "one" / "net.prototxt"), TRAIN)
    return {f"{name}[{i}]": p.data.copy() for name, ps in net.params.items() for i, p in enumerate(ps)}


def test_ranks_read_disjoint_shards_whose_union_is_the_single_batch(tmp_path):
    from pipeline.layers.data_sources import Data

    db = tmp_path / "db"
    write_lmdb(db)

    def batches(batch, rank, world, n=3):
        layer = Data(name="d", batch_size=batch, source=str(db), backend="lmdb", rank=rank, world_size=world,
                     prefetch=1)
        layer.num_tops = 2
        layer.setup([])
        out = [tuple(t.numpy().copy() for t in layer.forward()) for _ in range(n)]
        layer.close()
        return out

    single = batches(8, 0, 1)
    r0, r1 = batches(4, 0, 2), batches(4, 1, 2)
    for s, a, b in zip(single, r0, r1):
        keys = lambda x: {arr.tobytes() for arr in x[0]}  # noqa: E731
        assert not keys(a) & keys(b)
        assert keys(a) | keys(b) == keys(s)
        np.testing.assert_array_equal(s[0][0::2], a[0])  # rank r keeps offset % 2 == r
        np.testing.assert_array_equal(s[0][1::2], b[0])


def test_world_from_env_reads_torchrun_variables():
    assert distributed.world_from_env({}) is None
    w = distributed.world_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (w.rank, w.world_size, w.local_rank) == (3, 8, 1)
    with pytest.raises(Exception, match="RANK"):
        distributed.world_from_env({"RANK": "8", "WORLD_SIZE": "8"})
    with pytest.raises(Exception, match="integers"):
        distributed.world_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_nproc_and_several_gpus_together_are_refused(tmp_path, capsys):
    code = cli.main(["train", "--solver", "s.prototxt", "--nproc", "2", "--gpu", "0,1"])
    assert code == 1
    assert "not both" in capsys.readouterr().err
