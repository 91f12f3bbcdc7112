"""Time one EM step of chains that users write, against the peers of issue 12:

- a user HMM observing through ``pyro.distributions.DiscreteHMM`` (simplex
  ``pyro.param`` s, diagonal Normal emissions; vectorised E-step, automatic closed-form
  M-step) against the built-in ``pyroem.models.GaussianHMM`` of the same size, at
  ``T`` = 1e4 and 1e5, ``K`` = 4 and 16 (bar: within 1.5 times);
- a user HMM written with ``pyro.markov`` (K=4, T=1000, scalar Normal emissions) against
  Pyro's own ``TraceEnum_ELBO`` loss plus backward on the same model (bar: 3 times faster).

Float64, ``torch.set_num_threads(--threads)`` (default 2), best of ``--repeats``
interleaved runs after one warm-up each (``--clock cpu``: process CPU time, steadier on a
loaded machine); ratios are of times measured in the same run.

    python bench/generic_chains.py               # both tables
    python bench/generic_chains.py --only discrete --repeats 3
"""

import argparse
import os
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch.distributions import constraints

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyroem.infer import EM
from pyroem.models import GaussianHMM

D64 = torch.float64


CLOCK = time.perf_counter


def best_times(fns, repeats):
    """Best-of-``repeats`` seconds of each function (on :data:`CLOCK`), the functions
    interleaved, after one warm-up call each."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = CLOCK()
            fn()
            ts.append(CLOCK() - start)
    return [min(ts) for ts in times]


def make_data(k, d, steps, generator):
    """A sample path of a sticky K-state chain with well separated Normal emissions, and
    a different starting point ``(start, trans, means, scales)``."""
    trans = torch.full((k, k), 0.1 / (k - 1), dtype=D64).fill_diagonal_(0.9)
    means = 3 * torch.randn(k, d, generator=generator, dtype=D64)
    z = torch.empty(steps, dtype=torch.long)
    z[0] = 0
    for t in range(1, steps):  # one multinomial draw per step is fine at 1e5
        z[t] = torch.multinomial(trans[z[t - 1]], 1, generator=generator)
    x = means[z] + torch.randn(steps, d, generator=generator, dtype=D64)
    start = torch.distributions.Dirichlet(torch.ones(k, dtype=D64)).sample()
    init = (start, torch.full((k, k), 1.0 / k, dtype=D64) * 0.5 + 0.5 * torch.eye(k, dtype=D64),
            means + 0.5 * torch.randn(k, d, generator=generator, dtype=D64),
            torch.full((k, d), 1.5, dtype=D64))
    return x, init


def discrete_hmm_model(x):
    """The user's model: one sequence ``x (T, D)`` through DiscreteHMM."""
    init, trans = pyro.param("init"), pyro.param("trans")
    locs, scales = pyro.param("locs"), pyro.param("scales")
    obs = dist.Normal(locs, scales).to_event(1)
    pyro.sample("x", dist.DiscreteHMM(init.log(), trans.log(), obs), obs=x)


def user_step(x, init):
    start, trans, means, scales = init

    def reset():
        pyro.clear_param_store()
        pyro.param("init", start.clone(), constraint=constraints.simplex)
        pyro.param("trans", trans.clone(), constraint=constraints.simplex)
        pyro.param("locs", means.clone())
        pyro.param("scales", scales.clone(), constraint=constraints.positive)

    reset()
    em = EM(discrete_hmm_model, max_plate_nesting=0)

    def step():
        em.step(x)
        reset()

    return step, em


def builtin_step(x, init):
    start, trans, means, scales = init
    k, d = means.shape
    model = GaussianHMM(k, d, "diag", reg_covar=0.0).double()
    args = model._prepare(x, dtype=D64)

    def reset():
        model.start_probs = start @ trans  # the same chain: DiscreteHMM's z_0 is before x_1
        model.trans_probs = trans
        model.means = means
        model.covariances = scales ** 2

    reset()
    em = EM(model.model, model.guide)

    def step():
        em.step(*args)
        reset()

    return step


def discrete_table(ks, steps_list, d, repeats, generator):
    print(f"DiscreteHMM user model vs built-in GaussianHMM (diag, D={d}), one EM step, s")
    print(f"{'K':>4} {'T':>8} {'built-in':>10} {'user':>10} {'user/built-in':>14}")
    for k in ks:
        for steps in steps_list:
            x, init = make_data(k, d, steps, generator)
            user, em = user_step(x, init)
            t_builtin, t_user = best_times([builtin_step(x, init), user], repeats)
            print(f"{k:>4} {steps:>8} {t_builtin:>10.4f} {t_user:>10.4f} "
                  f"{t_user / t_builtin:>14.2f}")
    print(f"routes: {em.plan.params}")


def markov_model(x):
    """The user's model written with pyro.markov: one sequence ``x (T,)``."""
    init, trans = pyro.param("init"), pyro.param("trans")
    locs, scales = pyro.param("locs"), pyro.param("scales")
    z = pyro.sample("z_0", dist.Categorical(init))
    pyro.sample("x_0", dist.Normal(locs[z], scales[z]), obs=x[0])
    for t in pyro.markov(range(1, len(x))):
        z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
        pyro.sample(f"x_{t}", dist.Normal(locs[z], scales[z]), obs=x[t])


def markov_table(k, steps, repeats, generator):
    x, (start, trans, means, scales) = make_data(k, 1, steps, generator)
    x = x.squeeze(-1)

    def reset():
        pyro.clear_param_store()
        pyro.param("init", start.clone(), constraint=constraints.simplex)
        pyro.param("trans", trans.clone(), constraint=constraints.simplex)
        pyro.param("locs", means.squeeze(-1).clone())
        pyro.param("scales", scales.squeeze(-1).clone(), constraint=constraints.positive)

    reset()
    em = EM(markov_model, max_plate_nesting=0)
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    model = config_enumerate(markov_model, "parallel")

    def em_step():
        em.step(x)
        reset()

    def pyro_step():
        loss = elbo.differentiable_loss(model, lambda x: None, x)
        loss.backward()
        for p in pyro.get_param_store().values():
            p.unconstrained().grad = None

    t_pyro, t_em = best_times([pyro_step, em_step], repeats)
    print(f"\npyro.markov user HMM (K={k}, T={steps}, Normal): one EM step vs "
          "TraceEnum_ELBO loss + backward, s")
    print(f"{'TraceEnum':>10} {'EM step':>10} {'TraceEnum/EM':>13}")
    print(f"{t_pyro:>10.4f} {t_em:>10.4f} {t_pyro / t_em:>13.2f}")
    print(f"routes: {em.plan.params}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1)
    parser.add_argument("--only", choices=("discrete", "markov"), default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or this process's CPU time (all its threads; "
                        "steadier on a loaded machine)")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, "
          f"threads {torch.get_num_threads()}, float64, best of {args.repeats}, "
          f"{args.clock} clock")
    generator = torch.Generator().manual_seed(0)
    warnings.simplefilter("ignore", UserWarning)
    if args.only != "markov":
        discrete_table(args.ks, args.steps, args.dim, args.repeats, generator)
    if args.only != "discrete":
        markov_table(4, 1000, args.repeats, generator)


if __name__ == "__main__":
    main()
