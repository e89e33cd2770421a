"""Batched full-covariance Gaussian mixtures in torch, with DyGA's split and prune schedule.

Many independent mixtures (one per latent unit, or one per cluster being split) are fitted at
once: data ``x`` is (B, N, D) with a (B, N) 0/1 mask for ragged sets, and a mixture of up to K
components is (B, K, ...) with ``log_weights`` −inf on the components it does not use. Every
step is a batched tensor operation, so a refit of all 20 units of DyGA+SD runs as one EM on
the training device.

The schedule (methods.md §1.2, as the authors' DyGA.py runs it): K=8 components initialised at
random samples with identity covariances, 30 EM iterations; then up to 3 split rounds, in which
a component whose hard members (responsibility > 0.5) lie at a mean distance > 0.5 from its
mean — or any component, with probability 0.5 — is replaced by the two components of a
2-component EM on its members; then components with a soft count below 10 are pruned and EM
runs 30 more iterations. The covariance regulariser 1e-6·I enters the densities, not the
stored covariances. The authors' eigendecomposed "subspaces" are computed but never used by
their E-step, so they are left out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

REGULARISATION = 1e-6
# sklearn's guard against empty components (10 · float64 eps), so that means stay finite.
EMPTY = 10 * torch.finfo(torch.float64).eps


@dataclass
class Mixtures:
    """B Gaussian mixtures of up to K components in D dimensions."""

    means: torch.Tensor  # (B, K, D)
    covariances: torch.Tensor  # (B, K, D, D)
    log_weights: torch.Tensor  # (B, K), −inf where a component is unused

    @property
    def active(self) -> torch.Tensor:
        return torch.isfinite(self.log_weights)

    @property
    def num_components(self) -> torch.Tensor:
        return self.active.sum(dim=1)


def used_slots(mixtures: Mixtures) -> list[int]:
    """The component slots that some mixture of the batch uses (a read from the device)."""
    return torch.nonzero(mixtures.active.any(dim=0)).flatten().tolist()


def joint_log_probs(
    x: torch.Tensor, mixtures: Mixtures, slots: list[int] | None = None
) -> torch.Tensor:
    """log π_k + log N(x_n; μ_k, Σ_k + 1e-6·I): (B, N, K); −inf for unused components and
    for those whose covariance is not positive definite. ``slots``: ``used_slots(mixtures)``
    when the caller already knows it (the anchoring, on every training step, without reading
    the device)."""
    _, num_components, dim = mixtures.means.shape
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    chol, info = torch.linalg.cholesky_ex(mixtures.covariances + REGULARISATION * eye)
    failed = info != 0
    chol = torch.where(failed[..., None, None], eye, chol)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B, K)
    # ‖L⁻¹(x − μ)‖² with L⁻¹ formed once: a matrix product per component, which runs far
    # faster than a triangular solve against N right-hand sides.
    whitening = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    # One component at a time, so that memory stays (B, N, D); slots no set uses are skipped.
    mahalanobis = x.new_full((*x.shape[:2], num_components), math.inf)
    for k in used_slots(mixtures) if slots is None else slots:
        whitened = torch.matmul(x, whitening[:, k].transpose(1, 2))
        shift = torch.matmul(mixtures.means[:, k, None, :], whitening[:, k].transpose(1, 2))
        mahalanobis[..., k] = (whitened - shift).square().sum(dim=-1)
    log_probs = -0.5 * (dim * math.log(2 * math.pi) + log_det[:, None, :] + mahalanobis)
    log_probs = log_probs + mixtures.log_weights[:, None, :]
    return log_probs.masked_fill(failed[:, None, :], -math.inf)


def responsibilities(x: torch.Tensor, mixtures: Mixtures) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, K) posterior of each component, and (B, N) log-likelihood of each point."""
    joint = joint_log_probs(x, mixtures)
    log_likelihood = torch.logsumexp(joint, dim=-1)
    return torch.exp(joint - log_likelihood[..., None]), log_likelihood


