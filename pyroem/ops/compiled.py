r"""
An optional compiled kernel for chains with few states: the scaled forward-backward of
:mod:`~pyroem.ops.scaled`, frame by frame in C (``kernels/scaled_chain.c``).

With :math:`K \le 8` states a frame of the recursion is a few dozen multiply-adds, while
one torch operation costs microseconds: the vectorised recursions (one block, or the
blocked one of :mod:`~pyroem.ops.blocked`) pay per operation, not per flop, and a genome
of :math:`2.5 \cdot 10^6` bases with :math:`K = 4` took 0.6 s per E-step against
hmmlearn's compiled 0.35 s (bench/hmm.py ``--case genome``). The kernel runs the same
recursion (the same scaling, caps and float32 renormalisation) in one pass forward and
one backward, without blocks.

It is built on first use with the system's C compiler (``cc``, plain C99 and libm, no
Python or torch headers: a few seconds, once) into a cache directory (``PYROEM_CACHE``,
else ``$XDG_CACHE_HOME/pyroem`` or ``~/.cache/pyroem``), and loaded with :mod:`ctypes`.
Where that fails (no compiler, no writable cache) the pure-torch recursion runs instead,
after one warning; ``PYROEM_COMPILED=0`` turns the kernel off (no warning). Results agree
with the torch recursion to rounding (tests/test_compiled_kernel.py).
"""

import ctypes
import hashlib
import os
import subprocess
import sysconfig
import tempfile
import threading
import warnings

import torch

_KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
#: the sources of the one library: the recursion, the Gaussian frame kernels of
#: :mod:`~pyroem.ops.compiled_gaussian` and the fused iteration of
#: :mod:`~pyroem.ops.compiled_hmm`
_SOURCES = tuple(os.path.join(_KERNELS, name) for name in (
    "scaled_chain.c", "gaussian_frames.c", "gaussian_hmm_step.c"))
_FLAGS = ("-O3", "-fno-math-errno", "-shared", "-fPIC")
#: The most states for which the kernel always runs.
MAX_STATES = 8
#: The most states for which it runs where torch would run the blocked recursion (few
#: long chains): K=16, one chain of 1e5 frames, one thread: blocked torch 0.117 s, kernel
#: 0.069 s; but 1000 chains of 100 frames: torch's one-block recursion 0.023 s, kernel
#: 0.069 s (a frame of 16 states is already a fair torch product over many chains).
MAX_STATES_LONG = 16

_state = {"lib": None, "tried": False}
_local = threading.local()


def enabled():
    """Whether the kernel may be used (``PYROEM_COMPILED`` is not ``0``)."""
    return os.environ.get("PYROEM_COMPILED", "1") != "0"


def _cache_dir():
    base = os.environ.get("PYROEM_CACHE")
    if not base:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(root, "pyroem")
    return base


def _build():
    """Compile the kernels (once per sources, flags and compiler) and return the path of
    the library."""
    source = b""
    for name in _SOURCES:
        with open(name, "rb") as f:
            source += f.read()
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    key = hashlib.sha256(source + repr((_FLAGS, cc)).encode()).hexdigest()[:16]
    cache = _cache_dir()
    path = os.path.join(cache, f"scaled_chain_{key}.so")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        # compile to a private name, then rename: concurrent builds never see half a file
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            subprocess.run([cc, *_FLAGS, "-o", tmp, *_SOURCES, "-lm"], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def _declare(lib):
    real = ctypes.c_void_p
    for name in ("scaled_chain_f64", "scaled_chain_f32"):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_int64] * 3 + [real] * 12
    lib.scaled_chain_flushes.restype = ctypes.c_int
    lib.scaled_chain_flushes.argtypes = []
    for dtype in ("f64", "f32"):  # kernels/gaussian_frames.c
        fn = getattr(lib, "diag_log_prob_" + dtype)
        fn.restype, fn.argtypes = None, [ctypes.c_int64] * 3 + [real] * 4
        fn = getattr(lib, "own_mean_moments_" + dtype)
        fn.restype, fn.argtypes = None, [ctypes.c_int64] * 4 + [real] * 6
        fn = getattr(lib, "gaussian_hmm_step_" + dtype)  # kernels/gaussian_hmm_step.c
        fn.restype, fn.argtypes = ctypes.c_int, [real, ctypes.c_double, real]
    return lib


def library():
    """The loaded kernel, or ``None`` when it is off or cannot be built (warned once)."""
    if not enabled():
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["lib"] = _declare(ctypes.CDLL(_build()))
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            warnings.warn(
                "pyroem: the compiled forward-backward kernel for chains with few states "
                f"could not be built ({e}{': ' + detail.decode(errors='replace')[:200] if detail else ''}); "
                "the pure-torch recursion runs instead (set PYROEM_COMPILED=0 to silence this)",
                RuntimeWarning, stacklevel=3)
    return _state["lib"]


