"""k-means++ seeding and Lloyd iterations, used to initialise mixture components."""

import torch


def _sq_dist(x, centers):
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one matrix product for all pairs.
    d = (x * x).sum(-1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(-1)
    return d.clamp_min(0)


def _on_generator(t, generator):
    return t if generator is None else t.to(generator.device)


def kmeans_plusplus(x, k, generator=None):
    r"""
    k-means++ seeding (Arthur and Vassilvitskii, 2007): the first centre is a uniform
    draw, each next one is drawn with probability proportional to
    :math:`D(x)^2`, the squared distance to the nearest centre chosen so far.

    :param torch.Tensor x: data ``(N, D)``.
    :param int k: number of centres.
    :returns: indices ``(k,)`` of the chosen points.
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    indices = [int(first)]
    closest = _sq_dist(x, x[first]).squeeze(-1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than centres: draw uniformly
            probs = torch.ones_like(closest)
        else:
            probs = closest / total
        # the draw on the generator's device (a CPU generator for data on any device)
        nxt = int(torch.multinomial(_on_generator(probs, generator), 1, generator=generator))
        indices.append(nxt)
        closest = torch.minimum(closest, _sq_dist(x, x[nxt : nxt + 1]).squeeze(-1))
    return torch.tensor(indices)


def kmeans(x, k, generator=None, max_iter=20):
    """k-means++ seeds refined by Lloyd iterations; returns ``(centers, labels)``.

    An empty cluster keeps its previous centre.
    """
    centers = x[kmeans_plusplus(x, k, generator)].clone()
    labels = None
    for _ in range(max_iter):
        new_labels = _sq_dist(x, centers).argmin(-1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(0)
        sums = onehot.T @ x
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled].unsqueeze(-1)
    return centers, labels
