"""Exact Expectation-Maximisation, shaped like :class:`pyro.infer.SVI`."""

import pyro
import torch
from torch.distributions import constraints, transform_to

from pyroem.infer.estep import exact_posterior, guess_max_plate_nesting
from pyroem.infer.gaussian.estep import gaussian_posterior
from pyroem.infer.gaussian.route import resolve_gaussian_route
from pyroem.infer.mstep import AutoMStep, ClosedFormMStep
from pyroem.infer.protocols import (
    FusedStepProvider,
    Plan,
    PosteriorWriter,
    check_contract,
    owner_of,
)


def _is_simplex(constraint):
    """Whether ``constraint`` is the probability simplex (torch's, or a subclass such as
    the built-in models')."""
    return isinstance(constraint, constraints._Simplex)


class ParameterSnapshot:
    r"""
    A copy of the parameters that an M-step may change, to undo it: the parameters of
    the modules involved (the model's and guide's owners, or the model itself when it is
    a :class:`~torch.nn.Module`), except the guide's data-sized parameters that a
    built-in declares in ``guide_params`` (the E-step writes those), and, unless
    ``store=False``, every entry of Pyro's param store (what the automatic M-step
    updates).
    """

    def __init__(self, modules=(), store=True):
        self.entries = []  # (container, key, tensor object, saved values)
        # (name, module or None, attribute or store name, container, key, is a simplex)
        self.checked = []
        for module in modules:
            for prefix, sub in module.named_modules():
                # class attributes, read off the class: a miss on a PyroModule instance
                # goes through its __getattr__ and an exception
                skip = {g + "_unconstrained" for g in getattr(type(sub), "guide_params", {})}
                constrained = sub.__dict__.get("_pyro_params", {})
                for key, p in sub._parameters.items():
                    if p is None or key in skip:
                        continue
                    self.entries.append((sub._parameters, key, p, p.detach().clone()))
                    attr = key[:-len("_unconstrained")]
                    attr = attr if key.endswith("_unconstrained") and attr in constrained else key
                    constraint = constrained[attr][0] if attr in constrained else None
                    self.checked.append((prefix + "." + attr if prefix else attr, sub, attr,
                                         sub._parameters, key, _is_simplex(constraint)))
        if store:
            params = pyro.get_param_store()._params
            found = pyro.get_param_store()._constraints
            for name, p in params.items():
                self.entries.append((params, name, p, p.detach().clone()))
                self.checked.append((name, None, name, params, name,
                                     _is_simplex(found.get(name))))

    def restore(self):
        """Put every saved parameter back, bit for bit (the same tensor objects)."""
        with torch.no_grad():
            for container, key, tensor, saved in self.entries:
                if tensor.shape == saved.shape and tensor.dtype == saved.dtype:
                    tensor.copy_(saved)
                else:
                    tensor.data = saved.clone()
                container[key] = tensor

    def _all_finite(self):
        r"""Whether every checked parameter's constrained value is finite, as far as one
        pass over all the unconstrained tensors tells: each tensor whole, except that a
        simplex parameter (stored as logarithms, :math:`-\infty` for a probability of
        zero) contributes its rows' maxima: its softmax is finite exactly when they are.
        ``False`` sends :meth:`first_non_finite` through each parameter."""
        flat = []
        for *_, container, key, simplex in self.checked:
            tensor = container.get(key)
            if tensor is not None and tensor.is_floating_point():
                tensor = tensor.detach()
                rows = simplex and tensor.dim() > 0 and tensor.shape[-1] > 0
                flat.append((tensor.amax(-1) if rows else tensor).reshape(-1))
        try:
            return not flat or bool(torch.cat(flat).isfinite().all())
        except RuntimeError:  # on several devices: entry by entry
            return False

    def first_non_finite(self):
        """``(name, index, value)`` of the first parameter entry (its constrained value,
        the one the model uses) that is NaN or inf, or ``None``."""
        if self._all_finite():
            return None
        store = pyro.get_param_store()
        with torch.no_grad():
            for name, module, attr, container, key, _ in self.checked:
                tensor = container.get(key)
                if tensor is None:
                    continue
                if tensor.is_floating_point() and bool(torch.isfinite(tensor).all()):
                    continue  # finite unconstrained values: finite constrained ones
                if module is None:
                    if attr not in store._params:
                        continue
                    constraint = store._constraints.get(attr, constraints.real)
                    value = transform_to(constraint)(store._params[attr])
                else:
                    value = getattr(module, attr)
                if not torch.is_tensor(value) or not value.is_floating_point():
                    continue
                bad = ~torch.isfinite(value)
                if bad.any():
                    flat = int(bad.reshape(-1).nonzero()[0])
                    index = tuple(int(i) for i in torch.unravel_index(
                        torch.tensor(flat), value.shape)) if value.dim() else ()
                    return name, index, float(value.detach().reshape(-1)[flat])
        return None


