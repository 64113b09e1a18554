"""The fuzz harness: seed files, mutations, and the readers under attack.

Every reader gets (a) real files - the zoo's prototxts (``../shared/caffe-zoo``)
and binaries made here by the package's own writers - mutated with bit flips,
truncations, insertions, deletions, duplicated chunks and huge length prefixes,
and (b) random bytes. A case passes when the reader returns or raises one of our
typed errors (``pipeline.errors.PipelineError``) whose message names the file (or
the record's key); any other exception, a case running past ``CASE_SECONDS`` or
the process's peak memory growing by more than ``MAX_RSS_GROWTH_MB`` fails.

``run_target(name, n, seed)`` is what ``test_fuzz.py`` and
``tools/reliability_report.py`` call; mutations are drawn from ``random.Random(seed)``
so every run of a seed attacks with the same inputs.
"""

from __future__ import annotations

import random
import resource
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

CASE_SECONDS = 10.0
MAX_RSS_GROWTH_MB = 300

TINY_NET = """name: "fuzz"
input: "data" input_shape { dim: 2 dim: 1 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""

SMALL_ZOO = [
    "examples/mnist/lenet.prototxt", "examples/mnist/lenet_train_test.prototxt", "examples/mnist/lenet_solver.prototxt",
    "examples/cifar10/cifar10_quick.prototxt", "examples/cifar10/cifar10_quick_solver.prototxt",
    "examples/siamese/mnist_siamese.prototxt", "examples/mnist/lenet_consolidated_solver.prototxt",
    "examples/hdf5_classification/train_val.prototxt", "examples/pycaffe/linreg.prototxt",
]


class CaseTimeout(BaseException):
    """A case ran past CASE_SECONDS (BaseException: readers must not swallow it)."""


@dataclass
class Stats:
    target: str
    cases: int = 0
    accepted: int = 0  # the input still read back (a mutation can leave a valid file)
    typed_errors: int = 0
    failures: list = field(default_factory=list)  # (case, input length, description)
    rss_growth_mb: float = 0.0

    def line(self) -> str:
        return (f"{self.target:<14} {self.cases:6d} cases  {self.accepted:6d} read  {self.typed_errors:6d} typed errors"
                f"  {len(self.failures)} unexpected  peak RSS +{self.rss_growth_mb:.0f} MB")


# ----------------------------------------------------------------- mutations
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


HUGE = [2**31 - 1, 2**31, 2**32 + 7, 10**12, 2**62, 2**64 - 1]


def mutate(data: bytes, rng: random.Random, text: bool = False) -> bytes:
    """One to three random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8 if text else 7)
        n = len(buf)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del buf[pos:]
        elif op == 2:  # insert random bytes
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and n:  # delete a range
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == 4 and n:  # duplicate a chunk
            a = rng.randrange(n)
            buf[pos:pos] = buf[a:a + rng.randint(1, 256)]
        elif op == 5:  # a huge length prefix (field 1..15, wire type 2) or varint
            tag = (rng.randint(1, 15) << 3) | rng.choice((0, 2))
            buf[pos:pos] = bytes([tag]) + _varint(rng.choice(HUGE))
        elif op == 6 and n:  # overwrite a byte with a boundary value
            buf[rng.randrange(n)] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
        elif op == 7:  # text: prototxt-shaped noise
            tok = rng.choice([b"{", b"}", b":", b'"', b"'", b"#", b"\n", b" layer {", b" dim: ", b"-1",
                              b"99999999999999999999", b"1e999", b"nan", b"\\", b"\xff\xfe", b"type: \"Python\""])
            buf[pos:pos] = tok
    return bytes(buf)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 7, 64, 300))))


