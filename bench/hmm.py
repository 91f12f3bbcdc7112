"""One Baum-Welch iteration of a diagonal-covariance Gaussian HMM: pyroem against hmmlearn.

Run by hand:  python bench/hmm.py [--k 16 --dim 8 --repeats 5 --threads 1 --clock wall --long 1000000]

Prints the best-of-N wall-clock seconds (runs interleaved) of one E-step plus M-step of hmmlearn's ``GaussianHMM``
(``implementation="scaling"`` and ``"log"``, its ``_do_estep`` + ``_do_mstep``) and of
``pyroem.infer.EM.step`` on the same data and parameters (float64), for one sequence of
T=100000 frames and for 1000 sequences of 100 frames, with the speed-ups (and, for scale, a
small problem: one sequence of 300 frames, K=2, D=1). Then the
float32-vs-float64 log-likelihood of one sequence of ``--long`` frames (DESIGN.md: within
1e-5 relative, never NaN).
"""

import argparse
import time

import numpy as np
import torch
from hmmlearn import hmm as hl

from pyroem.infer import EM
from pyroem.models import GaussianHMM


def best_times(fns, repeats, clock=time.perf_counter):
    """Best-of-``repeats`` wall-clock seconds of each function, the functions interleaved
    (so that load from other processes hits them alike); one warm-up call each (it fills
    the data-feature cache, as every EM iteration after the first sees it)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = clock()
            fn()
            ts.append(clock() - t)
    return [min(ts) for ts in times]


def make_data(k, d, total, seed=0):
    rng = np.random.default_rng(seed)
    gen = hl.GaussianHMM(k, "diag", init_params="", random_state=seed)
    gen.startprob_ = np.full(k, 1.0 / k)
    gen.transmat_ = np.full((k, k), 0.1 / (k - 1)) + (0.9 - 0.1 / (k - 1)) * np.eye(k)
    gen.means_ = rng.normal(0, 3, size=(k, d))
    gen.covars_ = np.ones((k, d))
    x, _ = gen.sample(total, random_state=seed)
    # a different, fixed starting point for both libraries
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k)
    means = gen.means_ + rng.normal(size=(k, d))
    covars = rng.uniform(0.5, 2.0, size=(k, d))
    return x, (start, trans, means, covars)


def hmmlearn_iteration(x, lengths, init, implementation):
    start, trans, means, covars = init
    ref = hl.GaussianHMM(len(start), "diag", init_params="", implementation=implementation,
                         covars_prior=0.0)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covars
    ref._check()

    def step():
        stats, _ = ref._do_estep(x, lengths)
        ref._do_mstep(stats)
        ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covars

    return step


def pyroem_iteration(x, lengths, init, dtype=torch.float64):
    start, trans, means, covars = init
    k, d = means.shape
    model = GaussianHMM(k, d, "diag", reg_covar=0.0).to(dtype)
    args = model._prepare([torch.as_tensor(s) for s in np.split(x, np.cumsum(lengths)[:-1])]
                          if lengths is not None else torch.as_tensor(x), dtype=dtype)

    def reset():
        model.start_probs = torch.as_tensor(start, dtype=dtype)
        model.trans_probs = torch.as_tensor(trans, dtype=dtype)
        model.means = torch.as_tensor(means, dtype=dtype)
        model.covariances = torch.as_tensor(covars, dtype=dtype)

    reset()
    em = EM(model.model, model.guide)

    def step():
        em.step(*args)
        reset()

    return step, model, args


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall-clock time, or this process's CPU time (steadier on a loaded machine)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1, as hmmlearn; 0 keeps torch's "
                        "default). The recursions are many small ops: on a shared machine a "
                        "second thread mostly waits for the first")
    p.add_argument("--long", type=int, default=1_000_000,
                   help="frames of the float32 accuracy check (0 to skip)")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    k, d = args.k, args.dim
    cases = [("1 x T=100000", 100_000, None, k, d), ("1000 x T=100", 100_000, [100] * 1000, k, d),
             # a small problem (Old Faithful's size) for scale: per-call overhead dominates
             ("1 x T=300 *", 300, None, 2, 1)]
    print(f"Baum-Welch iteration, diag Gaussian HMM K={k} D={d}, float64, torch threads="
          f"{torch.get_num_threads()}, {args.clock} seconds, best of {args.repeats} (interleaved)")
    print(f"{'data':14} {'hmmlearn scaling s':>18} {'hmmlearn log s':>15} {'pyroem s':>9} "
          f"{'vs scaling':>10} {'vs log':>7}")
    for name, total, lengths, ck, cd in cases:
        x, init = make_data(ck, cd, total)
        step, _, _ = pyroem_iteration(x, lengths, init)
        t_scaling, t_log, t_ours = best_times(
            [hmmlearn_iteration(x, lengths, init, "scaling"),
             hmmlearn_iteration(x, lengths, init, "log"), step], args.repeats,
            time.perf_counter if args.clock == "wall" else time.process_time)
        print(f"{name:14} {t_scaling:18.4f} {t_log:15.4f} {t_ours:9.4f} "
              f"{t_scaling / t_ours:9.2f}x {t_log / t_ours:6.2f}x")
    print("* K=2 states, D=1")

    if args.long:
        x, init = make_data(k, d, args.long, seed=1)
        res = {}
        for dtype in (torch.float64, torch.float32):
            _, model, data = pyroem_iteration(x, None, init, dtype)
            t = time.perf_counter()
            post = model.e_step(*data)
            res[dtype] = (post.log_evidence.item(), time.perf_counter() - t,
                          bool(torch.isfinite(post.gamma).all()))
        (l64, t64, _), (l32, t32, ok32) = res[torch.float64], res[torch.float32]
        print(f"\nT={args.long} one sequence, E-step: float64 log p(X) = {l64:.6f} ({t64:.2f} s), "
              f"float32 = {l32:.6f} ({t32:.2f} s), relative difference "
              f"{abs(l32 - l64) / abs(l64):.2e}, float32 posteriors finite: {ok32}")


if __name__ == "__main__":
    main()
