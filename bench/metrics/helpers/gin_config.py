"""disentanglement_lib's metric .gin files, read into our metrics' hyperparameters.

dlib's own files work unchanged (``bench eval RUN --gin dci.gin``): gin's parser reads them,
and each binding maps onto a metric and hyperparameter here. No gin binding is made, so
nothing leaks from one evaluation to the next, nor into a user's own gin calls (for those,
the metric modules register dlib's configurable names: ``bench.metrics.utils``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gin import config_parser

from bench.errors import BenchError
from bench.metrics.downstream_task import PREDICTORS

# dlib's configurable names -> ours
METRIC_NAMES = {
    "beta_vae_sklearn": "beta_vae",
    "dci": "dci",
    "downstream_task": "downstream_task",
    "factor_vae_score": "factor_vae",
    "irs": "irs",
    "mig": "mig",
    "modularity_explicitness": "modularity_explicitness",
    "sap_score": "sap_score",
    "tad": "tad",
    "unsupervised_metrics": "unsupervised",
}
DISCRETIZED = ("mig", "modularity_explicitness", "irs", "unsupervised")


@dataclass(frozen=True)
class Reference:
    name: str


@dataclass
class GinSettings:
    metrics: list[str] = field(default_factory=list)
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    random_seed: int | None = None


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> Reference:
        return Reference(scoped_configurable_name)

    def macro(self, macro_name: str) -> Any:
        raise BenchError(f"gin macros (%{macro_name}) are not supported in metric configs")


def read_gin(path: Path) -> GinSettings:
    """The metrics, hyperparameters and evaluation seed a dlib metric .gin file binds."""
    settings = GinSettings()
    try:
        statements = list(config_parser.ConfigParser(Path(path).read_text(), _Delegate()))
    except (SyntaxError, OSError) as error:
        raise BenchError(f"{path}: not a gin file: {' '.join(str(error).split())}") from None
    for statement in statements:
        if not isinstance(statement, config_parser.BindingStatement):
            raise BenchError(f"{path}: only bindings are supported, found {statement}")
        _apply(path, settings, statement.selector, statement.arg_name, statement.value)
    return settings


def _set(settings: GinSettings, metric: str, name: str, value: Any) -> None:
    settings.hyperparams.setdefault(metric, {})[name] = value


def _apply(path: Path, settings: GinSettings, selector: str, arg: str, value: Any) -> None:
    binding = f"{selector}.{arg}"
    if binding == "evaluation.evaluation_fn":
        if not isinstance(value, Reference) or value.name not in METRIC_NAMES:
            raise BenchError(f"{path}: {binding} must name one of {', '.join(METRIC_NAMES)}")
        settings.metrics.append(METRIC_NAMES[value.name])
    elif binding == "evaluation.random_seed":
        settings.random_seed = int(value)
    elif binding == "dataset.name":
        if value != "auto":
            raise BenchError(f'{path}: dataset.name must be "auto": a run is scored on its dataset')
    elif binding == "discretizer.discretizer_fn":
        if value != Reference("histogram_discretizer"):
            raise BenchError(f"{path}: only @histogram_discretizer is supported, got {value}")
    elif binding == "discretizer.num_bins":
        for metric in DISCRETIZED:
            _set(settings, metric, "num_bins", int(value))
    elif binding == "prune_dims.threshold":
        _set(settings, "factor_vae", "prune_threshold", float(value))
    elif binding == "predictor.predictor_fn":
        if not isinstance(value, Reference) or value.name not in PREDICTORS:
            raise BenchError(
                f"{path}: predictor.predictor_fn must be one of {', '.join(PREDICTORS)}"
            )
        _set(settings, "downstream_task", "predictor", value.name)
    elif selector in METRIC_NAMES:
        _set(
            settings,
            METRIC_NAMES[selector],
            arg,
            list(value) if isinstance(value, tuple) else value,
        )
    else:
        raise BenchError(f"{path}: unknown binding {binding!r} for a metric config")
