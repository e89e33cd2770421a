"""scikit-learn's ``GradientBoostingClassifier`` with the trees of each boosting stage fitted
in parallel threads: the same numbers, but a fit can use more cores than a dataset has factors.

With K > 2 classes every stage fits K regression trees, one per class, on gradients computed
once at the start of the stage; tree k only writes column k of the raw predictions, so the K
fits are independent. What ties them together is the shared ``random_state``: each tree draws
one seed from it, in class order. Handing tree k a copy of the state advanced past the draws of
trees 0..k-1 keeps every tree identical to the sequential fit. Tree building releases the GIL,
so threads run in parallel.

This overrides the private ``_fit_stage`` of scikit-learn >= 1.4 (the ``_loss`` refactor);
the DCI equivalence tests against disentanglement_lib fail loudly if that ever changes.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.ensemble._gb import _update_terminal_regions
from sklearn.tree import DecisionTreeRegressor

# Each tree's splitter draws ``random_state.randint(0, RAND_R_MAX)`` once (sklearn.tree._utils).
RAND_R_MAX = np.iinfo(np.int32).max


def seed_states(random_state: np.random.RandomState, count: int) -> list[np.random.RandomState]:
    """``count`` copies of ``random_state``, copy k advanced past k tree seeds; advances
    ``random_state`` past all ``count``, as ``count`` sequential tree fits would."""
    states = []
    for _ in range(count):
        copy = np.random.RandomState()
        copy.set_state(random_state.get_state())
        states.append(copy)
        random_state.randint(0, RAND_R_MAX)
    return states


class StagewiseGradientBoostingClassifier(GradientBoostingClassifier):
    """``GradientBoostingClassifier`` whose per-class trees of a stage run on ``executor``
    (set it after construction; ``None`` fits them one after the other)."""

    executor: Executor | None = None

    def _fit_stage(
        self,
        i,
        X,
        y,
        raw_predictions,
        sample_weight,
        sample_mask,
        random_state,
        X_csc=None,
        X_csr=None,
    ):
        if self.subsample < 1.0 or X_csc is not None or not self._loss.is_multiclass:
            # One tree per stage (or subsampling, sparse input): sklearn's own stage, still
            # run on the pool so that every tree fit counts against its size.
            args = (i, X, y, raw_predictions, sample_weight, sample_mask, random_state)
            args += (X_csc, X_csr)
            if self.executor is None:
                return super()._fit_stage(*args)
            return self.executor.submit(super()._fit_stage, *args).result()
        neg_gradient = -self._loss.gradient(
            y_true=y, raw_prediction=raw_predictions, sample_weight=None
        )
        states = seed_states(random_state, self.n_trees_per_iteration_)

        def fit_tree(k: int) -> DecisionTreeRegressor:
            tree = DecisionTreeRegressor(
                criterion="squared_error",
                splitter="best",
                max_depth=self.max_depth,
                min_samples_split=self.min_samples_split,
                min_samples_leaf=self.min_samples_leaf,
                min_weight_fraction_leaf=self.min_weight_fraction_leaf,
                min_impurity_decrease=self.min_impurity_decrease,
                max_features=self.max_features,
                max_leaf_nodes=self.max_leaf_nodes,
                random_state=states[k],
                ccp_alpha=self.ccp_alpha,
            )
            tree.fit(X, neg_gradient[:, k], sample_weight=sample_weight, check_input=False)
            _update_terminal_regions(
                self._loss,
                tree.tree_,
                X,
                np.array(y == k, dtype=np.float64),
                neg_gradient[:, k],
                raw_predictions,
                sample_weight,
                sample_mask,
                learning_rate=self.learning_rate,
                k=k,
            )
            return tree

        classes = range(self.n_trees_per_iteration_)
        trees = self.executor.map(fit_tree, classes) if self.executor else map(fit_tree, classes)
        for k, tree in enumerate(trees):
            self.estimators_[i, k] = tree
        return raw_predictions
