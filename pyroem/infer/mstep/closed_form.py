"""Strategy 1 of the M-step: the model's own closed form (see
:class:`~pyroem.infer.protocols.ClosedFormProvider`)."""


class ClosedFormMStep:
    r"""
    Strategy 1: the model's own closed form, through expected sufficient statistics.

    The model object implements

    - ``expected_statistics(posterior, *args, **kwargs) -> dict`` of tensors that are
      **additive** over data items once taken about one origin: moments about a
      ``shift`` are merged exactly by :func:`~pyroem.distributions.merge.add_statistics`
      (so mini-batch, out-of-core and multi-process EM combine them before maximising;
      :mod:`pyroem.infer.batches`), and
    - ``maximize(stats)``: set the parameters to :math:`\arg\max_\eta Q`.
    """

    def __init__(self, owner):
        self.owner = owner

    @property
    def strategies(self):
        """``{param_name: "closed-form:<Owner>"}`` for the owner's model parameters (the
        guide's ``q_*`` parameters are set by the E-step, not the M-step)."""
        label = f"closed-form:{type(self.owner).__name__}"
        names = getattr(self.owner, "named_parameters", lambda: [])()
        return {n.replace("_unconstrained", ""): label for n, _ in names
                if not n.startswith("q_")}

    def __call__(self, posterior, *args, **kwargs):
        stats = self.owner.expected_statistics(posterior, *args, **kwargs)
        self.owner.maximize(stats)
        return stats

