"""Baum-Welch iterations of HMMs: pyroem against hmmlearn, and pyroem's float32 against float64.

Run by hand:  python bench/hmm.py [--case all|genome|tiny|batch|long|float32] [--quick]
              [--repeats 5] [--threads 2] [--clock wall|cpu] [--pyroem PATH]

Each case prints a table of best-of-``--repeats`` wall-clock seconds (the functions timed
interleaved, one warm-up call each, so that load from other processes hits them alike) and
the ratio against the peer measured in the same run:

- ``genome``: ``CategoricalHMM`` K=4 over {A, C, G, T}, one simulated 2.46 Mbp genome
  (isochores and CpG islands, below), one E-step plus M-step of hmmlearn's
  ``CategoricalHMM`` (``implementation="scaling"`` and ``"log"``) and of
  ``pyroem.infer.EM.step``, float64;
- ``tiny``: ``GaussianHMM`` K=2, D=1, one sequence of 300 frames (per-call overhead);
- ``batch``: diagonal ``GaussianHMM`` K=16, D=8, 1000 sequences of 100 frames;
- ``long``: the same model, one sequence of 100000 frames;
- ``float32``: pyroem's E-step on one sequence of 1e6 frames (K=16, D=8) in float32 and
  float64, the speed ratio and the relative difference of the log-likelihoods.

``--pyroem PATH`` imports pyroem from ``PATH`` (e.g. an export of an older commit, to
time it against the same peer); the default is this checkout. ``--quick`` shrinks the
problems (for a smoke test; the bars are stated at full size).
"""

import argparse
import os
import sys
import time

CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def best_times(fns, repeats):
    """Best-of-``repeats`` wall-clock seconds of each function, the functions interleaved;
    one warm-up call each (it fills the data-feature cache, as every EM iteration after the
    first sees it)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = clock()
            fn()
            ts.append(clock() - t)
    return [min(ts) for ts in times]


# ----------------------------------------------------------------------------- data
def simulated_genome(length, seed=0):
    """A genome-like sequence of ``length`` bases (0..3 = A, C, G, T) from a 4-state chain:
    AT-rich and GC-rich isochores (mean run 100 kbp and 50 kbp), CpG islands (mean 1 kbp,
    every ~100 kbp) and short repeats (mean 300 bp), sampled run by run (geometric run
    lengths) with NumPy's generator. Returns ``(bases (T,), init)`` with ``init`` a fixed,
    different starting point ``(start, trans, emission)`` for both libraries."""
    import numpy as np

    rng = np.random.default_rng(seed)
    stay = np.array([1 - 1e-5, 1 - 2e-5, 1 - 1e-3, 1 - 1 / 300])
    jump = np.array([[0, 0.6, 0.3, 0.1], [0.7, 0, 0.2, 0.1], [0.5, 0.5, 0, 0], [0.6, 0.4, 0, 0]])
    emit = np.array([[0.31, 0.19, 0.19, 0.31], [0.21, 0.29, 0.29, 0.21],
                     [0.15, 0.35, 0.35, 0.15], [0.4, 0.1, 0.1, 0.4]])
    states, total, s = [], 0, 0
    while total < length:
        run = int(rng.geometric(1 - stay[s]))
        states.append((s, run))
        total += run
        s = int(rng.choice(4, p=jump[s]))
    z = np.repeat([a for a, _ in states], [r for _, r in states])[:length]
    u = rng.random(length)
    bases = (u[:, None] > emit.cumsum(1)[z][:, :3]).sum(1)
    trans = np.full((4, 4), 1e-4) + np.diag(np.full(4, 1 - 4e-4))
    init = (np.full(4, 0.25), trans / trans.sum(1, keepdims=True),
            rng.dirichlet(np.full(4, 20.0), size=4))
    return bases, init


def gaussian_data(k, d, total, seed=0):
    """Frames from a ``k``-state diagonal Gaussian HMM and a fixed, different start."""
    import numpy as np
    from hmmlearn import hmm as hl

    rng = np.random.default_rng(seed)
    gen = hl.GaussianHMM(k, "diag", init_params="", random_state=seed)
    gen.startprob_ = np.full(k, 1.0 / k)
    gen.transmat_ = np.full((k, k), 0.1 / (k - 1)) + (0.9 - 0.1 / (k - 1)) * np.eye(k)
    gen.means_ = rng.normal(0, 3, size=(k, d))
    gen.covars_ = np.ones((k, d))
    x, _ = gen.sample(total, random_state=seed)
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k)
    means = gen.means_ + rng.normal(size=(k, d))
    covars = rng.uniform(0.5, 2.0, size=(k, d))
    return x, (start, trans, means, covars)


# ----------------------------------------------------------------------------- iterations
def hmmlearn_iteration(kind, x, lengths, init, implementation):
    """One ``_do_estep`` + ``_do_mstep`` of hmmlearn (successive calls iterate EM from the
    start ``init``, as pyroem's do)."""
    from hmmlearn import hmm as hl

    if kind == "categorical":
        ref = hl.CategoricalHMM(len(init[0]), init_params="", implementation=implementation)
        ref.n_features = init[2].shape[1]
        names = ("startprob_", "transmat_", "emissionprob_")
    else:
        ref = hl.GaussianHMM(len(init[0]), "diag", init_params="", implementation=implementation,
                             covars_prior=0.0)
        names = ("startprob_", "transmat_", "means_", "covars_")

    def reset():
        for name, value in zip(names, init):
            setattr(ref, name, value)

    reset()
    ref._check()

    def step():
        stats, _ = ref._do_estep(x, lengths)
        ref._do_mstep(stats)

    return step


def pyroem_model(kind, init, dtype):
    import torch

    from pyroem.models import CategoricalHMM, GaussianHMM

    if kind == "categorical":
        start, trans, emit = init
        model = CategoricalHMM(len(start), emit.shape[1]).to(dtype)
        values = {"emission_probs": emit}
    else:
        start, trans, means, covars = init
        model = GaussianHMM(means.shape[0], means.shape[1], "diag", reg_covar=0.0).to(dtype)
        values = {"means": means, "covariances": covars}
    values.update(start_probs=start, trans_probs=trans)

    def reset():
        for name, value in values.items():
            setattr(model, name, torch.as_tensor(value, dtype=dtype))

    reset()
    return model, reset


def pyroem_iteration(kind, x, lengths, init, dtype=None):
    """One ``EM.step`` of pyroem on the same data and start (successive calls iterate; the
    parameters are not reset, which costs more than a small problem's iteration)."""
    import numpy as np
    import torch

    from pyroem.infer import EM

    dtype = dtype or torch.float64
    model, _ = pyroem_model(kind, init, dtype)
    data = torch.as_tensor(x) if lengths is None else [
        torch.as_tensor(s) for s in np.split(x, np.cumsum(lengths)[:-1])]
    args = model._prepare(data, dtype=dtype)
    em = EM(model.model, model.guide)

    def step():
        em.step(*args)

    return step, model, args


# ----------------------------------------------------------------------------- cases
def peer_table(title, rows, repeats):
    """Time and print ``rows``: ``(name, kind, x, lengths, init)``; hmmlearn's scaling and
    log implementations against pyroem's ``EM.step`` (float64)."""
    print(title)
    print(f"{'data':16} {'hmmlearn scaling s':>18} {'hmmlearn log s':>15} {'pyroem s':>9} "
          f"{'vs scaling':>10} {'vs log':>7}")
    for name, kind, x, lengths, init in rows:
        fx = x.reshape(-1, 1) if kind == "categorical" else x
        ours, _, _ = pyroem_iteration(kind, x, lengths, init)
        t_sc, t_log, t_ours = best_times(
            [hmmlearn_iteration(kind, fx, lengths, init, "scaling"),
             hmmlearn_iteration(kind, fx, lengths, init, "log"), ours], repeats)
        print(f"{name:16} {t_sc:18.5f} {t_log:15.5f} {t_ours:9.5f} {t_sc / t_ours:9.2f}x "
              f"{t_log / t_ours:6.2f}x")


def case_genome(args):
    length = 200_000 if args.quick else 2_460_000
    bases, init = simulated_genome(length)
    peer_table(f"CategoricalHMM K=4 M=4, one simulated genome of {length} bp, Baum-Welch "
               "iteration, float64", [(f"genome {length / 1e6:.2f} Mbp", "categorical", bases,
                                       None, init)], args.repeats)


def case_tiny(args):
    x, init = gaussian_data(2, 1, 300)
    peer_table("GaussianHMM K=2 D=1 diag, one sequence of 300 frames, Baum-Welch iteration, "
               "float64", [("1 x T=300", "gaussian", x, None, init)], args.repeats)
    if args.profile:
        tiny_profile(x, init)


def _timers(spent):
    """``timed(obj, name, label)``: wrap ``obj.name`` so that its time adds to
    ``spent[label]``."""
    def timed(obj, name, label):
        fn = getattr(obj, name)

        def wrapper(*a, **k):
            t = clock()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += clock() - t
        setattr(obj, name, wrapper)
    return timed


def _phase_table(title, step, phases, spent, iterations):
    """Run ``step`` ``iterations`` times (after a warm-up) and print each phase's mean."""
    for _ in range(50):
        step()
    spent.clear()
    t = clock()
    for _ in range(iterations):
        step()
    total = (clock() - t) / iterations
    print(f"{title}, mean of {iterations}: {total * 1e6:.0f} us")
    for label in phases:
        us = spent[label] / iterations * 1e6
        print(f"  {label:52} {us:7.1f} us {us / (total * 1e6):6.1%}")
    outer = sum(spent[label] for label in phases if not label.startswith(" ")) / iterations
    print(f"  {'the rest (Python around them, EM.step, guide)':52} "
          f"{(total - outer) * 1e6:7.1f} us")


def tiny_profile(x, init, iterations=2000):
    """Where an iteration of the tiny case goes: the mean wall-clock time of each phase of
    ``EM.step`` (timers wrapped around the functions that run it), over ``iterations``:
    the fused route (pyroem.models.hmm.fused) that EM.step takes, then the separate
    steps that it replaces."""
    import collections

    import pyroem.models.hmm.fused as fused_mod
    import pyroem.ops.compiled_hmm as ch

    spent = collections.defaultdict(float)
    timed = _timers(spent)
    step, model, _ = pyroem_iteration("gaussian", x, None, init)
    phases = [(fused_mod, "fused_step", "fused_step, all (models/hmm/fused.py)"),
              (model.emission, "check", "  of which the data check (memoised)"),
              (ch, "gaussian_hmm_step", "  of which the kernel and its wrapper")]
    for obj, name, label in phases:
        timed(obj, name, label)
    _phase_table("profile of the fused route", step, [label for *_, label in phases], spent,
                 iterations)
    fused_mod.fused_step = lambda *a, **k: None  # the separate steps
    separate_profile(x, init, iterations)


def separate_profile(x, init, iterations):
    """:func:`tiny_profile` of the separate E-step and M-step."""
    import collections

    import pyroem.infer.em as em_mod
    import pyroem.models.hmm.chain as chain_mod
    import pyroem.models.hmm.partial as hp

    spent = collections.defaultdict(float)
    timed = _timers(spent)
    step, model, _ = pyroem_iteration("gaussian", x, None, init)
    emission = model.emission
    phases = [(emission, "check", "data checks (2 per iteration, memoised)"),
              (emission, "log_prob", "emission log-densities (compiled)"),
              (hp, "forward_backward", "forward-backward (compiled kernel and wrapper)"),
              (model, "expected_statistics", "expected statistics (all)"),
              (emission, "expected_statistics", "  of which the emission's moments"),
              (model, "maximize", "M-step (all)"),
              (emission, "maximize", "  of which the emission's"),
              (chain_mod, "map_probs", "  of which start and transitions"),
              (em_mod.EM, "_snapshot", "EM.step: parameter snapshot (infer/em.py)"),
              (em_mod.ParameterSnapshot, "first_non_finite",
               "EM.step: finiteness check (infer/em.py)")]
    for obj, name, label in phases:
        timed(obj, name, label)
    _phase_table("profile of the separate steps (the fused route off)", step,
                 [label for *_, label in phases], spent, iterations)


def case_batch(args):
    n = 100 if args.quick else 1000
    x, init = gaussian_data(16, 8, 100 * n)
    peer_table("GaussianHMM K=16 D=8 diag, Baum-Welch iteration, float64",
               [(f"{n} x T=100", "gaussian", x, [100] * n, init)], args.repeats)


def case_long(args):
    total = 10_000 if args.quick else 100_000
    x, init = gaussian_data(16, 8, total)
    peer_table("GaussianHMM K=16 D=8 diag, Baum-Welch iteration, float64",
               [(f"1 x T={total}", "gaussian", x, None, init)], args.repeats)


def case_float32(args):
    import torch

    total = 100_000 if args.quick else 1_000_000
    x, init = gaussian_data(16, 8, total, seed=1)
    runs, out = [], {}
    for dtype in (torch.float64, torch.float32):
        model, _ = pyroem_model("gaussian", init, dtype)
        data = model._prepare(torch.as_tensor(x), dtype=dtype)

        def estep(model=model, data=data, dtype=dtype):
            out[dtype] = model.e_step(*data)

        runs.append(estep)
    t64, t32 = best_times(runs, args.repeats)
    l64 = out[torch.float64].log_evidence.item()
    l32 = out[torch.float32].log_evidence.item()
    finite = bool(torch.isfinite(out[torch.float32].gamma).all())
    print(f"HMM E-step, diag GaussianHMM K=16 D=8, one sequence of T={total}")
    print(f"{'float64 s':>10} {'float32 s':>10} {'f32 speed-up':>12} {'log p f64':>16} "
          f"{'log p f32':>16} {'rel diff':>9} {'f32 finite':>10}")
    print(f"{t64:10.4f} {t32:10.4f} {t64 / t32:11.2f}x {l64:16.4f} {l32:16.4f} "
          f"{abs(l32 - l64) / abs(l64):9.2e} {str(finite):>10}")


CASES = {"genome": case_genome, "tiny": case_tiny, "batch": case_batch, "long": case_long,
         "float32": case_float32}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("all",) + tuple(CASES), default="all")
    p.add_argument("--quick", action="store_true", help="small problems (a smoke test)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true",
                   help="tiny case: also print where pyroem's iteration goes, phase by phase")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--clock", choices=tuple(CLOCK), default="wall",
                   help="wall-clock seconds (the default), or this process's CPU seconds "
                        "(steadier on a loaded machine; use with --threads 1)")
    p.add_argument("--pyroem", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help="directory to import pyroem from (default: this checkout)")
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.pyroem))
    global clock
    clock = CLOCK[args.clock]
    import torch

    torch.set_num_threads(args.threads)
    import pyroem

    print(f"pyroem from {os.path.dirname(pyroem.__file__)}, torch threads "
          f"{torch.get_num_threads()}, {args.clock} seconds, best of {args.repeats} "
          "interleaved repeats\n")
    for name, case in CASES.items():
        if args.case in ("all", name):
            case(args)
            print()


if __name__ == "__main__":
    main()
