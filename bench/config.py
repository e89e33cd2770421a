"""Typed run configs: dataclass schemas merged from YAML layers and dotted overrides.

A run's config is built in this order, later layers winning:

1. the schemas below, with the method's own config dataclass under ``method``;
2. ``configs/methods/<method>.yaml`` (the method's defaults: the published protocol), over
   the file its ``extends:`` names;
3. ``configs/datasets/<dataset>.yaml``, then the method file's ``datasets.<dataset>`` section
   (for a stand-in such as ``shapes3d-attributes``, the real dataset's first: ``celeba``);
4. the preset, if one is asked for: ``configs/presets/<preset>.yaml``, its
   ``datasets.<dataset>`` section (likewise), then the method file's ``presets.<preset>``;
5. YAML files given with ``--config``;
6. dotted overrides from the command line, e.g. ``train.steps=2000 method.beta=4``.

Every layer is checked against the schema: an unknown key or a value of the wrong type
is a ``BenchError`` naming the key, where it came from and the valid choices.
"""

from __future__ import annotations

import copy
import difflib
import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.datasets import DATASETS, STANDS_IN_FOR
from bench.errors import BenchError
from bench.methods import METHODS
from bench.metrics import METRICS
from bench.metrics.spec import hyperparameter_defaults
from bench.precision import Precision

CONFIG_DIR = files("bench.configs")


class Optimizer(str, enum.Enum):
    adam = "adam"
    adamw = "adamw"


@dataclass
class DatasetConfig:
    name: str = "?"
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the dataset


@dataclass
class DataConfig:
    # null: on a CUDA training device, keep every image there as uint8 when the dataset
    # takes at most a quarter of its free memory, else read or render each batch on the CPU
    # (copied from page-locked memory); a device ("cuda", "cpu"): keep every image there.
    device: Optional[str] = None
    # The rows training reads (bench/datasets/training_rows.py): the train partition only
    # (CelebA's 162,770: DiTi's); factor values left out, e.g. {orientation: [39]}; the
    # fraction held out by a split fixed per dataset. Evaluation reads every row.
    train_partition: bool = False
    exclude: dict[str, list[int]] = field(default_factory=dict)
    holdout: float = 0.0
    # Each training image flipped left-right with probability ½ (torchvision's
    # RandomHorizontalFlip in DiTi's and PDAE's CelebA loaders), drawn from (seed, step).
    hflip: bool = False


@dataclass
class TrainConfig:
    steps: int = 300_000
    batch_size: int = 64
    optimizer: Optimizer = Optimizer.adam
    lr: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: Optional[float] = None  # max gradient norm; null: no clipping
    ema_decay: Optional[float] = None  # null: the method keeps no EMA of its weights
    # What the EMA averages: the method's submodules by attribute name, as its authors' code
    # does (DyGA+SD, EncDiff: [unet]); null: every trainable parameter. The averaged weights
    # are copied in at the end; the rest (the scored encoder) stays live.
    ema_modules: Optional[list[str]] = None
    # LitEma's decay warm-up, min(decay, (1 + n)/(10 + n)) after n updates; false: the
    # constant decay of PDAE's and DiTi's EMA.
    ema_warmup: bool = True
    warmup_steps: int = 0  # linear learning-rate warm-up (LDM's LambdaLinearScheduler)
    warmup_start: float = 1e-6  # the warm-up starts at this fraction of train.lr
    # Autocast on CUDA (elsewhere fp32, with a note); each method's file says what its authors
    # use. DyGA's assignment and the other places the authors keep in fp32 stay in fp32.
    precision: Precision = Precision.fp32
    # Runtime settings: they do not change the numbers, so they are not part of the run's hash.
    device: str = "auto"  # auto: CUDA when present, else CPU
    log_every: int = 100
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2  # the newest N checkpoints stay: a damaged newest has a fallback
    # The record's claim (bench/claim.py): rewritten every heartbeat_s; another process may
    # take the run over when the heartbeat is older than stale_after_s.
    heartbeat_s: float = 30.0
    stale_after_s: float = 300.0
    progress: bool = True
    progress_every_s: float = 60.0  # where stderr is not a terminal: a progress line this often
    tensorboard: bool = False  # also log to <run>/tensorboard (pip install 'drlbench[tensorboard]')
    # Speed switches, recorded in environment.json. compile: torch.compile the trainable
    # submodules. tf32: TF32 matrix products and convolutions on Ampere+ (null: torch's
    # defaults, convolutions only). deterministic: cuDNN's deterministic kernels and
    # torch.use_deterministic_algorithms (bit-identical GPU reruns); false: cudnn.benchmark.
    compile: bool = False
    tf32: Optional[bool] = None
    deterministic: bool = False


