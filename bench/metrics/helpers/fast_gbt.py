"""A histogram gradient-boosting classifier that keeps scikit-learn's GBT criterion.

``GradientBoostingClassifier()`` fits, per stage and class, a depth-3 regression tree to the
log-loss residuals, choosing splits by friedman_mse and setting leaves by one Newton step;
its feature importances are the trees' impurity (squared-error) decreases. This does the same
on features binned into at most ``max_bins`` quantile bins, fitting the K trees of a stage
together from residual histograms. For squared error the decrease of a split is exactly
friedman_mse's improvement, n_l·n_r / (n_l + n_r) · (mean_l − mean_r)², so the same number
chooses splits and accumulates importance.

Numbers differ from scikit-learn's only through binning (thresholds on bin edges instead of
midpoints between sorted values) and tie-breaking; DCI's ``fast`` profile uses it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def bin_features(x: np.ndarray, max_bins: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Quantile bin indices (N, F) and each feature's inner edges."""
    edges, binned = [], np.empty(x.shape, dtype=np.int64)
    for f in range(x.shape[1]):
        distinct = np.unique(x[:, f])
        if len(distinct) <= max_bins:
            inner = (distinct[:-1] + distinct[1:]) / 2.0  # midpoints, as sklearn's thresholds
        else:
            inner = np.unique(np.quantile(x[:, f], np.linspace(0, 1, max_bins + 1)[1:-1]))
        edges.append(inner)
        binned[:, f] = np.searchsorted(inner, x[:, f], side="left")
    return binned, edges


