r"""
The EM contract: what a model and its guide may provide, and the plan that
:class:`~pyroem.infer.EM` resolves from it once per model.

A Pyro model is a callable. When it is a bound method (``m.model``), the object it is
bound to, its *owner*, may take over parts of EM by implementing these protocols:

=========================  ===============================================  =================
protocol                   methods                                          replaces
=========================  ===============================================  =================
:class:`EStepProvider`     ``e_step(*args, hard=False) -> Posterior``       the generic E-step
:class:`ClosedFormProvider` ``expected_statistics(posterior, *args)``,      the automatic M-step
                           ``maximize(stats)``
:class:`FusedStepProvider` ``fused_step(*args, hard=False)``                both, where it
                           ``-> Posterior or None``                         applies (with the
                                                                            two above)
:class:`PosteriorWriter`   ``write_posterior(posterior, *args)``            (on the guide's
                                                                            owner) nothing: q
                                                                            is written
=========================  ===============================================  =================

Without them EM uses the generic routes: the exact E-step by enumeration
(:func:`~pyroem.infer.exact_posterior`, a
:class:`~pyroem.infer.posteriors.DiscretePosterior`) and the automatic M-step
(:class:`~pyroem.infer.AutoMStep`: a closed-form rule per recognised distribution
family, numerical maximisation of :math:`Q` otherwise). A model that provides half of a
protocol (``expected_statistics`` without ``maximize``), or its own ``e_step`` without a
closed-form M-step, is refused with an error that says what is missing.
"""

from typing import Protocol, runtime_checkable

from pyroem.infer.posteriors import Posterior


@runtime_checkable
class EStepProvider(Protocol):
    """A model owner that computes its exact posterior itself (e.g. forward-backward for
    an HMM, the conjugate Gaussian posterior for PLDA)."""

    def e_step(self, *args, hard: bool = False, **kwargs) -> Posterior:
        """The exact posterior under the current parameters (a point mass at the most
        probable latents with ``hard=True``)."""


@runtime_checkable
class ClosedFormProvider(Protocol):
    r"""A model owner with a closed-form M-step through expected sufficient statistics."""

    def expected_statistics(self, posterior: Posterior, *args, **kwargs) -> dict:
        """Expected sufficient statistics under ``posterior``, additive over data items."""

    def maximize(self, stats: dict) -> None:
        r"""Set the parameters to :math:`\arg\max_\eta Q` given the statistics."""


@runtime_checkable
class FusedStepProvider(Protocol):
    r"""A model owner with its own E-step and closed-form M-step that can also run the two
    as one (e.g. a small problem in compiled code, where the separate steps' overhead is
    the iteration's cost). :meth:`~pyroem.infer.EM.step` tries it first when EM runs the
    owner's ``e_step`` and closed form; its result must be theirs."""

    def fused_step(self, *args, hard: bool = False, **kwargs):
        r"""The posterior under the current parameters (as ``e_step``), with the parameters
        set to :math:`\arg\max_\eta Q` (as ``expected_statistics`` and ``maximize``); or
        ``None``, with nothing changed, where it does not apply or does not succeed (then
        the separate steps run, and report any failure). Data it cannot take raise
        before anything changes, as ``e_step``'s do."""


@runtime_checkable
class PosteriorWriter(Protocol):
    """A guide owner whose guide holds q as parameters that the E-step can set exactly
    (so that ``KL(q || p(Z|X)) = 0`` and the ELBO equals ``log p(X)`` after it)."""

    def write_posterior(self, posterior: Posterior, *args, **kwargs) -> None:
        """Set the guide's q to ``posterior``."""


_HALVES = ("expected_statistics", "maximize")


def owner_of(fn):
    """The object a bound method belongs to (``None`` for a plain function)."""
    return getattr(fn, "__self__", None)


def check_contract(model, m_step=None):
    """Raise ``TypeError`` when the model's owner provides half of a protocol.

    :returns: ``(e_step, closed_form)``: the owner when it provides its own E-step,
        resp. closed-form M-step, else ``None``.
    """
    owner = owner_of(model)
    name = type(owner).__name__
    present = [m for m in _HALVES if callable(getattr(owner, m, None))]
    if len(present) == 1:
        missing = [m for m in _HALVES if m not in present][0]
        raise TypeError(f"{name} provides {present[0]}() but not {missing}(): a closed-form "
                        "M-step needs both (see pyroem.infer.protocols.ClosedFormProvider)")
    e_step = owner if isinstance(owner, EStepProvider) else None
    closed = owner if present else None
    if e_step is not None and closed is None and m_step is None:
        raise TypeError(
            f"{name} provides its own e_step() but no closed-form M-step "
            "(expected_statistics() and maximize()): the automatic M-step reads the "
            "posterior of the generic E-step only. Implement both, or give EM an m_step.")
    return e_step, closed


class Plan:
    r"""
    How :class:`~pyroem.infer.EM` runs on one model: resolved once, from the model's
    contract, when the ``EM`` object is built.

    :ivar str e_step: ``"e_step of <Owner>"`` or ``"exact enumeration"``
        (:func:`~pyroem.infer.exact_posterior`).
    :ivar str write: ``"write_posterior of <Owner>"`` or ``"none"`` (the guide, if any,
        is not set by the E-step).
    :ivar str m_step: ``"closed form of <Owner>"``, ``"automatic"`` or ``"given"``.
    :ivar str fused: ``"fused_step of <Owner>, where it applies"`` (both steps in one
        call, :class:`FusedStepProvider`) or ``"none"``.
    :ivar dict params: the route of each parameter: ``"closed-form:<Owner>"``,
        ``"closed-form:<Family>"`` (an automatic rule, e.g. ``"closed-form:Poisson"``),
        ``"numerical"`` or ``"unused"``. For the automatic M-step it is known once the
        model has been traced with data: after the first step (or :meth:`EM.resolve`).
    """

    def __init__(self, e_step, write, m_step, params=None, fused="none"):
        self.e_step = e_step
        self.write = write
        self.m_step = m_step
        self.params = dict(params or {})
        self.fused = fused

    def __repr__(self):
        lines = [f"E-step: {self.e_step}", f"guide:  {self.write}", f"M-step: {self.m_step}"]
        if self.fused != "none":
            lines.append(f"fused:  {self.fused}")
        if self.params:
            width = max(len(n) for n in self.params)
            lines += [f"  {n:<{width}}  {r}" for n, r in sorted(self.params.items())]
        else:
            lines.append("  (parameters resolved at the first step)")
        return "\n".join(lines)
