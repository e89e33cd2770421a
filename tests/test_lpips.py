"""The VQ first stages' perceptual loss: LPIPS against a by-hand computation on torchvision's
VGG16 layer numbering, its weight files (`bench data download lpips`, the one-line refusal
before anything trains), and the presets that train with and without it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import bench.datasets.download as download
from bench.config import resolve_config
from bench.datasets.files import DatasetFileError
from bench.methods.diffusion.lpips import LPIPS
from bench.methods.trainer import Batch
from bench.methods.vq_autoencoder import VQAutoencoder, VQAutoencoderConfig
from tests.test_download import FileServer

# torchvision's vgg16().features: the index of each convolution, and the ReLU ending each tap.
CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
TAPS = [3, 8, 15, 22, 29]


def fake_weights(folder) -> tuple[str, str]:
    """Random VGG16 features and LPIPS heads, saved under torchvision's and LPIPS' keys."""
    generator = torch.Generator().manual_seed(0)
    vgg, channels = {}, 3
    for index, width in zip(CONVS, WIDTHS, strict=True):
        vgg[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=generator)
        vgg[f"features.{index}.weight"] *= (2 / (9 * channels)) ** 0.5
        vgg[f"features.{index}.bias"] = 0.1 * torch.randn(width, generator=generator)
        channels = width
    vgg["classifier.0.weight"] = torch.zeros(1)  # the rest of the file is not read
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1, generator=generator)
        for i, w in enumerate([64, 128, 256, 512, 512])
    }
    vgg_path, heads_path = folder / "vgg16.pth", folder / "heads.pth"
    torch.save(vgg, vgg_path)
    torch.save(heads, heads_path)
    return str(vgg_path), str(heads_path)


def by_hand(a: torch.Tensor, b: torch.Tensor, vgg_path: str, heads_path: str) -> torch.Tensor:
    """LPIPS v0.1: scaled inputs through VGG16, each tap's channel-normalised features
    differenced, squared, weighted by its head, averaged over space, summed over taps."""
    vgg = torch.load(vgg_path)
    heads = torch.load(heads_path)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    features = []
    for x in ((a - shift) / scale, (b - shift) / scale):
        taps, h = [], x
        for index in range(30):
            if index in CONVS:
                weight, bias = vgg[f"features.{index}.weight"], vgg[f"features.{index}.bias"]
                h = F.conv2d(h, weight, bias, padding=1)
            elif index in (4, 9, 16, 23):
                h = F.max_pool2d(h, 2)
            else:
                h = F.relu(h)
            if index in TAPS:
                taps.append(h)
        features.append(taps)
    total = 0
    for k, (fa, fb) in enumerate(zip(*features, strict=True)):
        na = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
        weighted = F.conv2d((na - nb).square(), heads[f"lin{k}.model.1.weight"])
        total = total + weighted.mean(dim=(1, 2, 3))
    return total


def test_lpips_is_the_by_hand_distance_on_torchvisions_layer_numbering(tmp_path):
    vgg_path, heads_path = fake_weights(tmp_path)
    lpips = LPIPS(vgg_path, heads_path)
    generator = torch.Generator().manual_seed(1)
    a, b = (torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        distance = lpips(a, b)
        torch.testing.assert_close(distance, by_hand(a, b, vgg_path, heads_path))
        assert (distance > 0).all() and torch.equal(lpips(a, a), torch.zeros(3))
    assert not any(p.requires_grad for p in lpips.parameters())


def test_the_vq_stage_trains_with_lpips_and_the_gan_from_step_0(tmp_path):
    vgg_path, heads_path = fake_weights(tmp_path)
    config = VQAutoencoderConfig(
        channels=[16, 32],
        layers_per_block=1,
        norm_groups=8,
        num_codes=16,
        vgg16_weights=vgg_path,
        lpips_weights=heads_path,
    )
    assert (config.perceptual_weight, config.gan_weight, config.gan_start) == (1.0, 0.75, 0)
    model = VQAutoencoder(config, (32, 32, 3))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    loss, logs = model.training_loss(Batch(images), torch.Generator().manual_seed(3))
    assert {"l1", "perceptual", "codebook", "g_loss", "d_loss"} <= logs.keys()
    loss.backward()
    assert all(p.grad is None for p in model.perceptual.parameters())  # frozen


def bench_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env
    )


def test_a_paper_run_without_the_lpips_files_stops_in_one_line_before_anything(tmp_path):
    import os

    env = {**os.environ, "BENCH_DATA": str(tmp_path / "data")}
    out = tmp_path / "runs"
    args = ["run", "--method", "disdiff", "--dataset", "shapes3d-procedural"]
    result = bench_cli(*args, "--preset", "paper", "--out", str(out), env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the first stage's perceptual loss (LPIPS) needs ")
    assert "bench data download lpips" in line and "perceptual_weight to 0" in line
    assert not out.exists()
    shown = bench_cli(*args, "--preset", "paper", "--print-config", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "perceptual_weight: 1.0" in shown.stdout and "gan_weight: 0.75" in shown.stdout


@pytest.mark.parametrize("method", ["disdiff", "dyga_sd", "encdiff", "ldm", "vq_autoencoder"])
def test_paper_first_stages_use_lpips_and_the_gan_and_small_presets_do_without(method):
    def autoencoder(preset):
        m = resolve_config(method, "shapes3d-procedural", preset).method
        stage = m.ldm.model if method == "disdiff" else m
        return stage.first_stage.autoencoder if "first_stage" in stage else stage

    paper = autoencoder("paper")
    assert (paper.perceptual_weight, paper.gan_weight, paper.gan_start) == (1.0, 0.75, 0)
    for preset in ("smoke", "ci"):
        small = autoencoder(preset)
        assert (small.perceptual_weight, small.gan_weight) == (0.0, 0.0), preset


def test_bench_data_download_lpips_checks_both_files(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    files = {download.VGG16_FILE: b"not vgg16", download.LPIPS_HEADS_FILE: b"x" * 7289}
    with FileServer(files) as server:
        monkeypatch.setenv("BENCH_DATA_MIRROR", server.url("").rstrip("/"))
        with pytest.raises(DatasetFileError, match="does not start with 397923af"):
            download.download("lpips", progress=False)
        lpips = download.SOURCES["lpips"]
        heads = lpips.files[1]
        assert heads.known_hash == "sha256:" + download._LPIPS_HEADS_SHA256
        with pytest.raises(DatasetFileError):
            download.fetch(heads, tmp_path / "lpips", progress=False)
    assert not (tmp_path / "lpips" / download.VGG16_FILE).exists()
    assert not (tmp_path / "lpips" / download.LPIPS_HEADS_FILE).exists()
