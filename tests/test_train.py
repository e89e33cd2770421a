"""The training loop: data order, EMA, non-finite losses, preemption and exact resume."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import bench.datasets
from bench.build import build_method
from bench.claim import active_holder
from bench.config import RunConfig, resolve_config
from bench.errors import BenchError
from bench.methods.base import Method, MethodConfig, Supervision
from bench.methods.trainer import Batch, LossTrainer, OwnOptimizer
from bench.runner import run
from bench.store import RunRecord
from bench.train import DataOrder, NonFiniteLoss, train
from tests.conftest import FAST
from tests.grid_data import FactorGrid

QUICK = [o for o in FAST if not o.startswith("train.steps")] + ["eval.metrics=[]"]


def test_data_order_is_a_permutation_per_epoch_and_deterministic():
    order = DataOrder(num_images=10, batch_size=4, seed=1)
    batches = [order.batch(step) for step in range(5)]  # 20 indices: two epochs
    flat = np.concatenate(batches)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])
    again = DataOrder(num_images=10, batch_size=4, seed=1)
    np.testing.assert_array_equal(again.batch(3), batches[3])  # no state: any step, any order
    assert not np.array_equal(DataOrder(10, 4, seed=2).batch(0), batches[0])


@dataclass
class QuadraticConfig(MethodConfig):
    name: str = "quadratic"
    nan_at: int = -1  # the forward pass that returns NaN (-1: never)


class Quadratic(Method):
    """Pulls a weight vector towards the batch mean: a loss whose optimum is known."""

    config_class = QuadraticConfig

    def __init__(self, config, image_shape):
        super().__init__(config, image_shape)
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.calls = 0

    @property
    def representation_dim(self):
        return 3

    def training_loss(self, batch, generator):
        self.calls += 1
        loss = ((self.weight - batch.images.mean()) ** 2).sum()
        if self.calls == self.config.nan_at:
            loss = loss * float("nan")
        return loss, {"weight0": self.weight[0].detach()}

    def encode(self, images):
        return self.weight.expand(len(images), 3)


def quadratic_cfg(**train):
    cfg = OmegaConf.structured(RunConfig(method=QuadraticConfig()))
    cfg.train.merge_with({"log_every": 1, "checkpoint_every": 100, "progress": False, **train})
    return cfg


def test_ema_follows_its_closed_form(tmp_path):
    data = FactorGrid((4, 4))
    cfg = quadratic_cfg(steps=20, batch_size=4, optimizer="adam", lr=0.05, ema_decay=0.8)
    model = Quadratic(QuadraticConfig(), data.image_shape)
    train(model, data, cfg, RunRecord(tmp_path))
    # Replay the same optimisation by hand. LitEma's warm-up: update n (0-based) uses decay
    # min(0.8, (1 + n) / (10 + n)) with n = 0 giving 0, i.e. the first update copies.
    order, weight = DataOrder(len(data), 4, cfg.seed), torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.05)
    ema = torch.zeros(3)
    for step in range(20):
        target = torch.from_numpy(data.images(order.batch(step))).float().div(255).mean()
        optimizer.zero_grad()
        ((weight - target) ** 2).sum().backward()
        optimizer.step()
        decay = 0.0 if step == 0 else min(0.8, (1 + step) / (10 + step))
        ema = decay * ema + (1 - decay) * weight.detach()
    torch.testing.assert_close(model.weight.detach(), ema, rtol=1e-6, atol=1e-7)


def test_learning_rate_warms_up_linearly(tmp_path):
    data = FactorGrid((4, 4))
    cfg = quadratic_cfg(steps=6, batch_size=4, optimizer="adam", lr=0.1, warmup_steps=4)
    cfg.train.warmup_start = 0.25
    model = Quadratic(QuadraticConfig(), data.image_shape)
    train(model, data, cfg, RunRecord(tmp_path))
    order, weight = DataOrder(len(data), 4, cfg.seed), torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.1)
    for step in range(6):
        optimizer.param_groups[0]["lr"] = 0.1 * min(1.0, 0.25 + 0.75 * step / 4)
        target = torch.from_numpy(data.images(order.batch(step))).float().div(255).mean()
        optimizer.zero_grad()
        ((weight - target) ** 2).sum().backward()
        optimizer.step()
    torch.testing.assert_close(model.weight.detach(), weight.detach(), rtol=1e-6, atol=1e-7)


def test_non_finite_loss_stops_with_step_and_last_finite_value(tmp_path):
    data = FactorGrid((4, 4))
    model = Quadratic(QuadraticConfig(nan_at=4), data.image_shape)
    with pytest.raises(NonFiniteLoss) as error:
        train(model, data, quadratic_cfg(steps=10, batch_size=2), RunRecord(tmp_path))
    assert error.value.step == 4 and np.isnan(error.value.value)
    last_logged = RunRecord(tmp_path).read_log()[-1]
    assert last_logged["step"] == 3 and error.value.last_finite == last_logged["loss"]


def test_a_non_finite_loss_is_read_once_per_log_window_and_named_by_its_steps(tmp_path):
    # The check runs on the device and is read at log steps: steps 1-5 here, NaN at 4.
    data = FactorGrid((4, 4))
    model = Quadratic(QuadraticConfig(nan_at=4), data.image_shape)
    cfg = quadratic_cfg(steps=10, batch_size=2, log_every=5)
    with pytest.raises(NonFiniteLoss) as error:
        train(model, data, cfg, RunRecord(tmp_path))
    assert (error.value.first_step, error.value.step) == (1, 5)
    assert "in steps 1-5" in str(error.value) and "train.log_every" in str(error.value)
    assert not list(RunRecord(tmp_path).checkpoints_dir.glob("*.pt"))  # none written


def test_a_diverging_run_is_recorded_as_failed(tmp_path):
    with pytest.raises(NonFiniteLoss):
        run(
            "beta_vae",
            "dsprites-procedural",
            "smoke",
            [*QUICK, "train.steps=50", "train.lr=1e30"],
            out=tmp_path,
        )
    (status_file,) = tmp_path.glob("**/status.json")
    status = json.loads(status_file.read_text())
    assert status["state"] == "failed" and status["step"] >= 1
    assert "last_finite_loss" in status and "loss became" in status["error"]


def start_run(out, steps: int, umask: int | None = None) -> subprocess.Popen:
    args = ["--method", "beta_vae", "--dataset", "dsprites-procedural", "--preset", "smoke"]
    overrides = [*QUICK, f"train.steps={steps}", "train.checkpoint_every=10"]
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *args, "--out", str(out), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=None if umask is None else lambda: os.umask(umask),
    )


def wait_for_step(out, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in out.glob("**/log.jsonl"):
            lines = [line for line in log.read_text().splitlines() if line.endswith("}")]
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise TimeoutError(f"no step {step} within {timeout}s")


def final_weights(out) -> dict[str, torch.Tensor]:
    (weights,) = out.glob("**/model.safetensors")
    return load_file(weights)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the 40-step run that the interrupted ones must end with."""
    out = tmp_path_factory.mktemp("uninterrupted")
    reference = start_run(out, steps=40)
    assert reference.wait(timeout=300) == 0, reference.communicate()
    return final_weights(out)