class Encode(str, enum.Enum):
    auto = "auto"  # "all" when FactorVAE or BetaVAE is in the battery, else "lazy"
    all = "all"  # encode every image of the dataset once, up front
    lazy = "lazy"  # encode each image the first time a metric asks for it


class Profile(str, enum.Enum):
    exact = "exact"  # numbers equal to disentanglement_lib's
    fast = "fast"  # approximate where a metric has a fast variant (DCI), stamped as such


class Reduce(str, enum.Enum):
    none = "none"  # score the code as the method's encode() returns it, flattened
    pca1 = "pca1"  # one scalar per latent unit: PCA(1) of its token over the dataset


class PcaFit(str, enum.Enum):
    dataset = "dataset"  # one PCA per unit for every metric, fitted on dataset images
    sample = "sample"  # fitted by the metric on the images it scores (tad's pca_units)


@dataclass
class HistoryConfig:
    """The cheap battery scored every ``eval.every`` training steps (metrics_history.jsonl):
    by default FactorVAE and fast DCI on small samples, the PCA on a 10,000-image subset."""

    metrics: list[str] = field(default_factory=lambda: ["factor_vae", "dci"])
    profile: Profile = Profile.fast
    hyperparams: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "factor_vae": {"num_train": 300, "num_eval": 200, "num_variance_estimate": 2000},
            "dci": {"num_train": 2000, "num_test": 1000},
        }
    )
    pca_rows: int = 10_000


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=lambda: ["mig"])
    random_seed: int = 0  # disentanglement_lib's evaluation.random_seed
    batch_size: int = 256  # images per encoder call
    encode: Encode = Encode.auto
    reduce: Reduce = Reduce.none
    pca_rows: Optional[int] = None  # reduce=pca1 fits on this many random images; null: all
    # reduce=pca1: fit the PCA on the dataset (pca_rows), or on the images a metric scores
    # (sample: DyGA+SD's TAD protocol; tad only)
    pca_fit: PcaFit = PcaFit.dataset
    profile: Profile = Profile.exact
    # Per-metric hyperparameters over the metric's defaults (dlib's unsupervised study):
    # e.g. eval.hyperparams.dci.num_train=2000
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Metric curves: score eval.history's battery every this many training steps; null: never.
    every: Optional[int] = None
    history: HistoryConfig = field(default_factory=HistoryConfig)


@dataclass
class RunConfig:
    method: Any = None  # the method's config dataclass
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0


RUNTIME_KEYS = (
    "data.device",
    "train.device",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.heartbeat_s",
    "train.stale_after_s",
    "train.progress",
    "train.progress_every_s",
    "train.tensorboard",
    "train.compile",
    "train.tf32",
    "train.deterministic",
)
# Settings added after records were written, which enter the hash only when set: a run that
# leaves them at their default keeps the folder it had before they existed.
HASHED_WHEN_SET = {
    "data.train_partition": False,
    "data.exclude": {},
    "data.holdout": 0.0,
    "data.hflip": False,
}


