r"""
:class:`~pyroem.models.GaussianHMM`'s whole EM iteration in one compiled call, for small
problems (:func:`fused_step`, the :class:`~pyroem.infer.protocols.FusedStepProvider`
route of :class:`~pyroem.infer.EM`).

The separate steps (:meth:`~pyroem.models.hmm.chain.HiddenMarkovModel.e_step`,
``expected_statistics`` and ``maximize``) compute the same thing through about a hundred
torch operations and four hundred Python calls per iteration; on a sequence of a few
hundred frames with two states that overhead is the whole cost (bench/hmm.py ``--case
tiny``). The fused route reads the parameters as stored, runs
:mod:`~pyroem.ops.compiled_hmm`'s kernel and writes the new values only when the kernel
reports success: otherwise nothing has changed and EM runs the separate steps, which give
the same result or raise the same error.
"""

import functools

from pyroem.infer.posteriors import ChainPosterior
from pyroem.models import gaussian_direct as gd
from pyroem.models import raw
from pyroem.models.hmm.chain import chain_factors
from pyroem.ops import compiled_hmm as ch

#: the parameters that the kernel's flags name: (letter, flag, owner ("chain" or
#: "emission"), parameter, key of the kernel's output)
_PARAMS = (("s", ch.START, "chain", "start_probs", "new_us"),
           ("t", ch.TRANS, "chain", "trans_probs", "new_ut"),
           ("m", ch.MEANS, "emission", "means", "new_means"),
           ("c", ch.COVARIANCES, "emission", "scales", "new_log_scales"))


def fused_step(model, x, lengths, obs_mask=None, labels=None, sample_weight=None, hard=False):
    r"""
    One EM iteration of ``model`` (a :class:`~pyroem.models.GaussianHMM`) where the fused
    kernel applies: the posterior under the parameters it started from (as
    :meth:`~pyroem.models.hmm.chain.HiddenMarkovModel.e_step` returns it), with the
    trained parameters set to :math:`\arg\max_\eta Q`.

    It applies to soft EM on whole observations (no ``obs_mask``, ``labels`` or
    ``sample_weight``), diagonal or spherical covariances, at most
    :data:`~pyroem.ops.compiled.MAX_STATES` states, a problem small enough for
    :func:`~pyroem.models.gaussian_direct.direct_applies`, no ``block_length``, on the
    CPU with the compiled kernels loaded.

    :returns: the posterior, or ``None`` (nothing changed) where the route does not apply
        or the M-step gave a value it does not write (a variance that is not positive, a
        NaN).
    :raises ValueError: on data the model cannot take (before anything changes).
    """
    emission = raw.child(model, "emission")
    spherical = emission.covariance_type == "spherical"
    if hard or obs_mask is not None or labels is not None or sample_weight is not None \
            or model.block_length is not None or not (spherical or emission.covariance_type
                                                      == "diag") \
            or not gd.direct_applies(emission, x):
        return None
    emission.check(x, lengths)
    # as stored: logarithms of the probabilities and of the standard deviations
    stored = [owner._parameters[name + "_unconstrained"] for owner, name in (
        (model, "start_probs"), (model, "trans_probs"), (emission, "means"),
        (emission, "scales"))]
    if not ch.applies(x, *stored):
        return None
    params, dtype = model.params, x.dtype
    final = model.final_states
    out = ch.gaussian_hmm_step(
        x, lengths, stored[:2], (stored[2], stored[3], spherical),
        sum(flag for letter, flag, *_ in _PARAMS if letter in params), emission.reg_covar,
        (model.start_concentration.to(dtype), model.trans_concentration.to(dtype)),
        None if final is None else final.to(dtype))
    if out is None:
        return None
    owners = {"chain": model, "emission": emission}
    for letter, _, owner, name, key in _PARAMS:  # the new values, valid by construction
        if letter in params:
            owners[owner]._parameters[name + "_unconstrained"].data = out[key]
    posterior = ChainPosterior(out["log_ev"], out["gamma"], out["start"], out["xi"])
    posterior.chain_factors = functools.partial(
        chain_factors, out["log_start"], out["trans"], out["log_emit"], None, lengths,
        model._log_final(dtype))
    return posterior