def newest_checkpoint(out) -> Path:
    return max(out.glob("**/checkpoints/step-*.pt"))


def test_sigkill_then_a_truncated_checkpoint_resumes_from_the_one_before_bit_identically(
    tmp_path, uninterrupted
):
    interrupted = start_run(tmp_path / "killed", steps=40)
    wait_for_step(tmp_path / "killed", 25, interrupted)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    (status,) = (tmp_path / "killed").glob("**/status.json")
    assert json.loads(status.read_text())["state"] == "running"  # what a crash leaves behind
    newest = newest_checkpoint(tmp_path / "killed")
    step = int(newest.stem.split("-")[1])
    assert step >= 20 and (newest.parent / f"step-{step - 10:09d}.pt").is_file()  # kept
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[: size // 3])  # what a filesystem may hand back
    resumed = start_run(tmp_path / "killed", steps=40)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    warning = f"damaged checkpoint skipped: {newest.name} ({size // 3} bytes, {size} written)"
    assert f"warning: {warning}; resuming from step-{step - 10:09d}.pt" in stderr
    assert f"resuming {newest.parents[1]} from step {step - 10}" in stderr

    actual = final_weights(tmp_path / "killed")
    assert uninterrupted.keys() == actual.keys()
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], actual[name]), name
    (log,) = (tmp_path / "killed").glob("**/log.jsonl")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 41))


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path):
    process = start_run(tmp_path, steps=400)
    wait_for_step(tmp_path, 5, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "Run the same command to resume" in stderr
    (status_file,) = tmp_path.glob("**/status.json")
    status = json.loads(status_file.read_text())
    checkpoint = newest_checkpoint(tmp_path)
    assert status["state"] == "interrupted"
    assert torch.load(checkpoint, weights_only=True)["step"] == status["step"] >= 5


def test_ctrl_c_checkpoints_and_resumes_bit_identically(tmp_path, uninterrupted):
    stopped = tmp_path / "stopped"
    process = start_run(stopped, steps=40, umask=0o002)
    wait_for_step(stopped, 5, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr and "stopped by SIGINT" in stderr
    assert "checkpoint saved. Run the same command to resume" in stderr
    (status_file,) = stopped.glob("**/status.json")
    status = json.loads(status_file.read_text())
    checkpoint = newest_checkpoint(stopped)
    assert status["state"] == "interrupted"
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert (
        step == status["step"] >= 5 and step % 10 != 0
    )  # the step it stopped at, not a periodic one
    # Files are written with the user's umask (002: group-writable), not mkstemp's 0600.
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o664
    assert stat.S_IMODE(status_file.stat().st_mode) == 0o664

    resumed = start_run(stopped, steps=40)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"from step {step}" in stderr
    actual = final_weights(stopped)
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], actual[name]), name
    (log,) = stopped.glob("**/log.jsonl")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 41))
    # The wall time covers both segments of the run.
    (environment,) = stopped.glob("**/environment.json")
    info = json.loads(environment.read_text())
    assert info["segments"] == 2 and info["wall_time_s"] > info["last_segment_s"] > 0


