"""``pipeline device_query`` and Caffe's ``--gpu`` flag."""

from __future__ import annotations

import os

import pytest
import torch
from source_nets import glog_messages

from pipeline.commands import cli
from pipeline.commands import device_query as dq
from pipeline.commands.devices import Timer, parse_gpus
from pipeline.errors import ConfigError


def _fields(msgs):
    out = {}
    for m in msgs:
        if ":" in m:
            k, v = m.split(":", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def test_reports_the_cpu_and_cuda_state(capsys):
    assert cli.main(["device_query"]) == 0
    msgs = glog_messages(capsys.readouterr().err)
    assert msgs[0] == "Querying devices"
    f = _fields(msgs)
    assert f["Logical cores"].startswith(f"{os.cpu_count()} (")
    assert f["torch"].startswith(torch.__version__)
    assert f["Architecture"]
    if not torch.cuda.is_available():
        assert f["CUDA"].startswith("not available")
        assert "Device id" not in f
    # labels padded so every value starts in column 31, as in Caffe's DeviceQuery lines
    for m in msgs[1:]:
        assert m[:31].rstrip().endswith(":") and m[31] != " ", m


def test_parse_gpus_reads_caffes_flag():
    assert parse_gpus("") == []
    assert parse_gpus("  ") == []
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        assert parse_gpus("all") == list(range(n))
        assert parse_gpus("0") == [0]
    else:
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            parse_gpus("0")
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            parse_gpus("all")
    with pytest.raises(ConfigError, match=f"there is no CUDA device {n}|no CUDA device is available"):
        parse_gpus(f"0,{n}")
    with pytest.raises(ConfigError, match="expected device ids separated by ','"):
        parse_gpus("0;1")


@pytest.mark.parametrize("argv", [["--gpu=64"], ["-gpu", "64"], ["--gpu", "nope"]])
def test_a_gpu_that_is_not_there_is_one_line_and_non_zero(capsys, argv):
    assert cli.main(["device_query"] + argv) == 1
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline device_query: error: --gpu"), err
    assert out.out == ""


def test_cpu_timer_measures_wall_time():
    import time

    t = Timer("cpu")
    t.start()
    time.sleep(0.02)
    ms = t.milliseconds()
    assert 15 <= ms < 1000
    assert t.milliseconds() == ms  # stopped: asking again gives the same figure
    assert t.microseconds() == pytest.approx(ms * 1e3)


@pytest.mark.gpu
def test_reports_caffes_fields_for_each_gpu(capsys):
    assert cli.main(["device_query", "--gpu", "0"]) == 0
    msgs = glog_messages(capsys.readouterr().err)
    f = _fields(msgs)
    prop = torch.cuda.get_device_properties(0)
    assert msgs[0] == "Querying GPUs 0"
    assert f["Device id"] == "0"
    assert f["Name"] == prop.name
    assert f["Major revision number"] == str(prop.major)
    assert f["Minor revision number"] == str(prop.minor)
    assert f["Total global memory"] == str(prop.total_memory)
    assert f["Number of multiprocessors"] == str(prop.multi_processor_count)
    assert int(f["Free global memory"]) <= prop.total_memory
    assert f["CUDA"].startswith(str(torch.version.cuda))
    assert dq.gpu_lines(0)[3].split(":", 1)[1].strip() == prop.name


@pytest.mark.gpu
def test_cuda_timer_measures_device_work():
    t = Timer("cuda:0")
    a = torch.randn(2048, 2048, device="cuda:0")
    t.start()
    for _ in range(10):
        a = a @ a / 2048
    ms = t.milliseconds()
    assert ms > 0