class EM:
    r"""
    Exact EM (or, with ``hard=True``, Viterbi training) on a Pyro model.

    Each :meth:`step` performs

    - an **E-step**: :math:`q(Z) := p(Z | X, \eta_{old})`, the exact posterior, so that
      :math:`\mathrm{KL}(q \| p(Z|X)) = 0` and the ELBO equals :math:`\log p(X|\eta_{old})`;
      for discrete latents it comes from :func:`~pyroem.infer.estep.exact_posterior`
      (backprop through Pyro's enumeration), for a linear-Gaussian model with continuous
      latents from :func:`~pyroem.infer.gaussian.gaussian_posterior` (joint Gaussian
      conditioning; its M-step is then :class:`~pyroem.infer.gaussian.GaussianMStep`), and
      a model may supply its own ``e_step``;
    - an **M-step**: :math:`\eta_{new} = \arg\max_\eta Q(q, \eta)` with
      :math:`Q(q, \eta) = E_q[\log p(X, Z | \eta)]`, so :math:`\log p(X|\eta)` never falls.

    With ``hard=True`` ``q`` is a point mass at :math:`\hat Z = \arg\max_Z p(Z|X)` and
    the monotone quantity is :math:`\log p(X, \hat Z | \eta)`.

    Which route each part takes is resolved once, from the contract of
    :mod:`pyroem.infer.protocols`, and shown by :attr:`plan`.

    :param callable model: a Pyro model; when it is a bound method of an object that
        implements :class:`~pyroem.infer.protocols.EStepProvider` or
        :class:`~pyroem.infer.protocols.ClosedFormProvider`, those are used.
    :param callable guide: optional; when its owner implements
        :class:`~pyroem.infer.protocols.PosteriorWriter` the E-step writes q into it.
    :param bool hard: Viterbi (hard-assignment) EM.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :param m_step: an M-step strategy (a callable ``m_step(posterior, *args, **kwargs)``);
        resolved from the model when ``None``.
    :raises TypeError: when the model provides half of a protocol.
    """

    def __init__(self, model, guide=None, *, hard=False, max_plate_nesting=None, m_step=None):
        self.model = model
        self.guide = guide
        self.hard = hard
        self.max_plate_nesting = max_plate_nesting
        own_e_step, closed = check_contract(model, m_step)
        self._e_step = None if own_e_step is None else own_e_step.e_step
        self._gaussian = None  # the generic E-step: enumeration or Gaussian (first call)
        given = m_step
        if m_step is not None:
            route = "given"
        elif closed is not None:
            m_step, route = ClosedFormMStep(closed), f"closed form of {type(closed).__name__}"
        else:
            m_step, route = AutoMStep(model, max_plate_nesting=max_plate_nesting), "automatic"
        self.m_step = m_step
        writer = owner_of(guide)
        self._write = writer.write_posterior if isinstance(writer, PosteriorWriter) else None
        # the owner's E-step and closed form in one call, where it has one (first, in step)
        fused = own_e_step is not None and given is None \
            and isinstance(closed, FusedStepProvider)
        self._fused = closed.fused_step if fused else None
        self.plan = Plan(
            e_step="exact enumeration" if own_e_step is None
            else f"e_step of {type(own_e_step).__name__}",
            write="none" if self._write is None
            else f"write_posterior of {type(writer).__name__}",
            m_step=route,
            params=getattr(m_step, "strategies", None) if closed is not None else None,
            fused="none" if not fused else f"fused_step of {type(closed).__name__}, where "
            "it applies")

    def _posterior(self, *args, **kwargs):
        if self._e_step is not None:
            return self._e_step(*args, hard=self.hard, **kwargs)
        if self._gaussian is None:  # continuous latents? resolved once, with the data
            self._gaussian = resolve_gaussian_route(self, args, kwargs)
        if self._gaussian:
            return gaussian_posterior(self.model, *args, hard=self.hard, **kwargs)
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
        return exact_posterior(self.model, *args, hard=self.hard,
                               max_plate_nesting=self.max_plate_nesting, **kwargs)

    def e_step(self, *args, **kwargs):
        """The exact posterior under the current parameters (a
        :class:`~pyroem.infer.posteriors.Posterior`); writes it into the guide when the
        guide's owner can take it."""
        posterior = self._posterior(*args, **kwargs)
        if self._write is not None:
            self._write(posterior, *args, **kwargs)
        return posterior

    def _snapshot(self):
        """The parameters the M-step may change (see :class:`ParameterSnapshot`): the
        closed form's owner's, or, for the automatic or a given M-step, the param store's
        and those of any module involved."""
        closed = getattr(self.m_step, "owner", None) if isinstance(
            self.m_step, ClosedFormMStep) else None
        if closed is not None:
            modules = [closed] if isinstance(closed, torch.nn.Module) else []
            return ParameterSnapshot(modules, store=not modules)
        modules = []
        for fn in (self.model, self.guide):
            for obj in (owner_of(fn), fn):
                if isinstance(obj, torch.nn.Module) and all(obj is not m for m in modules):
                    modules.append(obj)
        return ParameterSnapshot(modules, store=True)

    def run_m_step(self, posterior, *args, **kwargs):
        """
        The M-step given ``posterior``; updates :attr:`plan` ``.params``.

        Transactional: the parameters it may change are saved first, and restored (bit
        for bit) when it raises or leaves a parameter NaN or inf, which is then a
        ``FloatingPointError`` naming the parameter.
        """
        saved = self._snapshot()
        try:
            self.m_step(posterior, *args, **kwargs)
            bad = saved.first_non_finite()
            if bad is not None:
                name, index, value = bad
                raise FloatingPointError(
                    f"the M-step produced a non-finite value of parameter '{name}' ({value} "
                    f"at index {index}); every parameter was restored to its value before "
                    "the step. Check the data and the model (e.g. a component or state "
                    "with no data, a degenerate covariance: increase reg_covar).")
        except BaseException as e:
            saved.restore()
            if not isinstance(e, FloatingPointError) and hasattr(e, "add_note"):
                e.add_note("pyroem: the M-step failed; every parameter was restored to its "
                           "value before the step")
            raise
        if not isinstance(self.m_step, ClosedFormMStep):  # a closed form's routes are fixed
            strategies = getattr(self.m_step, "strategies", None)
            if strategies:
                self.plan.params = dict(strategies)

    def step(self, *args, **kwargs):
        r"""
        One E-step and one M-step.

        The step completes or changes nothing: the E-step checks the data (the observed
        values must be finite; built-in models also check shapes and dtypes) before any
        parameter changes, the M-step is undone if it fails or leaves a non-finite
        parameter (:meth:`run_m_step`), and the guide's q is written once the M-step has
        succeeded.

        :returns: :math:`-\log p(X | \eta_{old})` (with ``hard=True``,
            :math:`-\log p(X, \hat Z | \eta_{old})`), the loss under the parameters
            the step started from, comparable with ``TraceEnum_ELBO``'s loss.
        :rtype: float
        :raises ValueError: on data the model cannot take; nothing has changed then.
        :raises FloatingPointError: when the M-step leaves a parameter NaN or inf; the
            parameters are restored.
        """
        if self._fused is not None:  # both steps in one call, where the owner can
            with torch.no_grad():
                posterior = self._fused(*args, hard=self.hard, **kwargs)
            if posterior is not None:
                if self._write is not None:
                    self._write(posterior, *args, **kwargs)
                return -float(posterior.log_evidence)
        with torch.no_grad():
            posterior = self._posterior(*args, **kwargs)
        self.run_m_step(posterior, *args, **kwargs)
        if self._write is not None:
            # q := p(Z | X, eta_old), as an E-step writes it; after the M-step so that a
            # refused step leaves the guide as it was too
            self._write(posterior, *args, **kwargs)
        return -float(posterior.log_evidence)

    def resolve(self, *args, **kwargs):
        """The :attr:`plan` with every parameter's route, found without changing any
        parameter (for the automatic M-step this traces the model with the data)."""
        if not self.plan.params and hasattr(self.m_step, "routes"):
            with torch.no_grad():
                posterior = self._posterior(*args, **kwargs)
            self.plan.params = self.m_step.routes(posterior, *args, **kwargs)
        return self.plan

    def evaluate_loss(self, *args, **kwargs):
        r""":math:`-\log p(X|\eta)` under the current parameters, without updating them."""
        with torch.no_grad():
            return -float(self._posterior(*args, **kwargs).log_evidence)
