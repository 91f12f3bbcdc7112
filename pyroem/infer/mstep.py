"""M-step strategies.

An M-step is a callable ``m_step(posterior, *args, **kwargs)`` that maximises the
auxiliary function :math:`Q(q, \\eta) = E_q[\\log p(X, Z|\\eta)]` with the E-step's
posterior ``q`` held fixed, updating the parameters in place.
"""


class ClosedFormMStep:
    r"""
    Strategy 1: the model's own closed form, through expected sufficient statistics.

    The model object implements

    - ``expected_statistics(posterior, *args, **kwargs) -> dict`` of tensors that are
      **additive** over data items (so mini-batch, out-of-core and multi-process EM sum
      them before maximising), and
    - ``maximize(stats)``: set the parameters to :math:`\arg\max_\eta Q`.
    """

    def __init__(self, owner):
        self.owner = owner

    @property
    def strategies(self):
        """``{param_name: "closed-form:<Owner>"}`` for the owner's parameters."""
        label = f"closed-form:{type(self.owner).__name__}"
        names = getattr(self.owner, "named_parameters", lambda: [])()
        return {n.replace("_unconstrained", ""): label for n, _ in names
                if not n.startswith("q_")}

    def __call__(self, posterior, *args, **kwargs):
        stats = self.owner.expected_statistics(posterior, *args, **kwargs)
        self.owner.maximize(stats)
        return stats


def find_closed_form(model):
    """The closed-form M-step of ``model``'s owner object, or ``None``."""
    owner = getattr(model, "__self__", None)
    if callable(getattr(owner, "expected_statistics", None)) and callable(
        getattr(owner, "maximize", None)
    ):
        return ClosedFormMStep(owner)
    return None
