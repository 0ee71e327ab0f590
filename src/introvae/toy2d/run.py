"""Training and scoring a model of a 2D density (Soft-IntroVAE's Section 5.1) with any objective.

The objectives and the generic step are those of the image models (``objectives``, ``step``); only the data
(fresh points every batch), the MLP networks and the schedule (Adam 2e-4, divided by 10 at 10,000 and
15,000 steps) are the benchmark's own. A run directory holds ``toy2d.json`` (the config), ``stats.jsonl``,
``sessions.jsonl`` (where each call trained), ``model.pt``, ``scores.json`` and ``density.png`` (data, samples, and the model's density exp(-ELBO loss)); while it
trains, ``checkpoint.pt`` (every ``checkpoint_every`` steps and on Ctrl-C or SIGTERM), from which the same call
resumes exactly (weights, Adam, the rate's schedule, the automatic margin, both random streams).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import checkpoint
from ..config_checks import DEVICE_RULE, MARGIN_RULE, OBJECTIVES, at_least, finite, param, validate_fields
from .. import devices
from ..devices import DEVICE_HELP
from ..errors import CheckpointError, UserError
from ..stopping import StopRequest
from ..margin import AutoMargin, make_margin
from ..objectives import make_objective, vae_beta
from ..schedule import Schedule
from ..precision import make_precision
from ..provenance import record_session
from ..stats import read_stats
from ..step import TrainStep, make_optimizers
from .densities import DENSITIES, RADIUS, sample
from .networks import ToyVAE
from .scores import scores, write_scores

# The authors' weights per density: (beta_kl, beta_rec, beta_neg).
AUTHORS_WEIGHTS = {"8gaussians": (0.3, 0.2, 0.9), "2spirals": (0.5, 0.2, 1.0), "checkerboard": (0.1, 0.2, 0.2),
                   "rings": (0.2, 0.2, 1.0)}
CONFIG_FILE = "toy2d.json"
CHECKPOINT_FILE = "checkpoint.pt"
# What a resumed run may change: where and how often it reports, not what it trains or how it is scored
RUNTIME_FIELDS = ("device", "log_every", "checkpoint_every")
# How Soft-IntroVAE's warm-up is weighed since introvae 0.7.2 (objectives.make_objective); scores.json says it
SOFT_WARMUP = "the authors' warm-up scale (beta_rec rec + beta_kl KL)"


def _toy(default, help: str, **kw):
    return param(default, help, group="2D density", **kw)


@dataclass(frozen=True)
class ToyConfig:
    """The settings of a 2D density run, declared like every other setting (``config.param``): the fields that
    share a name with :class:`~introvae.config.TrainConfig` are set by the same ``train`` flags."""

    density: str = _toy("8gaussians", "the 2D density", choices=tuple(DENSITIES))
    objective: str = _toy("soft-introvae", "the objective", choices=OBJECTIVES)
    steps: int = _toy(30_000, "training steps", rule=at_least(1))
    vae_steps: int = _toy(2_000, "the first steps as a plain VAE (the authors' warm-up), for both introspective "
                                 "VAEs", rule=at_least(0))
    batch_size: int = _toy(512, "points per batch", rule=at_least(1))
    lr: float = _toy(2e-4, "Adam's learning rate", rule=finite(">", 0, "must be > 0"))
    lr_milestones: tuple[int, ...] = _toy((10_000, 15_000), "steps at which the rate is divided by 10")
    beta_kl: float | None = _toy(None, "Soft-IntroVAE's beta_kl (default: the authors' value for the density)")
    beta_rec: float | None = _toy(None, "beta_rec (default: the authors' value for the density)")
    beta_neg: float | None = _toy(None, "beta_neg (default: the authors' value for the density)")
    gamma_r: float = _toy(1e-8, "Soft-IntroVAE's gamma_r", rule=finite(">=", 0))
    target_grad: bool = _toy(False, "Soft-IntroVAE: x_r's re-reconstruction target passes its gradient into E, as "
                                    "the authors' code (off: the paper's ng(x_r))")
    margin: float | str = _toy("auto", "IntroVAE's margin: auto (margin.AutoMargin) or a number", rule=MARGIN_RULE)
    alpha: float = _toy(0.25, "IntroVAE's alpha", rule=finite(">=", 0))
    seed: int = _toy(0, "seed")
    log_every: int = _toy(500, "steps between lines of stats.jsonl", rule=at_least(1))
    checkpoint_every: int = _toy(1_000, "steps between checkpoints (checkpoint.pt, from which an interrupted run "
                                        "resumes; removed when the run ends)", rule=at_least(1))
    eval_points: int = _toy(5_000, "points the scores are computed on", rule=at_least(1))
    score_draws: int = _toy(20, "independent draws of samples and data points the scores are also averaged over "
                                "(the authors score one draw, whose KL on 8gaussians varies by about 0.3 from "
                                "draw to draw for one model)", rule=at_least(1))
    device: str = _toy("auto", DEVICE_HELP, rule=DEVICE_RULE)
    # no fp16: its gradient scaler is not worth it for MLPs this small; bf16 is ~2.5x faster on CPUs with
    # avx512_bf16/AMX (see experiments/objectives.py)
    precision: str = _toy("fp32", "fp32 or bf16", choices=("fp32", "bf16"))

    def __post_init__(self):
        validate_fields(self)
        kl, rec, neg = AUTHORS_WEIGHTS[self.density]
        for name, default in (("beta_kl", kl), ("beta_rec", rec), ("beta_neg", neg)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    likelihood = "gaussian"  # of 2D points (real numbers): Soft-IntroVAE's squared error, as the authors' code

    @property
    def beta(self) -> float:
        """IntroVAE's and the plain VAE's weight on Eq. 10, with Soft-IntroVAE's balance (objectives.vae_beta)."""
        return vae_beta(self.beta_rec, self.beta_kl)

    def warmup_steps(self) -> int:
        return 0 if self.objective == "vae" else self.vae_steps