@pytest.mark.parametrize("ctrl_c", [True, False])
def test_a_run_piped_through_a_reader_that_dies_checkpoints_and_resumes(
    tmp_path, uninterrupted, ctrl_c
):
    # `bench run … 2>&1 | tee log`, then Ctrl-C: the terminal stops tee too, so the run's next
    # write goes to a closed pipe (without Ctrl-C: tee killed alone).
    args = ["--method", "beta_vae", "--dataset", "dsprites-procedural", "--preset", "smoke"]
    progress = ["train.progress=true", "train.progress_every_s=0.1"]  # writes all the time
    overrides = [*QUICK, "train.steps=40", "train.checkpoint_every=10", *progress]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *args, "--out", str(tmp_path), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for_step(tmp_path, 5, process)
    process.stdout.close()  # the reader is gone
    if ctrl_c:
        process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 128 + (signal.SIGINT if ctrl_c else signal.SIGPIPE)
    (status_file,) = tmp_path.glob("**/status.json")
    status = json.loads(status_file.read_text())
    assert status["state"] == "interrupted"
    assert torch.load(newest_checkpoint(tmp_path), weights_only=True)["step"] == status["step"]
    assert active_holder(status_file.parent) is None  # the claim is released

    resumed = start_run(tmp_path, steps=40)  # same settings; progress is runtime-only
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and f"from step {status['step']}" in stderr, stderr
    (log,) = tmp_path.glob("**/log.jsonl")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 41))
    actual = final_weights(tmp_path)
    assert all(torch.equal(uninterrupted[name], actual[name]) for name in uninterrupted)


def test_tensorboard_logging_or_a_clear_error(tmp_path):
    data = FactorGrid((4, 4))
    model = Quadratic(QuadraticConfig(), data.image_shape)
    cfg = quadratic_cfg(steps=3, batch_size=2, tensorboard=True)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(BenchError, match=r"pip install 'drlbench\[tensorboard\]'"):
            train(model, data, cfg, RunRecord(tmp_path))
    else:
        train(model, data, cfg, RunRecord(tmp_path))
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resident_images_train_exactly_like_per_batch_reads(tmp_path):
    data = FactorGrid((4, 5))
    weights = []
    for resident in (None, "cpu"):
        model = Quadratic(QuadraticConfig(), data.image_shape)
        cfg = quadratic_cfg(steps=7, batch_size=3)
        cfg.data.device = resident
        train(model, data, cfg, RunRecord(tmp_path / str(resident)))
        weights.append(model.weight.detach())
    assert torch.equal(weights[0], weights[1])


