"""GPU behaviour by simulation: a checkpoint restored onto another device, a faked GPU count,
host reads counted per step. None of these needs a GPU."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.datasets
from bench.build import build_method
from bench.checkpoints import load_checkpoint_file, newest_usable, save_checkpoint_file
from bench.config import resolve_config
from bench.methods import METHODS
from bench.rng import set_global_rng_state
from bench.stages import stage_config
from bench.store import RunRecord
from bench.train import load_checkpoint, run_ema, save_checkpoint, train
from tests.grid_data import FactorGrid
from tests.test_train import Quadratic, QuadraticConfig, quadratic_cfg

DATASET = "shapes3d-procedural"
META = torch.device("meta")


def with_untrained_stages(model, cfg, data):
    """``model`` with every stage it declares attached, untrained (a stage's weights do not
    change where a checkpoint puts them)."""
    for stage in model.stages():
        part = build_method(stage_config(stage, cfg), data)
        with_untrained_stages(part, cfg, data)
        model.attach_stage(stage.name, part.requires_grad_(False).eval())
    return model


def training_state(name: str, device: torch.device):
    """A method of the ci preset on ``device`` with the loop's optimizers and EMA."""
    cfg = resolve_config(name, DATASET, "ci")
    data = bench.datasets.load(DATASET)
    model = with_untrained_stages(build_method(cfg, data), cfg, data).to(device)
    trainer = model.trainer(cfg.train, device)
    ema, averaged = run_ema(model, cfg.train)
    return model, trainer, ema, averaged


@pytest.mark.parametrize("name", METHODS.names())
def test_a_checkpoint_restores_every_tensor_onto_the_runs_device(name, tmp_path):
    # Written on the CPU (as torch.load hands every checkpoint back), resumed on another
    # device: "meta" stands in for CUDA.
    model, trainer, ema, averaged = training_state(name, torch.device("cpu"))
    for each in trainer.optimizers.values():  # a step, so that every optimizer has state
        for group in each.param_groups:
            for parameter in group["params"]:
                parameter.grad = torch.zeros_like(parameter)
        each.step()
    if ema is not None:
        ema.step(averaged)
    noise = torch.Generator().manual_seed(0)
    save_checkpoint(RunRecord(tmp_path), 1, model, trainer, ema, noise, 1)

    model, trainer, ema, _ = training_state(name, META)
    with warnings.catch_warnings():  # copying into meta tensors is a no-op, as it should be
        warnings.simplefilter("ignore", UserWarning)
        step, _ = load_checkpoint(
            newest_usable(RunRecord(tmp_path).checkpoints_dir),
            model,
            trainer,
            ema,
            noise,
            META,
            seed=0,
        )
    assert step == 1
    elsewhere = [k for k, t in model.state_dict().items() if t.device != META]
    if ema is not None:
        elsewhere += [f"ema[{i}]" for i, t in enumerate(ema.shadow_params) if t.device != META]
    for each in trainer.optimizers.values():
        assert each.state, "the optimizer state was restored"
        for state in each.state.values():
            # torch keeps Adam's step counters on the host by design (unless capturable)
            elsewhere += [k for k, t in state.items() if k != "step" and t.device != META]
    assert not elsewhere, f"left off the run's device: {elsewhere[:5]}"