def train(config: ToyConfig, out: str | Path, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train, then score and draw; returns the scores (also written to ``scores.json``). Where ``out`` holds an
    unfinished run's ``checkpoint.pt`` of the same settings, it goes on from there, as if never stopped."""
    from ..progress import progress as bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = devices.resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = ToyVAE().to(device)
    optimizers = make_optimizers(model, lr=config.lr, betas=(0.9, 0.999))
    schedules = {name: torch.optim.lr_scheduler.MultiStepLR(o, list(config.lr_milestones), 0.1)
                 for name, o in optimizers.items()}
    step = TrainStep(model, optimizers, precision=make_precision(config.precision, device))
    margin = make_margin(config.margin, device)
    schedule = Schedule(warmup_steps=config.warmup_steps())  # no alpha_early here: warm-up, then the game
    objectives = {"warm-up": make_objective(config, warmup=True), "main": make_objective(config, margin=margin)}
    data = torch.Generator().manual_seed(config.seed + 1)
    parts = _Parts(model, optimizers, schedules, margin, data, device)
    start, rows, before = 0, [], 0.0  # before: the training seconds of the calls a resumed run has had
    if (out / CHECKPOINT_FILE).is_file():
        start, before = parts.load(out / CHECKPOINT_FILE, config)
        rows = [r for r in read_stats(out) if r["step"] <= start]
        log(f"resuming {out} at step {start} of {config.steps}")
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    record_session(out, step=start, device=device, precision=step.precision.name, processes=1)
    t0 = time.perf_counter()
    with open(out / "stats.jsonl", "w") as stats, StopRequest().on_signals() as stop:
        stats.writelines(json.dumps(r) + "\n" for r in rows)  # a resumed run's rows, up to its checkpoint
        for i in bar(range(start, config.steps), total=config.steps, initial=start,
                     desc=f"{config.objective} on {config.density}", disable=not progress, unit="step", mininterval=2):
            x = sample(config.density, config.batch_size, generator=data).to(device)
            logs = step(objectives[schedule.segment(i)], x)
            if isinstance(margin, AutoMargin):
                margin.observe(logs["kl_real"], ok=logs["skipped"] == 0)
            for s in schedules.values():
                s.step()
            if (i + 1) % config.log_every == 0 or i + 1 == config.steps:
                row = {"step": i + 1, **{k: round(v.item(), 5) for k, v in logs.items() if k != "overflow"}}
                rows.append(row)
                stats.write(json.dumps(row) + "\n")
                stats.flush()  # readable while the run goes on
            if stop.requested or ((i + 1) % config.checkpoint_every == 0 and i + 1 < config.steps):
                parts.save(out / CHECKPOINT_FILE, config, i + 1, seconds=before + time.perf_counter() - t0)
            if stop.requested:
                raise UserError(f"interrupted at step {i + 1} of {config.steps}; {out / CHECKPOINT_FILE} is written: "
                                "the same command resumes there", status=130)
    seconds = before + time.perf_counter() - t0
    torch.save(model.state_dict(), out / "model.pt")
    result = {**evaluate(model, config), "seconds": round(seconds, 1), "networks": model.description}
    if start:
        result["resumed_at"] = start  # seconds: the training of every call, the scoring of none
    if config.objective == "soft-introvae" and config.vae_steps:
        result["warmup"] = SOFT_WARMUP
    write_scores(out, result)
    draw(model, config, out / "density.png")
    if config.objective == "introvae":  # Fig. 5 for a 2D density: the KLs against the margin in force
        from ..plots import plot_kl

        plot_kl(rows, out / "kl.png", margin=config.margin, warmup_steps=config.warmup_steps(),
                title=f"{config.density}: encoder KL (Fig. 5)")
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # finished: model.pt and scores.json hold the result
    return result


@dataclass
class _Parts:
    """Everything a 2D run's next step depends on, saved to and restored from its checkpoint."""

    model: ToyVAE
    optimizers: dict
    schedules: dict
    margin: object
    data: torch.Generator
    device: torch.device

    def save(self, path: Path, config: ToyConfig, step: int, *, seconds: float) -> None:
        from ..version import __version__

        cuda = self.device.type == "cuda"
        checkpoint.save({
            "format": checkpoint.CHECKPOINT_FORMAT, "kind": "toy2d", "version": __version__, "step": step,
            "seconds": seconds,
            "toy_config": _comparable(dataclasses.asdict(config)), "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "auto_margin": self.margin.state_dict() if isinstance(self.margin, AutoMargin) else None,
            "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "data_rng": self.data.get_state()}, path)

    def load(self, path: Path, config: ToyConfig) -> tuple[int, float]:
        """Restore every part from ``path``; returns its step and the training seconds up to it."""
        state = checkpoint.load(path)
        if state.get("kind") != "toy2d":
            raise CheckpointError(f"{path} is not a 2D density run's checkpoint")
        saved, asked = state["toy_config"], _comparable(dataclasses.asdict(config))
        for name, value in asked.items():
            if name not in RUNTIME_FIELDS and saved.get(name) != value:
                raise UserError(f"{path.parent} holds an unfinished 2D run with {name} {saved.get(name)!r}, not "
                                f"{value!r}: give its settings to resume it, or another --out")
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedules.items():
            s.load_state_dict(state["schedules"][k])
        if isinstance(self.margin, AutoMargin) and state["auto_margin"] is not None:
            self.margin.load_state_dict(state["auto_margin"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.data.set_state(state["data_rng"])
        return int(state["step"]), float(state.get("seconds", 0.0))  # 0: written before the seconds were kept


def _comparable(d: dict) -> dict:
    """A config dict as a checkpoint stores it (tuples as lists), so that a saved and an asked one compare."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def evaluate(model: ToyVAE, config: ToyConfig, *, seed: int = 0) -> dict:
    """KL and JSD between histograms of ``eval_points`` model samples and as many fresh data points: one draw (of
    ``seed``: the authors' protocol), and under ``draws`` their mean and standard deviation over
    ``score_draws`` draws (seeds ``seed``, ``seed + 1``, ...), which tell the model from the luck of one draw."""
    model.eval()
    runs = []
    for k in range(config.score_draws):
        fake = model.sample(config.eval_points, seed=seed + k).cpu().numpy()
        real = sample(config.density, config.eval_points, seed=seed + k).numpy()
        runs.append(scores(fake, real, RADIUS[config.density]))
    draws = {"n": len(runs)}
    for key in runs[0]:
        values = np.array([r[key] for r in runs])
        draws[key] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
    return {**runs[0], "draws": draws}


def load_config(run_dir: str | Path) -> ToyConfig:
    """The settings a 2D run directory was trained with (its ``toy2d.json``)."""
    run_dir = Path(run_dir)
    try:
        d = json.loads((run_dir / CONFIG_FILE).read_text())
        d["lr_milestones"] = tuple(d["lr_milestones"])
        return ToyConfig(**d)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{run_dir}: not a 2D run ({str(e).splitlines()[0]})") from None


def load_run(run_dir: str | Path) -> tuple[ToyVAE, ToyConfig]:
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    try:
        model = ToyVAE()
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        if len(state) < len(model.state_dict()):
            raise UserError(f"{run_dir}: trained with the earlier 2D networks (introvae 0.5 and before, one ReLU "
                            "layer fewer than the authors'); train it again")
        model.load_state_dict(state)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise UserError(f"{run_dir}: not a finished 2D run ({str(e).splitlines()[0]})") from None
    return model, config


def is_run(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def density_grid(model: ToyVAE, config: ToyConfig, grid: int = 150):
    """The model's density exp(-ELBO loss) on a grid x grid square [-2r, 2r]^2 (rows: y from -2r up), as numpy."""
    r = 2 * RADIUS[config.density]
    axis = torch.linspace(-r, r, grid)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1).to(next(model.parameters()).device)
    loss = model.elbo_loss(points, beta_rec=config.beta_rec, beta_kl=config.beta_kl, samples=4)
    return torch.exp(-loss).reshape(grid, grid).cpu().numpy()


def draw(model: ToyVAE, config: ToyConfig, path: Path, *, grid: int = 150) -> Path:
    """Three panels: the data, the model's samples, and the model's density exp(-ELBO loss) on a grid."""
    plt = _pyplot()
    r = 2 * RADIUS[config.density]
    model.eval()
    real = sample(config.density, config.eval_points, seed=0).numpy()
    fake = model.sample(config.eval_points, seed=0).cpu().numpy()
    density = density_grid(model, config, grid)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, pts, title in ((axes[0], real, "data"), (axes[1], fake, f"{config.objective}: samples")):
        _histogram_panel(ax, pts, r, title)
    axes[2].imshow(density, origin="lower", extent=(-r, r, -r, r), cmap="viridis")
    axes[2].set_title("density exp(-ELBO loss)")
    axes[2].set_aspect("equal")
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    fig.suptitle(f"{config.density}, {config.steps} steps")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


SAMPLE_SUFFIXES = (".csv", ".npy", ".png", ".jpg", ".jpeg")


def write_samples(model: ToyVAE, config: ToyConfig, n: int, path: Path, *, seed: int = 0) -> Path:
    """``n`` of the model's points (the same for the same seed) to ``path``: ``.csv`` (x,y rows), ``.npy`` (an
    (n, 2) float32 array) or a picture (``.png``, ``.jpg``: their 2D histogram on the square the scores use)."""
    suffix = path.suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise UserError(f"sample: -o {path}: a 2D run's samples are points; give a .csv, .npy or .png file")
    model.eval()
    points = model.sample(n, seed=seed).float().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        np.savetxt(path, points, fmt="%.6f", delimiter=",", header="x,y", comments="")
    elif suffix == ".npy":
        np.save(path, points.astype(np.float32))
    else:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(4, 4))
        _histogram_panel(ax, points, 2 * RADIUS[config.density], f"{config.objective} on {config.density}: {n} samples")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _histogram_panel(ax, points: np.ndarray, r: float, title: str) -> None:
    """Points as a 100 x 100 histogram on [-r, r]^2 (the scores' square), without ticks."""
    ax.hist2d(points[:, 0], points[:, 1], bins=100, range=[[-r, r], [-r, r]], cmap="viridis")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
