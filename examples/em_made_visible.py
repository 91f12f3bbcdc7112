"""EM made visible on the Old Faithful data: the four figures of ``pyroem.plot``.

Run:  python examples/em_made_visible.py [output_dir]
Writes em_bound.png, convergence.png, mixture.png and decomposition.png.
"""

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroem import plot
from pyroem.datasets import load_old_faithful
from pyroem.infer import compare
from pyroem.models import GaussianMixture


def main(out):
    torch.set_num_threads(1)  # 272 points: a thread pool only adds overhead
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = load_old_faithful()
    x = (x - x.mean(0)) / x.std(0)
    # A poor start (as in Bishop's figure 9.8), so that EM has some way to go.
    gmm = GaussianMixture(2, dim=2, reg_covar=0.0).to(torch.float64)
    gmm.means = torch.tensor([[-1.5, 1.0], [1.5, -1.0]], dtype=torch.float64)
    gmm.covariances = 0.5 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2)

    # (a) one EM step seen as maximising a bound that touches log p(X) at eta_old
    plot.plot_em_bound(gmm, x, path=out / "em_bound.png")
    # (b) EM, Viterbi EM and SVI from the same start
    histories = compare(gmm, x, max_iter=60, init="given", lr=0.05)
    plot.plot_convergence(histories, num_items=len(x), path=out / "convergence.png")
    for method, hist in histories.items():
        print(f"{method:8s} log p(X)/N after {hist.num_iters} iterations: "
              f"{hist.records['log_evidence'][-1] / len(x):.5f} in {hist.seconds[-1]:.3f} s")
    # (c) the fitted mixture, points coloured by responsibility
    fitted = copy.deepcopy(gmm)
    fitted.fit(x, init="given")
    plot.plot_mixture(fitted, x, path=out / "mixture.png")
    # (d) log p(X) = ELBO + KL after every E-step and M-step
    plot.plot_decomposition(histories["em"], path=out / "decomposition.png")
    print(f"figures written to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "figures")