def applies(log_emit, trans, blocked=False):
    """Whether the kernel takes these tensors and pays: CPU, float32 or float64, at most
    :data:`MAX_STATES` states (:data:`MAX_STATES_LONG` where the torch route would be
    ``blocked``), nothing that needs a gradient, and the kernel loads."""
    most = MAX_STATES_LONG if blocked else MAX_STATES
    return (log_emit.device.type == "cpu" and log_emit.dtype in (torch.float32, torch.float64)
            and 0 < log_emit.shape[-1] <= most and trans.dtype == log_emit.dtype
            and not (torch.is_grad_enabled() and (log_emit.requires_grad or trans.requires_grad))
            and library() is not None)


def kernel(name, dtype):
    """The loaded library's function ``name`` for ``dtype``: ``<name>_f64`` or
    ``<name>_f32`` (check that the library loads first)."""
    return getattr(library(), name + ("_f64" if dtype == torch.float64 else "_f32"))


def flushes():
    """Whether the loaded kernel flushes subnormals to zero itself while it runs (then the
    caller need not, :mod:`~pyroem.ops.denormals`); ``False`` when no kernel is loaded."""
    lib = library()
    if lib is None:
        return False
    if "flushes" not in _state:
        _state["flushes"] = bool(lib.scaled_chain_flushes())
    return _state["flushes"]


def _scratch(T, K, dtype):
    """Addresses of working buffers for one chain, ``fw (T, K)`` and ``scale (T,)``: kept
    from call to call (an EM fit calls with the same sizes every iteration), because a
    fresh buffer of a long chain costs more in page faults than the kernel's whole forward
    pass."""
    # per thread: the kernel runs without the GIL, two threads must not share a buffer
    buffers = _local.__dict__
    buf = buffers.get(dtype)
    if buf is None or buf.numel() < T * (K + 1):
        buf = buffers[dtype] = torch.empty(T * (K + 1), dtype=dtype)
    address = buf.data_ptr()
    return address, address + T * K * buf.element_size()


def _ptr(t):
    return None if t is None else t.data_ptr()


def _symbol_table(log_table):
    r"""The scaled table ``e (M, K)`` and offsets ``m (M,)`` of log-emissions
    ``log_table (M, K)``: :math:`e = \exp(\log b - m)` with :math:`m` each row's finite
    maximum, as the recursion scales a frame."""
    top = log_table.amax(-1)
    m = torch.where(torch.isfinite(top), top, 0.0)
    return (log_table - m.unsqueeze(-1)).exp().contiguous(), m.contiguous()


def compiled_forward_backward(log_start, trans, log_emit, lengths, final_w, symbols=None):
    r"""
    :func:`~pyroem.ops.recursions.forward_backward` by the compiled kernel (check
    :func:`applies` first): ``(log_evidence (B,) float64, gamma (B, T, K), xi (K, K))``,
    ``gamma`` contiguous and zero on padding.

    :param log_emit: ``(B, T, K)`` log-densities; or, with ``symbols (B, T)`` (integer
        indices), the ``(M, K)`` table that they index,
        :math:`\log b_t(k)` = ``log_emit[symbols[b, t], k]``.
    """
    dtype = log_emit.dtype
    K = log_emit.shape[-1]
    # no detach: the kernel reads addresses, and applies() refused anything needing a gradient
    if symbols is None:
        B, T, _ = log_emit.shape
        le, sym, mtab = log_emit.contiguous(), None, None
    else:
        B, T = symbols.shape
        le, mtab = _symbol_table(log_emit.detach())
        sym = symbols.to(torch.int64).contiguous()
    start = log_start.to(dtype).contiguous()
    A = trans.contiguous()
    fin = None if final_w is None else final_w.to(dtype).contiguous()
    n = lengths.to(torch.int64).contiguous()
    gamma = torch.empty(B, T, K, dtype=dtype)
    fw, scale = _scratch(T, K, dtype)
    xi = torch.empty(K, K, dtype=dtype)
    log_ev = torch.empty(B, dtype=torch.float64)
    fn = kernel("scaled_chain", dtype)
    # raw addresses (ints) for the void * arguments; None for the optional ones
    fn(B, T, K, le.data_ptr(), _ptr(sym), _ptr(mtab), n.data_ptr(), start.data_ptr(),
       A.data_ptr(), _ptr(fin), gamma.data_ptr(), fw, scale, xi.data_ptr(), log_ev.data_ptr())
    return log_ev, gamma, xi
