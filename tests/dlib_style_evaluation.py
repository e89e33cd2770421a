"""An evaluation script written the way the DyGA+SD authors' ``code/evaluate_renew.py`` drives
disentanglement_lib: seed everything, bind each metric's settings with gin, then call
``compute_*`` with ``RandomState(0)``. It prints the scores as JSON.

tests/test_dlib_dropin.py runs it as written, on disentanglement_lib, and again with
``disentanglement_lib.evaluation.metrics`` replaced by ``bench.metrics`` in its imports: the
one change a user makes. The dataset is the procedural 3D Shapes whose observations are image
indices (as the authors' ``Dataset(np.arange(480000))``), and the representation a fixed
table looked up by index (as their per-unit PCA codes ``pca_rep[x]``). The sample counts are
the authors', except DCI's and FactorVAE's, cut to keep the test short.
"""

import json
import random

import gin
import numpy as np

from bench.datasets import load
from bench.metrics.helpers.dlib_reference import install_gin_shims

install_gin_shims()  # dlib's modules import gin.tf and use gin's old `blacklist` keyword

from disentanglement_lib.evaluation.metrics.beta_vae import compute_beta_vae_sklearn  # noqa: E402
from disentanglement_lib.evaluation.metrics.dci import compute_dci  # noqa: E402
from disentanglement_lib.evaluation.metrics.factor_vae import compute_factor_vae  # noqa: E402
from disentanglement_lib.evaluation.metrics.mig import compute_mig  # noqa: E402
from disentanglement_lib.evaluation.metrics.modularity_explicitness import (  # noqa: E402
    compute_modularity_explicitness,
)
from disentanglement_lib.evaluation.metrics.sap_score import compute_sap  # noqa: E402
from disentanglement_lib.evaluation.metrics.utils import _histogram_discretize  # noqa: E402


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)


def indexed_shapes3d():
    data = load("shapes3d-procedural")
    # Observations are image indices: the representation below is a lookup, as the authors'.
    data.sample_observations_from_factors = lambda factors, random_state: data.index_of(factors)
    return data


def fixed_representation(data):
    rng = np.random.RandomState(0)
    factors = data.factors_of(np.arange(len(data))) / np.array(data.factors_num_values)
    mix = np.eye(data.num_factors, 10) + 0.3 * rng.normal(size=(data.num_factors, 10))
    table = factors @ mix + 0.05 * rng.normal(size=(len(data), 10))
    return lambda x: table[x]


def main():
    set_seed(42)
    data = indexed_shapes3d()
    representation = fixed_representation(data)
    results = {}

    with gin.unlock_config():
        gin.bind_parameter("beta_vae_sklearn.batch_size", 64)
        gin.bind_parameter("beta_vae_sklearn.num_train", 10000)
        gin.bind_parameter("beta_vae_sklearn.num_eval", 5000)
    results["beta_VAE"] = compute_beta_vae_sklearn(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    with gin.unlock_config():
        gin.bind_parameter("factor_vae_score.num_variance_estimate", 10000)
        gin.bind_parameter("factor_vae_score.num_train", 2000)
        gin.bind_parameter("factor_vae_score.num_eval", 1000)
        gin.bind_parameter("factor_vae_score.batch_size", 64)
        gin.bind_parameter("prune_dims.threshold", 0.05)
    results["factor_VAE"] = compute_factor_vae(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    with gin.unlock_config():
        gin.bind_parameter("dci.num_train", 1000)
        gin.bind_parameter("dci.num_test", 500)
    results["dci"] = compute_dci(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    with gin.unlock_config():
        gin.bind_parameter("mig.num_train", 10000)
        gin.bind_parameter("discretizer.discretizer_fn", _histogram_discretize)
        gin.bind_parameter("discretizer.num_bins", 20)
    results["MIG"] = compute_mig(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    with gin.unlock_config():
        gin.bind_parameter("modularity_explicitness.num_train", 10000)
        gin.bind_parameter("modularity_explicitness.num_test", 5000)
    results["Modularity"] = compute_modularity_explicitness(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    with gin.unlock_config():
        gin.bind_parameter("sap_score.num_train", 10000)
        gin.bind_parameter("sap_score.num_test", 5000)
        gin.bind_parameter("sap_score.continuous_factors", False)
    results["SAP"] = compute_sap(
        data, representation, random_state=np.random.RandomState(0), artifact_dir=None
    )

    # What the global RNG holds afterwards: dlib's DCI trees draw from it.
    results["global_rng_next"] = int(np.random.randint(2**31 - 1))
    print(
        json.dumps(
            {
                k: v if isinstance(v, int) else {n: float(x) for n, x in v.items()}
                for k, v in results.items()
            }
        )
    )


if __name__ == "__main__":
    main()