def resolve_config(
    method: str,
    dataset: str,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    config_files: list[Path] | tuple[Path, ...] = (),
) -> DictConfig:
    """The full, checked config of one run."""
    method_cls = METHODS.get(method)
    DATASETS.entry(dataset)  # unknown dataset: error listing the known ones
    cfg = OmegaConf.structured(
        RunConfig(method=method_cls.config_class(name=method), dataset=DatasetConfig(name=dataset))
    )
    method_layer = _method_layer(method)
    presets = method_layer.pop("presets", {})
    per_dataset = method_layer.pop("datasets", {})
    cfg = _merge(cfg, method_layer, f"configs/methods/{method}.yaml")
    # A stand-in runs the real dataset's protocol: its settings first, then the stand-in's.
    names = [n for n in (STANDS_IN_FOR.get(dataset), dataset) if n is not None]
    for name in names:
        cfg = _merge(cfg, _read_yaml(CONFIG_DIR / "datasets" / f"{name}.yaml"), "dataset config")
        # The method's settings for one dataset (e.g. DyGA+SD's batch 64 on CelebA).
        cfg = _merge(cfg, per_dataset.get(name) or {}, f"{method} settings for {name}")
    if preset is not None:
        check_preset(method, preset)
        preset_file = CONFIG_DIR / "presets" / f"{preset}.yaml"
        preset_layer = _read_yaml(preset_file)
        preset_datasets = preset_layer.pop("datasets", {})
        cfg = _merge(cfg, preset_layer, f"preset {preset!r}")
        # What the preset changes for one kind of data (CelebA's metrics are not a factor
        # dataset's), before the method's own section of the preset.
        for name in names:
            cfg = _merge(cfg, preset_datasets.get(name) or {}, f"preset {preset!r} for {name}")
        cfg = _merge(cfg, presets.get(preset) or {}, f"preset {preset!r} of {method}")
    for path in config_files:
        cfg = _merge(cfg, _read_yaml(Path(path), must_exist=True), str(path))
    cfg = _merge(cfg, _parse_overrides(overrides), "command line")
    if seed is not None:
        cfg.seed = seed
    _check_values(cfg, method, dataset)
    return cfg


def known_presets(method: str) -> list[str]:
    """The presets ``method`` can run with: configs/presets/ and its own ``presets:``."""
    own = _method_layer(method).get("presets", {})
    return sorted({p.name[: -len(".yaml")] for p in _yaml_files("presets")} | set(own))


