"""A method built from a run's config: the one place its class is looked up, its config
completed from the dataset, and its initial weights drawn from the run's seed."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from bench.datasets import GroundTruthData
from bench.datasets.training_rows import training_rows
from bench.methods import METHODS
from bench.methods.base import Method


def build_method(cfg: DictConfig, dataset: GroundTruthData) -> Method:
    """The method of ``cfg``, its weights drawn from the run's seed."""
    method_cls = METHODS.get(cfg.method.name)
    # Built from the dataset's class (the meta-device stage walk), it sees every row.
    rows = None if isinstance(dataset, type) else training_rows(dataset, cfg.data)
    config = method_cls.configure_for(OmegaConf.to_object(cfg.method), dataset, rows)
    torch.manual_seed(cfg.seed)
    return method_cls(config, dataset.image_shape)