@pytest.fixture
def one_visible_gpu(monkeypatch):
    """torch sees one CUDA device; setting the state of a second raises, as on a real one."""
    calls = []

    def set_rng_state(state, device=0):
        if device >= 1:
            raise RuntimeError(f"CUDA error: invalid device ordinal {device}")
        calls.append(device)

    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    one_state = [torch.zeros(16, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: one_state)
    return calls


def test_random_states_of_two_gpus_restore_on_one_with_a_note(one_visible_gpu):
    from bench.rng import global_rng_state

    state = {**global_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    note = set_global_rng_state(state, torch.device("cuda"))
    assert one_visible_gpu == [0]
    assert "saved for 2 device(s) and 1 are visible" in note


def test_a_run_saved_on_two_gpus_resumes_on_fewer_with_one_line(tmp_path, one_visible_gpu, capsys):
    data = FactorGrid((4, 4))
    cfg = quadratic_cfg(steps=4, batch_size=2, checkpoint_every=2, device="cpu")
    record = RunRecord(tmp_path)
    train(Quadratic(QuadraticConfig(), data.image_shape), data, cfg, record)
    # As if written by a CUDA run with two GPUs visible: two CUDA states, a CUDA generator's.
    path = newest_usable(record.checkpoints_dir)
    checkpoint = load_checkpoint_file(path)
    checkpoint["rng"].update(
        cuda=[torch.zeros(16, dtype=torch.uint8)] * 2,
        noise=torch.zeros(16, dtype=torch.uint8),
        noise_device="cuda",
    )
    save_checkpoint_file(record.checkpoints_dir, 4, checkpoint, keep=2)
    capsys.readouterr()

    longer = quadratic_cfg(steps=6, batch_size=2, checkpoint_every=2, device="cpu")
    train(Quadratic(QuadraticConfig(), data.image_shape), data, longer, record)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no longer bit-identical" in notes[0]
    assert "2 device(s) and 1 are visible" in notes[0] and "re-seeded" in notes[0]
    assert [e["step"] for e in record.read_log() if "loss" in e][-1] == 6
    assert [e for e in record.read_log() if e.get("event") == "resumed"]


def test_dbrl_hands_its_sampler_a_cpu_generator(monkeypatch):
    # diffusers' ScoreSdeVeScheduler draws on the CPU and refuses a CUDA generator.
    cfg = resolve_config("dbrl", DATASET, "ci")
    model = build_method(cfg, bench.datasets.load(DATASET)).to(META).eval()
    handed = []
    monkeypatch.setattr(model.sde, "sample", lambda *args: handed.append(args[4]) or args[1])
    noise = torch.zeros(2, 3, 64, 64, device=META)  # on a device that is not the CPU
    model.sample(torch.zeros(2, model.representation_dim, device=META), noise, seed=3)
    (generator,) = handed
    assert generator.device.type == "cpu"
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state())


def host_syncs():
    path = Path(__file__).parents[1] / "benchmarks" / "host_syncs.py"
    spec = importlib.util.spec_from_file_location("host_syncs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["beta_vae", "factor_vae", "disunknown", "dyga_sd"])
def test_no_host_read_between_log_steps(name, tmp_path):
    benchmark = host_syncs()
    row = benchmark.measure(name, tmp_path)
    assert row["steps"] == benchmark.STEPS
    assert row["reads_per_other_step"] == 0, row["where_between_log_steps"]


def test_cuda_n_becomes_the_current_gpu(monkeypatch):
    # So that code saying "cuda" (FID's network, diffusers' defaults) uses the run's GPU.
    from bench.train import select_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert select_device("cuda:3") == torch.device("cuda", 3)
    assert chosen == [torch.device("cuda", 3)]


def test_fp16_loss_scaling_steps_as_fp32_would(tmp_path):
    # A power-of-two scale is exact: scaled, unscaled before clipping, the step is the same.
    from bench.methods.trainer import RUN, LossTrainer

    cfg = quadratic_cfg(grad_clip=0.01, lr=0.1)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        trainer = LossTrainer(holder, cfg.train, torch.device("cpu"))
        trainer.scaler = scaler
        for step in range(3):
            trainer.apply({RUN: (holder.weight**2).sum() * (step + 1)}, step)
        results.append(holder.weight.detach().clone())
    assert torch.equal(*results)
    assert not torch.equal(results[0], torch.tensor([1.0, -2.0, 3.0]))


def test_compile_and_the_numerics_switches_are_recorded_and_put_back(tmp_path):
    from bench.runner import run

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32)
    overrides = [
        "train.steps=2",
        "train.progress=false",
        "eval.metrics=[]",
        "train.compile=true",
        "train.deterministic=true",
        "train.tf32=false",
        "train.precision=bf16",
    ]
    record = run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path)
    numerics = json.loads(record.environment_file.read_text())["numerics"]
    assert numerics == {
        "precision": "fp32",  # bf16 applies on CUDA; the CPU trains in fp32, and says so
        "precision_setting": "bf16",
        "tf32_matmul": False,
        "tf32_cudnn": False,
        "deterministic": True,
        "cudnn_benchmark": False,
        "compile": True,
    }
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32) == before


def test_on_cuda_a_dataset_that_fits_stays_on_the_gpu(monkeypatch):
    from bench.datasets.torch_view import resident_device

    data = FactorGrid((4, 4))  # 16 images
    size = 16 * int(np.prod(data.image_shape))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * size, 8 * size))
    assert resident_device(data, torch.device("cuda", 1)) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * size - 1, 8 * size))
    assert resident_device(data, torch.device("cuda", 1)) is None
    assert resident_device(data, torch.device("cpu")) is None


def test_batches_read_ahead_in_the_background_equal_those_read_in_place(tmp_path):
    # What a CUDA run does (on the CPU here): the next batch is read while this one trains.
    from bench.datasets.torch_view import TorchImages

    data = FactorGrid((4, 6))
    cpu = torch.device("cpu")
    ahead, direct = TorchImages(data, background=True), TorchImages(data)
    order = [np.array([3, 1, 7]), np.array([0, 2, 5]), np.array([9, 4, 8])]
    ahead.prefetch(order[0], cpu)
    for i, rows in enumerate(order):
        got = ahead.batch(rows, cpu)
        if i + 1 < len(order):
            ahead.prefetch(order[i + 1], cpu)
        refit = ahead.batch(np.array([11, 12]), cpu)  # other rows meanwhile: the read stays
        assert torch.equal(got, direct.batch(rows, cpu))
        assert torch.equal(refit, direct.batch(np.array([11, 12]), cpu))
    assert ahead.ahead is None  # every read ahead was used


def test_a_run_with_background_reads_trains_as_one_without(tmp_path, monkeypatch):
    import bench.train

    weights = []
    for background in (False, True):
        monkeypatch.setattr(bench.train, "reads_ahead", lambda device, b=background: b)
        data = FactorGrid((4, 4))
        model = Quadratic(QuadraticConfig(), data.image_shape)
        cfg = quadratic_cfg(steps=7, batch_size=3)
        train(model, data, cfg, RunRecord(tmp_path / str(background)))
        weights.append(model.weight.detach())
    assert torch.equal(*weights)