@pytest.mark.gpu
def test_images_resident_on_the_gpu(tmp_path):
    record = run(
        "beta_vae",
        "shapes3d-procedural",
        "smoke",
        [*QUICK, "train.steps=20", "data.device=cuda", "train.device=cuda"],
        out=tmp_path,
    )
    assert record.is_complete()


def test_metric_curves_leave_training_untouched_and_are_reported(tmp_path):
    scored = [*QUICK, "train.steps=6", "eval.metrics=[mig]", "eval.hyperparams.mig.num_train=300"]
    curves = [
        *scored,
        "eval.every=2",
        "eval.history.metrics=[mig,sap_score]",
        "eval.history.hyperparams.mig.num_train=300",
        "eval.history.hyperparams.sap_score={num_train: 300, num_test: 100}",
    ]
    with_curves = run("beta_vae", "dsprites-procedural", "smoke", curves, out=tmp_path)
    plain = run("beta_vae", "dsprites-procedural", "smoke", scored, out=tmp_path)
    history = with_curves.read_history()
    assert [(e["step"], e["metric"]) for e in history] == [
        (step, metric) for step in (2, 4, 6) for metric in ("mig", "sap_score")
    ]
    assert history[0]["hyperparams"]["num_train"] == 300 and "discrete_mig" in history[0]["values"]
    # Scoring during training draws nothing from the training's random streams.
    a, b = load_file(with_curves.weights_file), load_file(plain.weights_file)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from bench.report import write_report

    write_report(tmp_path, tmp_path / "report")
    assert (tmp_path / "report" / "curve-dsprites-procedural-mig-exact.png").is_file()


@dataclass
class DuelConfig(MethodConfig):
    name: str = "duel"


class Duel(Method):
    """A generator weight and a critic with an Adam of its own (FactorVAE's shape): each loss
    depends on both parts, so a loss reaching the wrong part would show in the weights."""

    config_class = DuelConfig

    def __init__(self, config, image_shape):
        super().__init__(config, image_shape)
        torch.manual_seed(0)
        self.generator_weight = torch.nn.Parameter(torch.randn(3))
        self.critic = torch.nn.Linear(3, 1)

    @property
    def representation_dim(self):
        return 3

    def trainer(self, train, device):
        critic = OwnOptimizer(list(self.critic.parameters()), 1e-2, (0.5, 0.9))
        return LossTrainer(self, train, device, own={"critic": critic})

    def losses(self, images, noise):
        fake = self.generator_weight * images.mean() + noise
        score = self.critic(fake[None]).squeeze()
        return {"run": score**2 + (fake**2).sum(), "critic": -score + 0.1 * fake.sum() ** 2}

    def training_loss(self, batch, generator):
        noise = torch.randn(3, generator=generator, device=generator.device)
        return self.losses(batch.images, noise), {}

    def encode(self, images):
        return self.generator_weight.expand(len(images), 3)


def test_each_optimizer_steps_on_its_own_loss_for_its_own_parameters(tmp_path):
    data = FactorGrid((4, 4))
    cfg = quadratic_cfg(steps=5, batch_size=4, optimizer="adam", lr=0.05)
    model = Duel(DuelConfig(), data.image_shape)
    replay = Duel(DuelConfig(), data.image_shape)
    train(model, data, cfg, RunRecord(tmp_path))
    # By hand: two Adams, each fed autograd.grad of its loss with respect to its parameters.
    order, generator = DataOrder(len(data), 4, cfg.seed), torch.Generator().manual_seed(cfg.seed)
    critic = list(replay.critic.parameters())
    adam_run = torch.optim.Adam([replay.generator_weight], lr=0.05)
    adam_critic = torch.optim.Adam(critic, lr=1e-2, betas=(0.5, 0.9))
    for step in range(5):
        images = torch.from_numpy(data.images(order.batch(step))).float().div(255)
        losses, _ = replay.training_loss(Batch(images.permute(0, 3, 1, 2)), generator)
        (g,) = torch.autograd.grad(losses["run"], [replay.generator_weight], retain_graph=True)
        critic_grads = torch.autograd.grad(losses["critic"], critic)
        replay.generator_weight.grad = g
        for param, grad in zip(critic, critic_grads, strict=True):
            param.grad = grad
        adam_run.step()
        adam_critic.step()
    for name, value in replay.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    log = RunRecord(tmp_path).read_log()[-1]
    assert {"loss", "critic_loss"} <= log.keys()