def m_step(x: torch.Tensor, mask: torch.Tensor, resp: torch.Tensor, active: torch.Tensor):
    """Maximum-likelihood weights, means and (centred) covariances from responsibilities."""
    resp = resp * mask[..., None]
    counts = resp.sum(dim=1) + EMPTY  # (B, K)
    means = resp.transpose(1, 2) @ x / counts[..., None]
    dim = x.shape[-1]
    covariances = torch.eye(dim, dtype=x.dtype, device=x.device).repeat(*means.shape[:2], 1, 1)
    for k in torch.nonzero(active.any(dim=0)).flatten().tolist():
        diff = x - means[:, k, None, :]
        weighted = diff * resp[:, :, k, None]
        covariances[:, k] = weighted.transpose(1, 2) @ diff / counts[:, k, None, None]
    weights = counts / mask.sum(dim=1, keepdim=True)
    log_weights = torch.where(active, torch.log(weights), -math.inf)
    return Mixtures(means, covariances, log_weights)


def run_em(x: torch.Tensor, mask: torch.Tensor, mixtures: Mixtures, iterations: int) -> Mixtures:
    for _ in range(iterations):
        resp, _ = responsibilities(x, mixtures)
        mixtures = m_step(x, mask, resp, mixtures.active)
    return mixtures


def mean_log_likelihood(x: torch.Tensor, mixtures: Mixtures) -> torch.Tensor:
    """(B,) average log-likelihood per point, as sklearn's ``GaussianMixture.score``."""
    return responsibilities(x, mixtures)[1].mean(dim=1)


def init_at_samples(
    x: torch.Tensor, mask: torch.Tensor, k: int, capacity: int, generator: torch.Generator
) -> Mixtures:
    """k components at k distinct random members of each set, identity covariances, equal
    weights; padded with unused components up to ``capacity``."""
    batch, _, dim = x.shape
    # Random keys, masked-out points last: the top k are k distinct random members.
    keys = torch.rand(mask.shape, generator=generator, device=generator.device).to(x.device)
    picks = torch.topk(torch.where(mask > 0, keys, -1.0), k, dim=1).indices  # (B, k)
    means = torch.zeros(batch, capacity, dim, dtype=x.dtype, device=x.device)
    means[:, :k] = torch.gather(x, 1, picks[..., None].expand(-1, -1, dim))
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    covariances = eye.expand(batch, capacity, dim, dim).clone()
    log_weights = torch.full((batch, capacity), -math.inf, dtype=x.dtype, device=x.device)
    log_weights[:, :k] = -math.log(k)
    return Mixtures(means, covariances, log_weights)


@dataclass
class SplitPruneSchedule:
    initial_components: int = 8
    max_components: int = 32
    iterations: int = 30  # EM iterations before the splits, after the prune, and per split
    density_threshold: float = 0.5
    split_probability: float = 0.5
    max_splits: int = 3
    min_soft_count: float = 10.0


def fit_split_prune(
    x: torch.Tensor, schedule: SplitPruneSchedule, generator: torch.Generator
) -> Mixtures:
    """DyGA's mixture of each of the B sets in ``x`` (B, N, D)."""
    mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    start = init_at_samples(
        x, mask, schedule.initial_components, schedule.max_components, generator
    )
    mixtures = run_em(x, mask, start, schedule.iterations)
    mixtures = split_rounds(x, mixtures, schedule, generator)
    mixtures = prune(x, mixtures, schedule.min_soft_count)
    return run_em(x, mask, mixtures, schedule.iterations)


def prune(x: torch.Tensor, mixtures: Mixtures, min_soft_count: float) -> Mixtures:
    """Drop the components whose soft count Σ_n r_nk is below ``min_soft_count`` (never all
    of a set's: the largest stays) and renormalise the weights."""
    counts = responsibilities(x, mixtures)[0].sum(dim=1)
    keep = mixtures.active & (counts >= min_soft_count)
    largest = torch.nn.functional.one_hot(counts.argmax(dim=1), counts.shape[1]).bool()
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, largest)
    log_weights = _renormalised(mixtures.log_weights.masked_fill(~keep, -math.inf))
    return Mixtures(mixtures.means, mixtures.covariances, log_weights)


