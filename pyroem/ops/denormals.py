r"""
Subnormal floats flushed to zero while a recursion runs.

The scaled recursions keep every vector normalised, but single entries go far below one:
a state that the data rule out has :math:`\hat\alpha_t(k) \approx 10^{-40}` after a few
steps, and a product of such entries lands in the subnormal range (below
:math:`1.2 \cdot 10^{-38}` in float32, :math:`2.2 \cdot 10^{-308}` in float64), where x86
arithmetic takes a slow microcode path, often ten times slower per operation. In float32
this happens on ordinary data (bench/hmm.py, K=16, T=2e5: the E-step takes 0.22 s with
subnormals, 0.14 s flushed) and made float32 slower than float64.

Flushing changes only entries below the smallest normal float of a vector whose entries
sum to one: their effect on any sum is below the dtype's rounding by some thirty orders
of magnitude (float32) and they are zero in float64 terms of the same quantities. The
flush mode of the calling thread is set for the duration of the block and restored after
(:func:`torch.set_flush_denormal` has no getter: the mode in force is read off a
subnormal product).
"""

import contextlib

import torch

_TINY = torch.tensor(torch.finfo(torch.float32).tiny, dtype=torch.float32)


def flushing():
    """Whether this thread flushes subnormal floats to zero now."""
    return bool((_TINY * 0.5) == 0)


@contextlib.contextmanager
def flush_denormals():
    """Flush subnormal floats to zero inside the block, restoring the previous mode after
    (a no-op where the CPU does not support it or flushing is already on)."""
    if flushing() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
