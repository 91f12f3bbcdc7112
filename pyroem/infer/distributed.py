r"""
EM across processes with :mod:`torch.distributed`.

Each rank holds a shard of the data. A pass computes every rank's statistics, then one
all-reduce sums them (after re-expressing them about rank 0's origin, so that the sum
is exact; :func:`~pyroem.distributions.merge.reshift`), together with the log-evidence
and the number of items: every rank then runs the same M-step on the same numbers and
holds identical parameters, equal to those of one process fitting all shards. The
starting values come from rank 0 and are broadcast.

A rank that fails (a bad shard) must not leave the others waiting in a collective:
every collective step first gathers each rank's status, and all ranks raise the same
error naming the rank that failed.

Launched with ``torchrun --nproc-per-node 2 script.py`` after
``torch.distributed.init_process_group("gloo")`` (``"nccl"`` on GPUs); see the
"Scaling out" page of the docs.
"""

import torch
import torch.distributed as dist

from pyroem.distributions.merge import full_shift, moment_group, reshift
from pyroem.infer.batches import PassResult


def is_active():
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return dist.get_rank() if is_active() else 0


def agree(error=None, signature=None):
    """
    Gather every rank's status and raise the same error on all of them when any rank
    failed (``error``, an exception) or disagrees with rank 0 about ``signature`` (a
    small picklable value, e.g. the model's class, configuration and dtype).

    :raises ValueError: naming the first rank that failed or disagrees.
    """
    status = (None if error is None else f"{type(error).__name__}: {error}", signature)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, status)
    for r, (message, _) in enumerate(gathered):
        if message is not None:
            if error is not None and r == dist.get_rank():
                raise error
            raise ValueError(f"rank {r} failed: {message}")
    reference = gathered[0][1]
    for r, (_, sig) in enumerate(gathered):
        if sig != reference:
            raise ValueError(f"rank {r} disagrees with rank 0: {sig!r} against {reference!r} "
                             "(every rank must build the same model and pass shards of the "
                             "same dimension and dtype)")


def all_reduce_statistics(stats):
    """The sum over ranks of statistics dicts of identical layout (moment groups
    re-expressed about rank 0's origin first); ``stats`` is not changed."""
    out = {}
    if "shift" in stats and moment_group(stats) is not None:
        origin = full_shift(stats).contiguous()
        dist.broadcast(origin, src=0)
        stats = reshift(stats, origin)
    for key in sorted(stats):
        value = stats[key]
        if isinstance(value, dict):
            out[key] = all_reduce_statistics(value)
        elif key == "shift" or not torch.is_tensor(value):
            out[key] = value
        else:
            total = value.detach().clone().contiguous()
            dist.all_reduce(total)
            out[key] = total
    return out


def _device():
    """Where collectives run: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_pass(result, error=None):
    """The :class:`~pyroem.infer.batches.PassResult` of all ranks together (statistics,
    log-evidence and item counts summed); raises on every rank when one failed."""
    agree(error)
    totals = torch.tensor([result.log_evidence, float(result.num_items)], dtype=torch.float64,
                          device=_device())
    dist.all_reduce(totals)
    stats = None if result.stats is None else all_reduce_statistics(result.stats)
    return PassResult(stats, float(totals[0]), round(float(totals[1])))


def broadcast_parameters(module, src=0, skip_prefix="q_"):
    """Copy rank ``src``'s parameters into every rank's ``module`` in place (the guide's
    data-sized ``q_*`` parameters excepted: each rank's q belongs to its shard)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.rsplit(".", 1)[-1].startswith(skip_prefix):
                continue
            buffer = param.detach().contiguous().clone()
            dist.broadcast(buffer, src=src)
            param.copy_(buffer)