def split_rounds(
    x: torch.Tensor, mixtures: Mixtures, schedule: SplitPruneSchedule, generator: torch.Generator
) -> Mixtures:
    """DyGA's splits: rounds while a set has fewer than ``max_components`` components and
    fewer than ``max_splits`` splits (counted per split component); a round stops a set
    whose components are all tight."""
    batch = x.shape[0]
    splits = [0] * batch
    going = [True] * batch
    for _ in range(schedule.max_splits):  # each round splits at least one component or stops
        sizes = mixtures.num_components.tolist()
        going = [
            g and sizes[b] < schedule.max_components and splits[b] < schedule.max_splits
            for b, g in enumerate(going)
        ]
        if not any(going):
            break
        resp, _ = responsibilities(x, mixtures)
        members = (resp > 0.5) & mixtures.active[:, None, :]  # (B, N, K)
        member_count = members.sum(dim=1)
        density = _mean_member_distance(x, mixtures.means, members) / member_count.clamp(min=1)
        dense = (density > schedule.density_threshold) & mixtures.active
        coins = torch.rand(dense.shape, generator=generator, device=generator.device)
        lucky = (coins.to(x.device) < schedule.split_probability) & mixtures.active
        candidates = []
        for b in range(batch):
            if not going[b]:
                continue
            if not dense[b].any():  # every component is already tight: stop this set
                going[b] = False
                continue
            for k in torch.nonzero(dense[b] | lucky[b]).flatten().tolist():
                if member_count[b, k] >= 2:
                    candidates.append((b, k))
        if not candidates:
            continue
        children = _split_each(x, members, candidates, schedule, generator)
        mixtures = _replace_parents(mixtures, candidates, children, splits, schedule)
    return mixtures


def _mean_member_distance(x, means, members) -> torch.Tensor:
    """(B, K) summed Euclidean distance of each component's hard members to its mean."""
    total = x.new_zeros(means.shape[:2])
    for k in torch.nonzero(members.any(dim=(0, 1))).flatten().tolist():
        distance = torch.linalg.vector_norm(x - means[:, k, None, :], dim=-1)
        total[:, k] = (distance * members[..., k]).sum(dim=1)
    return total


def _split_each(x, members, candidates, schedule, generator) -> Mixtures:
    """A 2-component EM on the members of each candidate, all candidates at once."""
    sets = [x[b][members[b, :, k]] for b, k in candidates]
    longest = max(len(s) for s in sets)
    points = x.new_zeros(len(sets), longest, x.shape[-1])
    mask = x.new_zeros(len(sets), longest)
    for i, s in enumerate(sets):
        points[i, : len(s)], mask[i, : len(s)] = s, 1.0
    start = init_at_samples(points, mask, 2, 2, generator)
    return run_em(points, mask, start, schedule.iterations)


def _replace_parents(mixtures, candidates, children, splits, schedule) -> Mixtures:
    """Each split parent's slot takes its first child and a free slot its second; the two
    share the parent's weight equally."""
    means, covariances = mixtures.means.clone(), mixtures.covariances.clone()
    log_weights = mixtures.log_weights.clone()
    for i, (b, k) in enumerate(candidates):
        free = torch.nonzero(~torch.isfinite(log_weights[b])).flatten()
        if len(free) == 0:  # max_components reached
            continue
        slot, half = int(free[0]), log_weights[b, k] - math.log(2)
        means[b, k], means[b, slot] = children.means[i, 0], children.means[i, 1]
        covariances[b, k], covariances[b, slot] = children.covariances[i]
        log_weights[b, k] = log_weights[b, slot] = half
        splits[b] += 1
    return Mixtures(means, covariances, _renormalised(log_weights))


def _renormalised(log_weights: torch.Tensor) -> torch.Tensor:
    return log_weights - torch.logsumexp(log_weights, dim=1, keepdim=True)