class HistogramGBT:
    """Settings as scikit-learn's defaults: 100 stages, learning rate 0.1, depth 3."""

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 3,
        max_bins: int = 255,
    ) -> None:
        self.n_estimators, self.learning_rate = n_estimators, learning_rate
        self.max_depth, self.max_bins = max_depth, max_bins

    def fit(self, x: np.ndarray, y: np.ndarray) -> HistogramGBT:
        self.classes_, labels = np.unique(y, return_inverse=True)
        n, num_features = x.shape
        binned, self.edges_ = bin_features(np.asarray(x, dtype=np.float64), self.max_bins)
        bins = self.max_bins + 1
        k = len(self.classes_)
        trees = 1 if k == 2 else k
        onehot = np.eye(k)[labels] if k > 2 else labels[:, None].astype(np.float64)
        prior = onehot.mean(axis=0)
        # Log-odds, or log-priors centred to sum to 0, as scikit-learn starts.
        raw = np.log(prior / (1 - prior)) if k == 2 else np.log(prior) - np.log(prior).mean()
        raw = np.tile(raw, (n, 1))
        self.init_ = raw[0].copy()
        # indicator[(f, b), i] = 1 when sample i falls in bin b of feature f: one sparse product
        # gives every node's per-bin residual sums at once.
        indicator = scipy.sparse.csr_matrix(
            (
                np.ones(n * num_features),
                (
                    ((np.arange(num_features) * bins) + binned).ravel(),
                    np.repeat(np.arange(n), num_features),
                ),
            ),
            shape=(num_features * bins, n),
        )
        root_counts = np.asarray(indicator.sum(axis=1)).ravel()
        importance = np.zeros(num_features)
        self.splits_, self.leaves_ = [], []  # per stage: (T, nodes) features/bins, (T, leaves)
        sample = np.arange(n)
        for _ in range(self.n_estimators):
            prob = _probabilities(raw, k)
            residual = onehot - prob  # (N, T): the negative gradient
            node = np.zeros((trees, n), dtype=np.int64)
            split_feature = np.full((trees, 2**self.max_depth - 1), -1)
            split_bin = np.zeros((trees, 2**self.max_depth - 1), dtype=np.int64)
            for depth in range(self.max_depth):
                width = 2**depth
                shape = (num_features, bins, trees, width)
                if depth == 0:  # every sample is in the root
                    sums = indicator @ residual
                    counts = np.broadcast_to(root_counts[:, None], (len(root_counts), trees))
                else:  # node membership (N, T, width), plain and weighted by each residual
                    member = np.zeros((n, trees, width))
                    member[sample[None, :], np.arange(trees)[:, None], node] = 1.0
                    weighted = (member * residual[:, :, None]).reshape(n, -1)
                    sums = indicator @ weighted
                    counts = indicator @ member.reshape(n, -1)
                sums = sums.reshape(shape).transpose(2, 3, 0, 1).cumsum(-1)
                counts = counts.reshape(shape).transpose(2, 3, 0, 1).cumsum(-1)
                left_n, left_s = counts[..., :-1], sums[..., :-1]
                total_n, total_s = counts[..., -1:], sums[..., -1:]
                right_n, right_s = total_n - left_n, total_s - left_s
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = left_n * right_n / total_n * (left_s / left_n - right_s / right_n) ** 2
                gain = np.where((left_n > 0) & (right_n > 0), gain, -np.inf)
                flat = gain.reshape(trees, width, -1)
                best = flat.argmax(axis=-1)
                best_gain = np.take_along_axis(flat, best[..., None], -1)[..., 0]
                feature, cut = np.divmod(best, bins - 1)
                splits = best_gain > 1e-12
                np.add.at(importance, feature[splits], best_gain[splits])
                slot = width - 1 + np.arange(width)
                split_feature[:, slot] = np.where(splits, feature, -1)
                split_bin[:, slot] = cut
                chosen = np.take_along_axis(feature, node, 1)  # (T, N) each sample's node feature
                goes_right = binned[sample[None, :], chosen] > np.take_along_axis(cut, node, 1)
                goes_right &= np.take_along_axis(splits, node, 1)
                node = node * 2 + goes_right
            leaf_values = self._newton(residual, prob, node, trees, k)
            raw += self.learning_rate * np.take_along_axis(leaf_values, node, 1).T
            self.splits_.append((split_feature, split_bin))
            self.leaves_.append(leaf_values)
        self.feature_importances_ = (
            importance / importance.sum() if importance.sum() else importance
        )
        return self

    def _newton(self, residual, prob, node, trees, k) -> np.ndarray:
        leaves = 2**self.max_depth
        key = (np.arange(trees)[:, None] * leaves + node).ravel()
        numerator = np.bincount(key, residual.T.ravel(), trees * leaves)
        hessian = (prob * (1 - prob)).T.ravel()
        denominator = np.bincount(key, hessian, trees * leaves)
        if k > 2:
            numerator *= (k - 1) / k
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(np.abs(denominator) < 1e-150, 0.0, numerator / denominator)
        return values.reshape(trees, leaves)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        binned = np.stack(
            [np.searchsorted(edges, x[:, f], side="left") for f, edges in enumerate(self.edges_)],
            axis=1,
        )
        n, sample = len(x), np.arange(len(x))
        raw = np.tile(self.init_, (n, 1))
        for (split_feature, split_bin), leaf_values in zip(self.splits_, self.leaves_, strict=True):
            trees = split_feature.shape[0]
            node = np.zeros((trees, n), dtype=np.int64)
            for depth in range(self.max_depth):
                slot = 2**depth - 1 + node
                feature = np.take_along_axis(split_feature, slot, 1)
                cut = np.take_along_axis(split_bin, slot, 1)
                right = (feature >= 0) & (binned[sample[None, :], np.maximum(feature, 0)] > cut)
                node = node * 2 + right
            raw += self.learning_rate * np.take_along_axis(leaf_values, node, 1).T
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.decision_function(x)
        if len(self.classes_) == 2:
            return self.classes_[(raw[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(raw, axis=1)]


def _probabilities(raw: np.ndarray, k: int) -> np.ndarray:
    if k == 2:
        return 1.0 / (1.0 + np.exp(-raw))
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
