"""Smoke test of tools/benchmark.py: LeNet, one repeat, every row and check present."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"


def _load():
    spec = importlib.util.spec_from_file_location("benchmark_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_net_replaces_softmax_by_loss_on_labels():
    bench = _load()
    p = bench.train_param("lenet", 7)
    assert [lp.type for lp in p.layer][-2:] == ["Input", "SoftmaxWithLoss"]
    assert list(p.layer[-1].bottom) == ["ip2", "label"]
    assert list(p.layer[0].input_param.shape[0].dim) == [7, 1, 28, 28]


@pytest.mark.slow
def test_benchmark_runs_lenet(tmp_path):
    bench = _load()
    out = tmp_path / "b.json"
    assert bench.main(["--nets", "lenet", "--repeats", "1", "--warmup", "0", "--no-mem",
                       "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    phases = {(r["phase"], r["ours"]) for r in res["rows"]}
    assert phases == {("train fwd", "ours"), ("train bwd", "ours"), ("train step", "ours"),
                      ("infer", "ours"), ("infer", "ours fused")}
    assert all(r["ours_ms"] > 0 and r["baseline_ms"] > 0 for r in res["rows"])
    chk = res["checks"]["lenet"]
    assert chk["ok"] and chk["plain"]["logits_max_rel_diff"] < 1e-3
