r"""
The explicit state of a built-in model: its **configuration** (the constructor's
arguments, each stored on the model under its own name) and its **parameters** (the
model's and the guide's, as the module's unconstrained tensors and buffers).

``m.state_dict()`` is PyTorch's, plus the configuration under ``"_extra_state"``;
``m.load_state_dict(state)`` restores both exactly (values, dtypes and the shapes of the
guide's data-sized parameters), rebuilding the model first when the configuration
differs. So ``torch.save(m.state_dict(), f)`` is a checkpoint, and
``type(m).from_state_dict(torch.load(f))`` (or ``load_state_dict`` into any model of that
class) gives the same model back.
"""

import copy
import functools
import inspect
from collections import namedtuple

import torch
from pyro.nn import PyroParam
from torch.distributions import transform_to

_EXTRA = "_extra_state"

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


@functools.lru_cache(maxsize=None)
def _constructor_arguments(cls):
    """Names of the arguments of ``cls`` and its bases' constructors, without those the
    class lists in ``not_config``."""
    skip, names = set(cls.not_config), []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass.__module__.split(".")[0] in ("torch", "pyro", "builtins"):
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) \
                    and p.name not in names and p.name not in skip:
                names.append(p.name)
    return tuple(names)


def _same(a, b):
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape \
            and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


class ModelState:
    """Mixin of :class:`~pyroem.models.EMModel`: configuration, ``state_dict`` and
    ``load_state_dict`` that round-trip exactly.

    A model declares the guide's parameters whose shape follows the data in
    ``guide_params``: ``{name: (constraint, event_dim)}``; they may be absent (no data
    seen yet) or of any size in a state. Buffers (e.g. a guide's bookkeeping) may also be
    of any size. Constructor arguments that are not configuration (the module's ``name``,
    deprecated aliases) are listed in ``not_config``."""

    guide_params = {}
    not_config = ("name",)

    def config(self):
        """The constructor's arguments, ``{name: value}``: ``type(m)(**m.config())`` is a
        model of the same structure (with fresh parameters)."""
        return {name: copy.deepcopy(getattr(self, name))
                for name in _constructor_arguments(type(self))}

    def snapshot(self):
        """A copy of :meth:`state_dict` that later changes of the model do not touch
        (tensors cloned), to restore with :meth:`load_state_dict`."""
        return {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                for k, v in self.state_dict().items()}

    def get_extra_state(self):
        return {"class": type(self).__name__, "config": self.config()}

    def set_extra_state(self, state):
        pass  # load_state_dict below handles it, before the tensors

    @classmethod
    def from_state_dict(cls, state):
        """A model of this class with the configuration and parameters of ``state``."""
        model = cls(**state[_EXTRA]["config"])
        model.load_state_dict(state)
        return model

    def load_state_dict(self, state_dict, strict=True, assign=False):
        r"""
        Restore the configuration and every parameter and buffer of ``state_dict``
        exactly (its values, dtypes and devices; the guide's data-sized parameters take
        the saved shapes, or are removed when the state has none).

        :raises ValueError: on a state of another model class, or (``strict``) missing or
            unexpected entries, or a model parameter of another shape; the model is then
            unchanged.
        """
        state = dict(state_dict)
        extra = state.pop(_EXTRA, None)
        if extra is not None and extra.get("class") != type(self).__name__:
            raise ValueError(f"the state is of a {extra.get('class')}, not a "
                             f"{type(self).__name__}")
        self._check_tensors(state, extra, strict)
        if extra is not None and not self._same_config(extra["config"]):
            type(self).__init__(self, **copy.deepcopy(extra["config"]))
        self._shape_guide(state)
        with torch.no_grad():
            for name, tensor in self.named_parameters():
                if name in state:
                    tensor.data = state[name].detach().clone()
            for name, buffer in self.named_buffers():
                if name in state and "." in name:
                    buffer.data = state[name].detach().clone()
            for name in self._buffers:  # own buffers: any size, possibly None now
                self._buffers[name] = state[name].detach().clone() if name in state else None
        return IncompatibleKeys([], [])

    def _same_config(self, config):
        """Whether ``config`` is this model's :meth:`config` (compared as the constructor
        takes it, so that e.g. an HMM's emission name matches its emission module and the
        model is not rebuilt, which would leave references to its submodules stale)."""
        current = self.config()
        return all(_same(v, current.get(k)) for k, v in config.items())

    def _check_tensors(self, state, extra, strict):
        """Check the state's tensors against the model it describes, before any change."""
        if extra is not None and not self._same_config(extra["config"]):
            expected = dict(type(self)(**copy.deepcopy(extra["config"])).state_dict())
        else:
            expected = dict(self.state_dict())
        expected.pop(_EXTRA, None)
        guide = {g + "_unconstrained" for g in self.guide_params} | set(self._buffers)
        missing = set(expected) - set(state) - guide
        unexpected = set(state) - set(expected) - guide
        if strict and (missing or unexpected):
            raise ValueError(f"state does not match {type(self).__name__}: missing "
                             f"{sorted(missing)}, unexpected {sorted(unexpected)}")
        for name in set(state) & set(expected) - guide:
            if not torch.is_tensor(state[name]) or (
                    expected[name] is not None and state[name].shape != expected[name].shape
                    and name not in dict(self.named_buffers())):
                raise ValueError(f"state entry {name!r} has shape "
                                 f"{tuple(getattr(state[name], 'shape', ()))}, expected "
                                 f"{tuple(expected[name].shape)}")

    def _shape_guide(self, state):
        """Create, resize or remove the guide's data-sized parameters to match ``state``."""
        for name, (constraint, event_dim) in self.guide_params.items():
            key = name + "_unconstrained"
            have = self._parameters.get(key)
            if key not in state:
                if have is not None:
                    delattr(self, name)
                continue
            if have is None or have.shape != state[key].shape:
                value = transform_to(constraint)(state[key].detach())
                setattr(self, name, PyroParam(value, constraint=constraint, event_dim=event_dim))
