"""The record of a fit."""

from dataclasses import dataclass, field


@dataclass
class History:
    r"""
    What a fit did, one entry per iteration.

    :ivar list log_likelihood: total :math:`\log p(X)` under the parameters each
        iteration started from (for ``method="viterbi"``, :math:`\log p(X, \hat Z)`).
    :ivar list seconds: wall-clock seconds since the start of the fit, at the end of
        each iteration.
    :ivar float final_log_likelihood: the objective under the final parameters.
    :ivar bool converged: whether the change per item fell below ``tol``.
    :ivar int num_iters: iterations run.
    :ivar str method: ``"em"``, ``"viterbi"`` or ``"svi"``.
    :ivar dict records: further per-iteration series (e.g. the ELBO decomposition).
    """

    method: str = "em"
    log_likelihood: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    final_log_likelihood: float = float("nan")
    converged: bool = False
    num_iters: int = 0
    restart: int = 0
    records: dict = field(default_factory=dict)

    def record(self, name, value):
        """Append ``value`` to the per-iteration series ``name``."""
        self.records.setdefault(name, []).append(value)

    def __len__(self):
        return len(self.log_likelihood)
