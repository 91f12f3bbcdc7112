"""
``pyroem fit|score|sample plda``: the two-covariance PLDA family. ``DATA`` is
``(N, 1 + D)``, the speaker label in the first column and one embedding per row; ``score``
gives one log-likelihood per speaker (in sorted-label order) and ``sample`` draws speakers
with five embeddings each, the label column first.
"""

import numpy as np
import torch

from pyroem.cli.family import Family
from pyroem.cli.io import CLIError, param_arrays, param_options, read_array
from pyroem.models import PLDA


class PLDAFamily(Family):
    name = "plda"
    help = ("two-covariance PLDA: DATA is (N, 1 + D), the speaker label in the first column "
            "and one embedding per row")

    def add_fit_arguments(self, parser):
        parser.add_argument("--reg-covar", type=float, default=1e-6,
                            help="added to covariance diagonals (default 1e-6)")

    def read_data(self, path, args):
        table = read_array(path)
        if table.ndim != 2 or table.shape[1] < 2:
            raise CLIError(f"{path}: PLDA data needs a label column and at least one "
                           f"embedding column, got shape {table.shape}")
        return table[:, 1:], table[:, 0]

    def build(self, data, args):
        return PLDA(data[0].shape[1], reg_covar=args.reg_covar)

    def summary(self, model):
        between = np.linalg.eigvalsh(model.between_cov.numpy())[::-1]
        within = np.linalg.eigvalsh(model.within_cov.numpy())[::-1]
        return [f"mean: {np.array2string(model.mean.detach().numpy(), precision=4)}",
                f"between_cov eigenvalues: {np.array2string(between, precision=4)}",
                f"within_cov eigenvalues: {np.array2string(within, precision=4)}"]

    def params(self, model):
        return {"family": self.name, "reg_covar": model.reg_covar,
                "mean": model.mean.detach().numpy(),
                "between_cov": model.between_cov.numpy(),
                "within_cov": model.within_cov.numpy()}

    def from_params(self, params):
        mean, between, within = param_arrays(params, "mean", "between_cov", "within_cov")
        (reg_covar,) = param_options(params, reg_covar=1e-6)
        if mean.ndim != 1:
            raise CLIError(f"parameter file: mean must be (D,), got {mean.shape}")
        model = PLDA(mean.shape[0], reg_covar=reg_covar).to(torch.float64)
        model.mean = torch.as_tensor(mean)
        model.between_cov = torch.as_tensor(between)
        model.within_cov = torch.as_tensor(within)
        return model

    def score(self, model, data):
        # per-speaker log p(x_s1, ..., x_sn) in sorted-label order
        return model.log_prob(*data).numpy()

    def sample(self, model, num_samples):
        # num_samples speakers with 5 embeddings each; the label column first
        x, labels, _ = model.sample(num_samples, 5)
        return np.column_stack([labels.numpy(), x.numpy()])
