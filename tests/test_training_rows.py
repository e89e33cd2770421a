"""The rows a run trains on (data.train_partition, data.exclude, data.holdout) and its
horizontal flips (data.hflip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import bench.datasets
import bench.train
from bench.config import DataConfig, config_hash, resolve_config
from bench.datasets.training_rows import training_rows
from bench.errors import BenchError
from bench.runner import run
from bench.train import random_hflip
from tests.conftest import FAST


def data(**settings) -> OmegaConf:
    return OmegaConf.structured(DataConfig(**settings))


def test_every_row_unless_a_setting_selects_some():
    assert training_rows(bench.datasets.load("dsprites-procedural"), data()) is None


def test_the_train_partition_is_the_partitions_zeros():
    stand_in = bench.datasets.load("shapes3d-attributes")
    rows = training_rows(stand_in, data(train_partition=True))
    np.testing.assert_array_equal(rows, np.flatnonzero(stand_in.partition == 0))
    assert 0 < len(rows) < len(stand_in)
    with pytest.raises(BenchError, match="has no train partition") as error:
        training_rows(bench.datasets.load("dsprites-procedural"), data(train_partition=True))
    assert "\n" not in str(error.value) and "data.train_partition=false" in str(error.value)


def test_excluded_values_go_and_the_holdout_is_fixed_per_dataset():
    dsprites = bench.datasets.load("dsprites-procedural")
    rows = training_rows(dsprites, data(exclude={"orientation": [39]}, holdout=0.1))
    kept = 3 * 6 * 39 * 32 * 32
    assert len(rows) == kept - int(kept * 0.1 + 0.5)
    assert (np.diff(rows) > 0).all() and (dsprites.factors_of(rows)[:, 2] < 39).all()
    again = training_rows(dsprites, data(exclude={"orientation": [39]}, holdout=0.1))
    np.testing.assert_array_equal(rows, again)
    with pytest.raises(BenchError, match="not a factor of DSpritesProcedural; its factors: shape"):
        training_rows(dsprites, data(exclude={"rotation": [0]}))


def test_unset_selections_leave_the_config_hash_of_earlier_records():
    # The fields enter a run's identity only when set, so records written before them keep
    # their folders; setting one makes a new identity.
    cfg = resolve_config("beta_vae", "dsprites-procedural", "ci")
    before = config_hash(cfg)
    cfg.data.holdout = 0.1
    assert config_hash(cfg) != before
    cfg.data.holdout = 0.0
    assert config_hash(cfg) == before


def test_flips_mirror_about_half_the_images_from_seed_and_step():
    images = torch.rand(400, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    flipped = random_hflip(images, seed=1, step=7)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    kept = (flipped == images).flatten(1).all(1)
    assert (mirrored ^ kept).all() and 150 < mirrored.sum() < 250
    torch.testing.assert_close(random_hflip(images, seed=1, step=7), flipped)
    assert not torch.equal(random_hflip(images, seed=1, step=8), flipped)


def test_diti_on_the_celeba_stand_in_trains_on_train_rows_only(tmp_path, monkeypatch):
    drawn: list[np.ndarray] = []
    flips: list[int] = []
    batch, flip = bench.train.TorchImages.batch, bench.train.random_hflip

    def recording_batch(self, indices, device):
        drawn.append(np.asarray(indices))
        return batch(self, indices, device)

    def recording_flip(images, seed, step):
        flips.append(step)
        return flip(images, seed, step)

    monkeypatch.setattr(bench.train.TorchImages, "batch", recording_batch)
    monkeypatch.setattr(bench.train, "random_hflip", recording_flip)
    overrides = [*FAST, "eval.metrics=[]"]
    cfg = resolve_config("diti", "shapes3d-attributes", "ci", overrides)
    assert cfg.data.train_partition and cfg.data.hflip
    run("diti", "shapes3d-attributes", "ci", overrides, out=tmp_path)
    stand_in = bench.datasets.load("shapes3d-attributes")
    rows = np.concatenate(drawn)
    steps = cfg.method.ddpm.steps + cfg.train.steps  # the DDPM stage's, then DiTi's
    assert len(drawn) == steps and len(flips) == steps
    assert (stand_in.partition[rows] == 0).all()
    assert not resolve_config("diti", "shapes3d-procedural", "ci").data.train_partition