def check_preset(method: str, preset: str) -> None:
    """``preset`` is one ``method`` can run with, or a one-line error listing those."""
    known = known_presets(method)
    if preset not in known:
        close = difflib.get_close_matches(preset, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BenchError(f"unknown preset {preset!r}{hint}; known presets: {', '.join(known)}")


def apply_overrides(cfg: DictConfig, overrides: list[str], allowed_prefix: str = "") -> DictConfig:
    """``cfg`` with dotted command-line overrides, each checked like ``bench run``'s;
    ``allowed_prefix`` (e.g. ``eval.``) limits which keys may change."""
    for item in overrides:
        if not item.startswith(allowed_prefix):
            raise BenchError(
                f"override {item!r}: only {allowed_prefix}* keys can change here, "
                f"e.g. {allowed_prefix}hyperparams.dci.num_train=2000"
            )
    return _merge(cfg, _parse_overrides(overrides), "command line")


def config_hash(cfg: DictConfig) -> str:
    """Identity of a run's settings: every key but the seed and the runtime-only ones."""
    data = to_dict(cfg)
    data.pop("seed")
    for key in RUNTIME_KEYS:
        section, name = key.split(".")
        data[section].pop(name)
    for key, default in HASHED_WHEN_SET.items():
        section, name = key.split(".")
        if data[section][name] == default:
            data[section].pop(name)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def distinguishing_overrides(cfg: DictConfig, baseline: DictConfig) -> list[str]:
    """The settings of ``cfg`` that differ from ``baseline`` (the method's defaults for the same
    dataset and preset), as sorted ``key=value`` overrides; seed and runtime keys left out.
    What sets a run apart from its method's defaults: the label of its row in a report."""
    ours, base = _flatten(to_dict(cfg)), _flatten(to_dict(baseline))
    ignored = {"seed", *RUNTIME_KEYS}
    keys = sorted(k for k in ours.keys() | base.keys() if k not in ignored)
    return [f"{k}={_format_value(ours.get(k))}" for k in keys if ours.get(k) != base.get(k)]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # an empty mapping adds no key: nothing is set there
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def to_yaml(cfg: DictConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict[str, Any]) -> DictConfig:
    """Rebuild a typed config from a saved one (``config.yaml`` of a run), as the settings it
    was trained with when it predates a field: ``train.amp`` (bf16 autocast on CUDA, or none)
    is read as the precision it meant; a plain U-Net without ``mid_attention_norm`` was built
    without that GroupNorm."""
    method_cls = METHODS.get(data["method"]["name"])
    cfg = OmegaConf.structured(RunConfig(method=method_cls.config_class()))
    data = copy.deepcopy(data)
    train = data.get("train") or {}
    if "amp" in train:
        train["precision"] = "bf16" if train.pop("amp") else "fp32"
    for unet in _plain_unets(data["method"]):
        unet.setdefault("mid_attention_norm", False)
    return _merge(cfg, data, "saved config")


def written_before_fields(data: dict[str, Any]) -> bool:
    """Whether a saved config predates ``train.precision`` or a plain U-Net's
    ``mid_attention_norm``: its folder is named by the hash of the older schema."""
    older_unet = any("mid_attention_norm" not in u for u in _plain_unets(data["method"]))
    return "amp" in (data.get("train") or {}) or older_unet


def _plain_unets(node: Any) -> list[dict[str, Any]]:
    """The plain U-Net settings (``PlainUNetConfig``, told apart by its
    ``attention_resolutions``) anywhere in a saved method config."""
    if not isinstance(node, dict):
        return []
    found = [node] if "attention_resolutions" in node else []
    return found + [u for value in node.values() for u in _plain_unets(value)]


def _method_layer(method: str) -> dict[str, Any]:
    """``configs/methods/<method>.yaml``, over the file its ``extends:`` names (if any): the
    ablation variants of a method restate only what they change."""
    layer = _read_yaml(CONFIG_DIR / "methods" / f"{method}.yaml")
    base = layer.pop("extends", None)
    if base is None:
        return layer
    return OmegaConf.to_container(OmegaConf.merge(_method_layer(base), layer))


def _yaml_files(section: str) -> list[Any]:
    folder = CONFIG_DIR / section
    return [p for p in folder.iterdir() if p.name.endswith(".yaml")] if folder.is_dir() else []


def _read_yaml(path: Any, must_exist: bool = False) -> dict[str, Any]:
    if not path.is_file():
        if must_exist:
            raise BenchError(f"config file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise BenchError(
            f"config file {path} is not valid YAML: {error}".replace("\n", " ")
        ) from None
    if not isinstance(data, dict):
        raise BenchError(
            f"config file {path} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def _parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise BenchError(f"override {item!r} must be key=value, e.g. train.steps=2000")
        try:  # one at a time, so that an error names the override at fault
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            problem = " ".join(str(error).split("\n")[-2:]).strip()
            raise BenchError(
                f"override {item!r} is not a valid value ({problem}); write lists as "
                "key=[a,b] and quote the whole override in the shell"
            ) from None
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise BenchError(
            f"cannot parse overrides {list(overrides)}: {_first_line(error)}"
        ) from None


def _merge(cfg: DictConfig, layer: dict[str, Any], source: str) -> DictConfig:
    _check_keys(cfg, layer, source, prefix="")
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise BenchError(f"config key {key!r} from {source}: {_first_line(error)}") from None


def _check_keys(node: DictConfig, layer: dict[str, Any], source: str, prefix: str) -> None:
    if OmegaConf.get_type(node) in (dict, None):  # free-form mapping such as dataset.options
        return
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if key not in node:
            valid = list(node.keys())
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            where = f"under {prefix[:-1]!r}" if prefix else "at the top level"
            raise BenchError(
                f"unknown config key {path!r} from {source}{hint}; "
                f"valid keys {where}: {', '.join(valid)}"
            )
        child = node._get_node(key)
        if isinstance(value, dict) and isinstance(child, DictConfig):
            _check_keys(child, value, source, prefix=f"{path}.")


def check_seed(seed: object, where: str = "--seed") -> int:
    """A seed is a whole number from 0 to 2**32 − 1 (numpy's range), or a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        example = ", e.g. --seed 1" if where == "--seed" else ""
        bound = 2**32 - 1
        raise BenchError(f"{where} {seed!r}: a seed is a whole number from 0 to {bound}{example}")
    return seed


def _check_values(cfg: DictConfig, method: str, dataset: str) -> None:
    if cfg.method.name != method or cfg.dataset.name != dataset:
        raise BenchError("method.name and dataset.name are set by --method and --dataset")
    check_seed(cfg.seed)
    at_least_one = ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints")
    for key in at_least_one:
        if cfg.train[key] < 1:
            raise BenchError(f"config key 'train.{key}' must be at least 1")
    if cfg.train.steps < 0:  # 0: the untrained baseline, scored at its seeded initialisation
        raise BenchError("config key 'train.steps' must be at least 0 (0: the untrained baseline)")
    if not 0 < 2 * cfg.train.heartbeat_s <= cfg.train.stale_after_s:
        raise BenchError(
            "train.stale_after_s must be at least twice train.heartbeat_s (and both positive), "
            "or a live run could be taken for a dead one"
        )
    for key in ("train.device", "data.device"):
        check_device_name(OmegaConf.select(cfg, key), key)
    check_metrics(
        cfg.eval.metrics, OmegaConf.to_container(cfg.eval.hyperparams), cfg.eval.profile.value
    )
    if cfg.eval.every is not None:
        if cfg.eval.every < 1:
            raise BenchError("config key 'eval.every' must be at least 1 (or null: no curves)")
        history = cfg.eval.history
        check_metrics(
            list(history.metrics),
            OmegaConf.to_container(history.hyperparams),
            history.profile.value,
        )
    if cfg.eval.pca_fit == PcaFit.sample and cfg.eval.reduce == Reduce.pca1:
        check_pca_on_sample(list(cfg.eval.metrics), "eval.metrics")
        if cfg.eval.every is not None:
            check_pca_on_sample(list(cfg.eval.history.metrics), "eval.history.metrics")


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str | None, key: str) -> None:
    """``name`` is a device torch knows (``auto`` for ``train.device``): no import of torch."""
    if name is None and key == "data.device":
        return
    if (
        name is None
        or not DEVICE_NAME.fullmatch(name)
        or (name == "auto" and key != "train.device")
    ):
        choices = "auto, cpu, cuda, cuda:N or mps" if key == "train.device" else "cpu, cuda, cuda:N"
        raise BenchError(f"{key}={name!r} is not a device; use one of: {choices}")


def check_pca_on_sample(metrics: list[str], key: str) -> None:
    """``eval.pca_fit=sample``: every metric that reads codes fits the PCA itself."""
    # FID reads generated images, whatever the reduction.
    unable = [
        m for m in metrics if METRICS.get(m).scores == "codes" and not METRICS.get(m).fits_own_pca
    ]
    if unable:
        able = [m for m in METRICS.names() if METRICS.get(m).fits_own_pca]
        raise BenchError(
            f"eval.pca_fit=sample fits the PCA on the images a metric scores, which only "
            f"{' and '.join(able)} do; score {', '.join(unable)} with eval.pca_fit=dataset "
            f"(or leave it out of {key})"
        )


def check_metrics(
    names: list[str], hyperparams: dict[str, dict[str, Any]], profile: str = "exact"
) -> None:
    """Every metric is registered and every hyperparameter is one that the function scoring
    it under ``profile`` takes."""
    for name in names:
        if name not in METRICS:
            raise BenchError(f"eval.metrics: {METRICS.unknown_message(name)}")
    for name, values in hyperparams.items():
        if name not in METRICS:
            raise BenchError(f"eval.hyperparams: {METRICS.unknown_message(name)}")
        function, _ = METRICS.get(name).for_profile(profile)
        valid = list(hyperparameter_defaults(function))
        for key in values:
            if key not in valid:
                raise BenchError(
                    f"eval.hyperparams.{name}: unknown hyperparameter {key!r}; "
                    f"valid: {', '.join(valid)}"
                )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]
