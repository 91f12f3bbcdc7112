"""One Baum-Welch iteration of the count HMMs (Poisson, Multinomial): pyroem against hmmlearn.

Run by hand:  python bench/hmm_families.py [--k 4 --repeats 5 --threads 2]

Prints the best-of-N wall-clock seconds (runs interleaved, as bench/hmm.py) of one E-step
plus M-step of hmmlearn's ``PoissonHMM`` and ``MultinomialHMM`` (``implementation="scaling"``,
its ``_do_estep`` + ``_do_mstep``) and of ``pyroem.infer.EM(m.model, m.guide).step`` (the
guide included: the E-step hands its posterior to the Markov-chain guide, computed only
when q is read) on the same data and parameters (float64), for one sequence of T=100000
frames and for 1000 sequences of 100 frames, with the speed-ups; the log-likelihoods of
the two libraries are checked equal first. Then, for scale, the cost of reading the
guide's q after an E-step (the backward pass of the posterior chain) on the batch.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from hmmlearn import hmm as hl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pyroem

from pyroem.infer import EM
from pyroem.models import MultinomialHMM, PoissonHMM

logging.getLogger("hmmlearn").setLevel(logging.ERROR)


def best_times(fns, repeats):
    import time

    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def make_problem(family, k, total, seed=0):
    rng = np.random.default_rng(seed)
    start, trans = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k) * 2, size=k)
    z = rng.integers(0, k, size=total)
    if family == "poisson":
        rates = rng.gamma(2.0, 3.0, size=(k, 3))
        x = rng.poisson(rates[z])
        return x, (start, trans, rates * rng.uniform(0.5, 1.5, size=rates.shape))
    probs = rng.dirichlet(np.ones(8), size=k)
    x = np.stack([rng.multinomial(20, probs[s]) for s in z])
    return x, (start, trans, rng.dirichlet(np.ones(8), size=k))


def hmmlearn_step(family, x, lengths, init):
    start, trans, emit = init
    if family == "poisson":
        ref = hl.PoissonHMM(len(start), init_params="", implementation="scaling")
        ref.lambdas_ = emit
    else:
        ref = hl.MultinomialHMM(len(start), n_trials=20, init_params="",
                                implementation="scaling")
        ref.emissionprob_ = emit
    ref.startprob_, ref.transmat_ = start, trans
    ref._check()
    name = "lambdas_" if family == "poisson" else "emissionprob_"

    def step():
        stats, log_prob = ref._do_estep(x, lengths)
        ref._do_mstep(stats)
        ref.startprob_, ref.transmat_ = start, trans
        setattr(ref, name, emit)
        return log_prob

    return step


def pyroem_step(family, x, lengths, init):
    start, trans, emit = init
    k = len(start)
    m = (PoissonHMM(k, x.shape[1]) if family == "poisson" else
         MultinomialHMM(k, x.shape[1], n_trials=20)).double()
    seqs = [torch.as_tensor(s) for s in np.split(x, np.cumsum(lengths)[:-1])]
    args = m.prepare(seqs)
    em = EM(m.model, m.guide)
    name = "rates" if family == "poisson" else "emission_probs"

    def step():
        m.start_probs, m.trans_probs = start, trans
        setattr(m, name, emit)
        return -em.step(*args)

    def read_q():
        em.e_step(*args)
        return m.q_trans_logits

    return step, read_q


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads}, K={args.k}, float64, best of {args.repeats} interleaved; "
          "Poisson D=3, Multinomial M=8 n_trials=20; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'family':<12}{'data':<16}{'hmmlearn s':>12}{'pyroem s':>12}{'speed-up':>10}")
    for family in ("poisson", "multinomial"):
        for label, lengths in (("1 x 100000", [100_000]), ("1000 x 100", [100] * 1000)):
            x, init = make_problem(family, args.k, sum(lengths))
            ref, (ours, read_q) = hmmlearn_step(family, x, lengths, init), pyroem_step(
                family, x, lengths, init)
            a, b = ref(), ours()
            assert abs(a - b) <= 1e-8 * abs(a), (a, b)  # the same iteration
            t_ref, t_ours = best_times([ref, ours], args.repeats)
            print(f"{family:<12}{label:<16}{t_ref:>12.4f}{t_ours:>12.4f}{t_ref / t_ours:>10.1f}")
            if lengths[0] == 100:
                (t_q,) = best_times([read_q], args.repeats)
                print(f"{'':<12}{'  + read q':<16}{'':>12}{t_q:>12.4f}"
                      "   (E-step + the guide's posterior chain)")


if __name__ == "__main__":
    main()
