"""
``pyroem fit|score|sample gmm``: the Gaussian mixture family. ``DATA`` is ``(N, D)``, one
point per row; the parameter file holds the weights, means and covariances; ``--plot``
draws 2-D data coloured by component with the components' 1- and 2-sigma ellipses.
"""


import numpy as np
import torch

from pyroem.cli.family import Family, add_gaussian_options, gaussian_params, mean_lines, save_figure
from pyroem.cli.io import CLIError, param_arrays, param_options, read_array
from pyroem.models import GaussianMixture


class GMMFamily(Family):
    name = "gmm"
    model_class = GaussianMixture
    help = "Gaussian mixture: DATA is (N, D), one point per row"

    def add_fit_arguments(self, parser):
        parser.add_argument("--components", "-k", type=int, default=2, metavar="K",
                            help="number of mixture components (default 2)")
        add_gaussian_options(parser)

    def read_data(self, path, args):
        x = read_array(path)
        return (x.reshape(-1, 1) if x.ndim == 1 else x,)

    def build(self, data, args):
        return GaussianMixture(args.components, data[0].shape[1], args.covariance_type,
                               args.reg_covar)

    def summary(self, model):
        return [f"weights: {np.array2string(model.weights.detach().numpy(), precision=4)}",
                *mean_lines(model)]

    def params(self, model):
        return {"family": self.name, "weights": model.weights.detach().numpy(),
                **gaussian_params(model)}

    def from_params(self, params):
        weights, means, covariances = param_arrays(params, "weights", "means", "covariances")
        covariance_type, reg_covar = param_options(params, covariance_type="full",
                                                   reg_covar=1e-6)
        if means.ndim != 2 or weights.shape != (means.shape[0],):
            raise CLIError(f"parameter file: weights {weights.shape} and means {means.shape} "
                           "do not fit (K,) and (K, D)")
        if not (np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-6):
            raise CLIError("parameter file: weights must be non-negative and sum to 1")
        model = GaussianMixture(means.shape[0], means.shape[1], covariance_type, reg_covar)
        model = model.to(torch.float64)
        model.weights = torch.as_tensor(weights)
        model.means = torch.as_tensor(means)
        model.covariances = torch.as_tensor(covariances)
        return model

    def sample(self, model, num_samples, seed=None):
        x, _ = model.sample(num_samples, seed=seed)
        return x.numpy()

    def check_plot(self, data):
        if data[0].shape[1] != 2:
            raise CLIError(f"--plot needs 2-D data, got {data[0].shape[1]} columns")

    def plot(self, model, data, path):
        """The fitted mixture (:func:`pyroem.plot.plot_mixture`): points coloured by
        responsibility, each component's 1 and 2 sd ellipses."""
        from pyroem.plot import plot_mixture

        ax = plot_mixture(model, torch.as_tensor(data[0]), labels=("column 1", "column 2"))
        ax.set_title(f"Gaussian mixture, K={model.num_components} ({model.covariance_type}): "
                     "ellipses at 1, 2 sd", fontsize=9)
        save_figure(ax.figure, path)
