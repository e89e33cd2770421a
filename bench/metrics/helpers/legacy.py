"""scikit-learn 0.21's defaults, under which disentanglement_lib's published numbers were made.

Since scikit-learn 0.22, ``LogisticRegression()`` is lbfgs multinomial (0.21: liblinear,
one-vs-rest, penalised intercept, one seed drawn from its random_state per fit) and
``LinearSVC`` solves the primal (0.21: dual coordinate descent in a random order). This
changes BetaVAE, explicitness and, marginally, SAP (metrics.md §9). Metrics take
``sklearn_legacy=True`` to use these instead. Today's scikit-learn refuses multiclass
liblinear, so the fit calls its internal ``_fit_liblinear``, which still runs 0.21's
one-vs-rest inside liblinear with a single seed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.svm import LinearSVC
from sklearn.svm._base import _fit_liblinear


class LegacyLogisticRegression:
    """``LogisticRegression()`` as scikit-learn 0.21 fitted it (C 1, tol 1e-4, 100 iterations)."""

    def __init__(self, random_state: np.random.RandomState | int | None = None) -> None:
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> LegacyLogisticRegression:
        self.classes_ = np.unique(y)
        self.coef_, self.intercept_, _ = _fit_liblinear(
            x,
            y,
            C=1.0,
            fit_intercept=True,
            intercept_scaling=1,
            class_weight=None,
            penalty="l2",
            dual=False,
            verbose=0,
            max_iter=100,
            tol=1e-4,
            random_state=self.random_state,
            multi_class="ovr",
            loss="logistic_regression",
        )
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        scores = x @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision_function(x)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """One-vs-rest probabilities, normalised over classes, as 0.21 gave them."""
        scores = self.decision_function(x)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.stack([1 - positive, positive], axis=1)
        probabilities = expit(scores)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == y))


def legacy_linear_svc(random_state: np.random.RandomState) -> LinearSVC:
    """SAP's ``LinearSVC(C=0.01, class_weight="balanced")`` with 0.21's dual solver."""
    return LinearSVC(C=0.01, class_weight="balanced", dual=True, random_state=random_state)