# ----------------------------------------------------------------- seed files
class Seeds:
    """Seed files for every target, made once in ``root`` (plus the zoo's prototxts)."""

    def __init__(self, root: Path, zoo: Path | None, all_zoo: bool = False):
        import pipeline as caffe
        from pipeline.data.datum import array_to_datum, image_to_datum
        from pipeline.data.image import encode_image
        from pipeline.formats import binary
        from pipeline.formats.blob import array_to_blobproto
        from pipeline.proto import caffe_pb2
        from pipeline.solvers import snapshot as snap

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        net_path = root / "fuzz.prototxt"
        net_path.write_text(TINY_NET)
        caffe.set_random_seed(1)
        self.net = caffe.Net(str(net_path), caffe.TEST)
        self.net.save(str(root / "fuzz.caffemodel"))
        self.net.save_hdf5(str(root / "fuzz.caffemodel.h5"))
        v1 = caffe_pb2.NetParameter(name="v1")  # a V1 model: the upgrade path runs on it
        lay = v1.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["data"], top=["ip"])
        lay.blobs.add().CopyFrom(array_to_blobproto(np.ones((1, 1, 4, 12), np.float32), legacy_4d=True))
        binary.write_binary(v1, root / "v1.caffemodel")
        rs = np.random.RandomState(0)
        binary.write_blobproto(array_to_blobproto(rs.rand(1, 3, 4, 4).astype(np.float32), legacy_4d=True),
                               root / "mean.binaryproto")
        binary.write_blobproto(array_to_blobproto(rs.rand(2, 5).astype(np.float32)), root / "shape.binaryproto")
        history = [rs.rand(*p.shape).astype(np.float32) for p in self.net.learnable_params]
        snap.write_state(root / "s.solverstate", 12, str(root / "fuzz.caffemodel"), 1, history)
        snap.write_state(root / "s.solverstate.h5", 12, str(root / "fuzz.caffemodel.h5"), 1, history, True)
        img = (rs.rand(5, 4, 3) * 255).astype(np.uint8)
        self.datums = [
            array_to_datum(img.transpose(2, 0, 1), label=3).SerializeToString(),
            array_to_datum(rs.rand(2, 3, 3).astype(np.float32), label=1).SerializeToString(),
            image_to_datum(encode_image(img, "png"), 2, encoding="png")[0].SerializeToString(),
        ]
        (root / "list.txt").write_text("cat.jpg 0\nsub dir/fish bike.jpg 1\n\nx.png 2\n")
        (root / "flist.txt").write_text("a.png 0.5 1 -2e3\nb.png 1 2 3\n")
        self.files = {
            "caffemodel": [root / "fuzz.caffemodel", root / "v1.caffemodel"],
            "binaryproto": [root / "mean.binaryproto", root / "shape.binaryproto"],
            "solverstate": [root / "s.solverstate"],
            "hdf5": [root / "fuzz.caffemodel.h5", root / "s.solverstate.h5"],
            "listfile": [root / "list.txt", root / "flist.txt"],
            "prototxt": [net_path],
        }
        if zoo is not None:
            base = zoo / "BVLC__caffe"
            found = sorted(base.rglob("*.prototxt")) if all_zoo else [base / p for p in SMALL_ZOO]
            self.files["prototxt"] += [p for p in found if p.is_file()]
        self.bytes = {k: [Path(p).read_bytes() for p in v] for k, v in self.files.items()}
        self.bytes["datum"] = self.datums


# ----------------------------------------------------------------- targets
def _read_prototxt(path, seeds):
    from pipeline.formats import prototxt

    prototxt.read_any(path)


def _read_caffemodel(path, seeds):
    from pipeline.formats import binary

    binary.read_caffemodel(path)
    seeds.net.copy_from(str(path))  # blob shapes and counts against a real net


def _read_binaryproto(path, seeds):
    from pipeline.formats import binary
    from pipeline.formats.blob import blobproto_to_array

    blobproto_to_array(binary.read_blobproto(path), what=str(path))


def _read_solverstate(path, seeds):
    from pipeline.solvers import snapshot as snap

    snap.read_state(path)


def _read_hdf5(path, seeds):
    from pipeline.formats import hdf5

    with open(path, "rb") as f:
        head = f.read(4096)
    if b"history" in head or b"learned_net" in head:
        hdf5.read_solver_state(path)
    else:
        hdf5.read_weights(path)
        seeds.net.copy_from(str(path))


def _read_listfile(path, seeds):
    from pipeline.data.imageset import read_list

    read_list(path)
    read_list(path, float_labels=True)


def _read_datum(data: bytes, seeds, key):
    from pipeline.data.datum import datum_to_array

    for color in (None, True, False):
        datum_to_array(data, color=color, key=key)


TARGETS = {
    "prototxt": (_read_prototxt, ".prototxt", True),
    "caffemodel": (_read_caffemodel, ".caffemodel", False),
    "binaryproto": (_read_binaryproto, ".binaryproto", False),
    "solverstate": (_read_solverstate, ".solverstate", False),
    "hdf5": (_read_hdf5, ".h5", False),
    "listfile": (_read_listfile, ".txt", True),
    "datum": (_read_datum, None, False),
}


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(target: str, data: bytes, seeds: Seeds, case: int, stats: Stats) -> None:
    """Feed ``data`` to ``target``; record a pass, a typed error or a failure."""
    func, suffix, _ = TARGETS[target]
    stats.cases += 1
    if suffix is None:
        key = f"{case:08d}_fuzz".encode()
        where = key.decode()
        call = (lambda: func(data, seeds, key))
    else:
        path = seeds.root / f"case{suffix}"
        path.write_bytes(data)
        where = str(path)
        call = (lambda: func(path, seeds))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        call()
        stats.accepted += 1
    except PipelineError as e:
        stats.typed_errors += 1
        if where not in str(e):
            stats.failures.append((case, len(data), f"{type(e).__name__} does not name {where}: {e}"))
    except CaseTimeout:
        stats.failures.append((case, len(data), f"ran past {CASE_SECONDS} s"))
    except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
        tb = traceback.extract_tb(sys.exc_info()[2])[-1]
        stats.failures.append((case, len(data), f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def run_target(target: str, n: int, seed: int, seeds: Seeds) -> Stats:
    """``n`` cases for ``target``: mutated seed files, and one in ten random bytes."""
    rng = random.Random(f"{target}:{seed}")
    pool = seeds.bytes[target]
    text = TARGETS[target][2]
    stats = Stats(target)
    rss0 = _rss_mb()
    for case in range(n):
        data = random_bytes(rng) if case % 10 == 9 else mutate(rng.choice(pool), rng, text)
        run_case(target, data, seeds, case, stats)
    stats.rss_growth_mb = _rss_mb() - rss0
    return stats
