"""Disentanglement metrics with disentanglement_lib's signatures, defaults and random draws."""

from bench.registry import Registry

METRICS = Registry("metric", "bench.metrics")
for _name, _module, _description in [
    (
        "attribute_probe",
        "attribute_probe",
        "DiTi's linear attribute probe: mean average precision on held-out images",
    ),
    ("beta_vae", "beta_vae", "BetaVAE score (Higgins et al. 2017), dlib's sklearn variant"),
    (
        "downstream_task",
        "downstream_task",
        "Downstream accuracy and sample efficiency with 100 / 1000 / 10000 training points",
    ),
    ("dci", "dci", "DCI disentanglement, completeness, informativeness (Eastwood & Williams)"),
    ("factor_vae", "factor_vae", "FactorVAE score (Kim & Mnih 2018)"),
    (
        "fid",
        "fid",
        "Fréchet Inception Distance of the images a method generates (pytorch-fid's)",
    ),
    ("irs", "irs", "Interventional Robustness Score (Suter et al. 2019)"),
    ("mig", "mig", "Mutual Information Gap (Chen et al. 2018)"),
    (
        "modularity_explicitness",
        "modularity_explicitness",
        "Modularity and explicitness (Ridgeway & Zemel 2018)",
    ),
    ("sap_score", "sap_score", "SAP score (Kumar et al. 2018)"),
    ("tad", "tad", "TAD, Total AUROC Difference (NashAE), for attribute datasets such as CelebA"),
    (
        "unsupervised",
        "unsupervised_metrics",
        "Gaussian total correlation, Wasserstein dependency, mean pairwise MI of the code",
    ),
]:
    METRICS.register(_name, f"bench.metrics.{_module}:SPEC", _description)

__all__ = ["METRICS"]
