r"""
Data given as batches: what ``fit`` recognises as a re-iterable of batches, and the
re-iterable of validated model arguments that :class:`~pyroem.infer.batches.BatchEMStepper`
passes over.

Per family (``batch_kind`` of the model class):

- ``"matrix"`` (:class:`~pyroem.models.GaussianMixture`): a batch is an ``(n, D)``
  tensor or array, so a list of tensors is a list of batches; a ``DataLoader`` over a
  tensor or a ``TensorDataset`` yields such batches (a one-tensor list is unwrapped).
- ``"sequences"`` (the HMMs): a batch is a list of sequences or a ``(padded, lengths)``
  pair, so a list of lists of sequences is a list of batches, while a plain list of
  sequences stays one data set;
- ``"labelled"`` (:class:`~pyroem.models.PLDA`): a batch is a pair ``(embeddings,
  labels)``, a speaker possibly spread over several batches
  (:mod:`pyroem.models.plda.batches`).

Any other iterable that is not a tensor, an array or a list (a ``DataLoader``, a
memory-mapped reader) is a source of batches too. It must be re-iterable: EM passes over
it once per iteration; a one-shot iterator is refused (``partial_fit`` takes a stream).
"""

import numpy as np
import torch


def _is_array(x):
    return torch.is_tensor(x) or isinstance(x, np.ndarray)


def _is_source(obj):
    """A re-iterable that is neither data itself nor a list (DataLoader, custom reader)."""
    if _is_array(obj) or isinstance(obj, (list, tuple, str, bytes, dict)):
        return False
    return hasattr(obj, "__iter__")


def _matrix_batches(obj):
    if _is_source(obj):
        return True
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and all(
        _is_array(b) and b.ndim >= 1 for b in obj)


def _sequence_batches(obj):
    if _is_source(obj):
        return True
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and all(
        isinstance(b, (list, tuple)) for b in obj)


def _labelled_batches(obj):
    if _is_source(obj):
        return True
    # a list of pairs (embeddings, labels); a pair of the wrong length is refused later
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and all(
        isinstance(b, (list, tuple)) and len(b) > 0 and _is_array(b[0]) for b in obj)


_DETECT = {"matrix": _matrix_batches, "sequences": _sequence_batches,
           "labelled": _labelled_batches}


def batches_of(model, data):
    """The user's re-iterable of batches when ``data`` (``fit``'s positional arguments)
    is one, else ``None``."""
    kind = getattr(model, "batch_kind", None)
    if kind is None or len(data) != 1:
        return None
    obj = data[0]
    if not _DETECT[kind](obj):
        return None
    if iter(obj) is obj:
        raise ValueError(
            f"fit takes a re-iterable of batches (a list, a DataLoader), got a one-shot "
            f"{type(obj).__name__}: EM passes over the data once per iteration. Pass a "
            "list or a DataLoader, or feed a stream to partial_fit")
    return obj


def batch_arguments(kind, batch):
    """``fit``'s positional data arguments for one batch of the given kind."""
    if kind == "matrix":
        if isinstance(batch, (list, tuple)) and len(batch) == 1:
            batch = batch[0]  # a TensorDataset's batch: [tensor]
        return (batch,)
    if (isinstance(batch, (list, tuple)) and len(batch) == 2 and _is_array(batch[0])
            and _is_array(batch[1]) and batch[0].ndim >= 2 and batch[1].ndim == 1
            and not torch.as_tensor(batch[1]).is_floating_point()
            and len(batch[1]) == batch[0].shape[0]):
        return (batch[0], batch[1])  # (padded, lengths)
    return (batch,)


class Batches:
    """
    A re-iterable of the model's prepared arguments, one tuple per batch, each batch
    validated as it is read: an error names the batch (``batch 3: ...``), and a batch
    whose floating dtype differs from the model's is refused rather than converted.

    :param model: the built-in model (its ``_prepare`` validates a batch).
    :param source: the user's re-iterable of batches, or ``None`` with ``chunks``.
    :param chunks: prepared arguments to cut into row chunks instead: ``(args, size)``.
    """

    def __init__(self, model, source=None, chunks=None):
        self.model = model
        self.source = source
        self.chunks = chunks

    def first(self):
        """The prepared arguments of the first batch (what initialisation reads), in the
        batch's own floating dtype (which then becomes the model's)."""
        if self.chunks is not None:
            return next(self._chunked())
        for batch in self.source:
            return self.prepare(0, batch, check_dtype=False)
        raise ValueError(f"the batches ({type(self.source).__name__}) yielded nothing: "
                         "fit needs at least one batch")

    def __iter__(self):
        if self.chunks is not None:
            yield from self._chunked()
            return
        count = 0
        for index, batch in enumerate(self.source):
            yield self.prepare(index, batch)
            count += 1
        if count == 0:
            raise ValueError(f"the batches ({type(self.source).__name__}) yielded nothing: "
                             "fit needs at least one batch")

    def prepare(self, index, batch, check_dtype=True):
        """The validated arguments of batch ``index`` (in the model's dtype)."""
        model = self.model
        data = batch_arguments(model.batch_kind, batch)
        try:
            args = model._prepare(*data)
            floating = [a for a in args if torch.is_tensor(a) and a.is_floating_point()]
            if (check_dtype and floating and floating[0].dtype != model.dtype
                    and _raw_float(data[0])):
                raise ValueError(f"dtype {floating[0].dtype} differs from the model's "
                                 f"{model.dtype} (set by the first batch); convert the "
                                 "batches to one dtype")
            if model._num_items(args) == 0:
                raise ValueError("the batch is empty")
        except ValueError as e:
            raise ValueError(f"batch {index}: {e}") from None
        if not check_dtype:
            return args
        return tuple(a.to(model.dtype) if torch.is_tensor(a) and a.is_floating_point()
                     else a for a in args)

    def _chunked(self):
        args, size = self.chunks
        n = args[0].shape[0]
        for start in range(0, n, size):
            # a copy, not a view: the data features cached for a chunk then die with it
            # (a view would keep them alive through the whole tensor: N x D^2 again)
            yield tuple(a[start:start + size].clone() for a in args)


def _raw_float(data):
    """Whether a batch's data is floating (integer data are promoted, not refused)."""
    if isinstance(data, (list, tuple)):
        return any(_raw_float(d) for d in data[:1])
    if torch.is_tensor(data):
        return data.is_floating_point()
    return np.issubdtype(np.asarray(data).dtype, np.floating)
