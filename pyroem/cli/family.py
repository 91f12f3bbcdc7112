"""
What a model family is on the command line: the :class:`Family` base class, whose
methods the sub-commands ``fit``, ``score`` and ``sample`` call, and the helpers that the
families of Gaussian components (``gmm`` and the Gaussian ``hmm``) share: their options,
their summary lines and their parameter-file entries. A new family subclasses
:class:`Family` in a module of its own and is registered in
:data:`pyroem.cli.commands.FAMILIES`.
"""

import numpy as np

from pyroem.cli.io import CLIError
from pyroem.models.gmm import COVARIANCE_TYPES


class Family:
    """
    A model family on the command line. Subclasses set ``name``, ``help`` and
    ``model_class`` (the model its ``.npz`` checkpoints hold) and implement the methods
    below; register an instance in :data:`~pyroem.cli.commands.FAMILIES`.
    """

    name = ""
    help = ""
    model_class = None
    #: every model class whose checkpoints the family reads (subclasses of ``model_class``
    #: built by an option, such as ``plda --rank``); by default ``model_class`` alone
    checkpoint_classes = ()

    def reads_checkpoint_of(self, class_name):
        """The model class of this family named ``class_name``, or ``None``."""
        for cls in (self.model_class,) + tuple(self.checkpoint_classes):
            if cls.__name__ == class_name:
                return cls
        return None

    def add_fit_arguments(self, parser):
        """Family-specific options of ``pyroem fit NAME``."""

    def add_data_arguments(self, parser):
        """Options on how to read ``DATA``, for both ``pyroem fit NAME`` and
        ``pyroem score NAME``."""

    def read_data(self, path, args):
        """The model's data arguments (a tuple) from a data file."""
        raise NotImplementedError

    def build(self, data, args):
        """A fresh model for ``data`` from the fit options."""
        raise NotImplementedError

    def summary(self, model):
        """Lines describing the fitted parameters."""
        return []

    def params(self, model):
        """The fitted parameters as a dict (saved by :func:`~pyroem.cli.io.save_params`)."""
        raise NotImplementedError

    def from_params(self, params):
        """A model from a dict loaded by :func:`~pyroem.cli.io.load_params`."""
        raise NotImplementedError

    def score(self, model, data):
        """Per-item log-likelihood."""
        return model.log_prob(*data).numpy()

    def sample(self, model, num_samples, seed=None):
        """An array of ``num_samples`` draws, reproducible for an int ``seed`` (``None``:
        fresh draws)."""
        raise NotImplementedError

    def add_score_arguments(self, parser):
        """Options of ``pyroem score FAMILY`` beyond the common ones (none by default)."""

    def plot(self, model, data, path):
        """Write a figure of the fit to ``path``. A family that does not override this
        draws no figure, and ``pyroem fit`` then does not offer ``--plot`` for it."""
        raise CLIError(f"--plot is not available for {self.name}")

    def check_plot(self, data):
        """Fail early (before fitting) if the data cannot be plotted."""
        if type(self).plot is Family.plot:  # a family without a figure
            self.plot(None, data, None)


def save_figure(fig, path):
    """Write a Matplotlib figure of a fit to ``path`` (a one-line error if it cannot)."""
    try:
        fig.savefig(path, dpi=120)
    except ValueError as e:  # e.g. an unknown image format
        raise CLIError(f"{path}: cannot write the plot ({e})") from None


# ---------------------------------------------------------------------------- Gaussian components
def add_gaussian_options(parser, of=""):
    """The options of Gaussian components (mixtures and HMM emissions)."""
    parser.add_argument("--covariance-type", default="full", choices=COVARIANCE_TYPES,
                        help=f"covariance structure{of} (default full)")
    parser.add_argument("--reg-covar", type=float, default=1e-6,
                        help="added to covariance diagonals (default 1e-6)")
    parser.add_argument("--init", default="kmeans++", choices=("kmeans++", "random"),
                        help=f"initialisation{of} (default kmeans++)")


def mean_lines(model):
    """Summary lines of the components' means."""
    return [f"mean[{k}]: {np.array2string(mean, precision=4)}"
            for k, mean in enumerate(model.means.detach().numpy())]


def gaussian_params(model):
    """The Gaussian components' entries of a parameter file (GMM and Gaussian HMM)."""
    return {"covariance_type": model.covariance_type, "reg_covar": model.reg_covar,
            "means": model.means.detach().numpy(), "covariances": model.covariances.numpy()}