def test_two_optimizers_resume_bit_identically(tmp_path):
    data = FactorGrid((4, 4))
    whole = Duel(DuelConfig(), data.image_shape)
    train(whole, data, quadratic_cfg(steps=8, batch_size=4), RunRecord(tmp_path / "whole"))
    first = Duel(DuelConfig(), data.image_shape)
    cfg = quadratic_cfg(steps=4, batch_size=4, checkpoint_every=4)
    train(first, data, cfg, RunRecord(tmp_path / "split"))
    resumed = Duel(DuelConfig(), data.image_shape)  # fresh weights: everything from the file
    cfg = quadratic_cfg(steps=8, batch_size=4, checkpoint_every=4)
    train(resumed, data, cfg, RunRecord(tmp_path / "split"))
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_checkpoint_written_before_trainers_resumes_bit_identically(tmp_path):
    # Checkpoints of earlier versions held the run's optimizer under "optimizer" and the
    # others under "own_optimizers"; a run in flight across an upgrade resumes from them.
    from bench.checkpoints import load_checkpoint_file, newest_usable, save_checkpoint_file

    data = FactorGrid((4, 4))
    whole = Duel(DuelConfig(), data.image_shape)
    train(whole, data, quadratic_cfg(steps=8, batch_size=4), RunRecord(tmp_path / "whole"))
    record = RunRecord(tmp_path / "split")
    cfg = quadratic_cfg(steps=4, batch_size=4, checkpoint_every=4)
    train(Duel(DuelConfig(), data.image_shape), data, cfg, record)
    checkpoint = load_checkpoint_file(newest_usable(record.checkpoints_dir))
    optimizers = checkpoint.pop("optimizers")
    checkpoint["optimizer"] = optimizers.pop("run")
    checkpoint["own_optimizers"] = optimizers
    save_checkpoint_file(record.checkpoints_dir, 4, checkpoint, keep=2)
    resumed = Duel(DuelConfig(), data.image_shape)
    cfg = quadratic_cfg(steps=8, batch_size=4, checkpoint_every=4)
    train(resumed, data, cfg, record)
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


@dataclass
class LabelledConfig(QuadraticConfig):
    name: str = "labelled"
    labeled: tuple[str, ...] = ()


class Labelled(Quadratic):
    """Keeps the labels of every batch the loop hands its ``training_loss``."""

    config_class = LabelledConfig

    def __init__(self, config, image_shape):
        super().__init__(config, image_shape)
        self.received = []
        if config.labeled:
            self.supervision = Supervision(tuple(config.labeled))

    def training_loss(self, batch, generator):
        self.received.append(batch.labels)
        return super().training_loss(batch, generator)


def test_a_method_naming_labelled_factors_gets_their_classes_and_no_other_does(tmp_path):
    data = FactorGrid((3, 4, 5))
    cfg = quadratic_cfg(steps=4, batch_size=6)
    model = Labelled(LabelledConfig(labeled=("f2", "f0")), data.image_shape)
    train(model, data, cfg, RunRecord(tmp_path / "labelled"))
    order = DataOrder(len(data), 6, cfg.seed)
    for step, labels in enumerate(model.received):
        expected = data.factors_of(order.batch(step))[:, [2, 0]]
        assert labels.dtype == torch.int64 and np.array_equal(labels.numpy(), expected)
    unsupervised = Labelled(LabelledConfig(), data.image_shape)
    train(unsupervised, data, cfg, RunRecord(tmp_path / "unsupervised"))
    assert unsupervised.received == [None] * 4


def test_every_registered_method_but_disunknown_is_unsupervised(tmp_path):
    # The loop passes labels only to a method with a Supervision (above).
    from bench.methods import METHODS

    supervised = set()
    for name in METHODS.names():
        cfg = resolve_config(name, "dsprites-procedural", "smoke")
        if build_method(cfg, bench.datasets.load("dsprites-procedural")).supervision:
            supervised.add(name)
    assert supervised == {"disunknown"}


def test_an_unknown_labelled_factor_is_a_one_line_error(tmp_path):
    data = FactorGrid((3, 4))
    model = Labelled(LabelledConfig(labeled=("f9",)), data.image_shape)
    with pytest.raises(BenchError, match="'f9' is not one of FactorGrid's factors: f0, f1"):
        train(model, data, quadratic_cfg(steps=2, batch_size=4), RunRecord(tmp_path))
