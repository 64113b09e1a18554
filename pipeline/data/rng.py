"""Random streams for the data path, drawn the way Caffe draws them.

Caffe gives each data layer its own ``boost::mt19937`` seeded from the global
generator (``caffe_rng_rand()``), and asks it for ``Rand(n) = (*rng)() % n``:
one 32-bit Mersenne-Twister word per decision (mirror, crop row, crop column,
window index). ``CaffeRNG`` is that generator: numpy's ``MT19937`` seeded with
the standard ``init_genrand(seed)`` (the same words as ``std::mt19937(seed)`` and
``boost::mt19937(seed)``), with Caffe's ``% n`` reduction.

Seeds come from torch's global generator when a layer is created
(``layer_seed()``), so ``caffe.set_random_seed(s)`` (or the solver's
``random_seed``) makes a run's crops, mirrors and shuffles repeatable.

Differences from Caffe: the layer seeds come from torch's generator, not
Caffe's global ``caffe::rng_t``, so the words differ from a Caffe run with the
same seed; shuffles use numpy's ``Generator.permutation`` on this generator
(uniform, like Caffe's Fisher-Yates with ``boost::uniform_int``, but not the
same permutation).
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = 0x9E3779B9  # separates the sub-streams of one layer seed


def layer_seed() -> int:
    """A 32-bit seed drawn from torch's global CPU generator (Caffe's ``caffe_rng_rand()``)."""
    return int(torch.randint(0, 2**32 - 1, (1,), dtype=torch.int64).item())


class CaffeRNG:
    """A ``boost::mt19937`` with Caffe's ``Rand(n) = word % n`` and a resumable state.

    Args:
        seed: 32-bit seed (``init_genrand``).
        stream: sub-stream number; stream k uses seed ``seed + k * 0x9E3779B9``
            (mod 2**32) so one layer seed feeds several independent generators.

    Example:
        >>> r = CaffeRNG(5489)
        >>> int(r.words(1)[0])        # std::mt19937's first word for its default seed
        3499211612
    """

    def __init__(self, seed: int, stream: int = 0):
        seed = (int(seed) + stream * _GOLDEN) % 2**32
        self._bits = np.random.MT19937()
        self._bits.state = np.random.RandomState(seed).get_state(legacy=False)
        self._gen = np.random.Generator(self._bits)

    def words(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit words, as uint64 (``(*rng)()`` n times)."""
        return self._bits.random_raw(int(n))

    def rand(self, n: int) -> int:
        """Caffe's ``Rand(n)``: one word modulo ``n`` (n > 0)."""
        return int(self._bits.random_raw()) % int(n)

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)`` (int64)."""
        return self._gen.permutation(int(n))

    def get_state(self) -> dict:
        """A plain-Python (JSON/pickle friendly) copy of the generator state."""
        st = self._bits.state["state"]
        return {"key": [int(k) for k in st["key"]], "pos": int(st["pos"])}

    def set_state(self, state: dict) -> None:
        self._bits.state = {
            "bit_generator": "MT19937",
            "state": {"key": np.asarray(state["key"], dtype=np.uint32), "pos": int(state["pos"])},
        }
