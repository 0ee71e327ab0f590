"""``introvae compare``: IntroVAE, Soft-IntroVAE or a VAE, on your data, at your budget.

Each objective trains on the same data for the same budget, images seen or minutes of training on this
machine (``--budget 60k``, ``--budget 5epochs`` or ``--budget 30min``), with the presets' measured
defaults (Fashion-MNIST: ``fashion-mnist``, ``fashion-mnist-soft``, ``fashion-mnist-vae``; other
data: the preset ``--data`` picks, with the objective swapped), then is scored under the evaluation protocol
(``evaluate``'s defaults: the official test split where the data has one, fp32 features). The output folder
gets ``compare.md`` (FID, precision, recall, reconstruction PSNR, wall time), ``compare.json`` and
``samples.png`` (a row of samples per objective). Interrupted, it resumes: finished runs and their
evaluations are kept, an unfinished run continues from its checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import UserError

OBJECTIVES = ("introvae", "soft-introvae", "vae")
NAMES = {"introvae": "IntroVAE", "soft-introvae": "Soft-IntroVAE", "vae": "VAE"}


@dataclass(frozen=True)
class Plan:
    objective: str
    seed: int
    config: TrainConfig
    run: Path


def config_for(objective: str, data: str, *, image_size: int | None, seed: int, images: int | None,
               epochs: float | None = None, train_images: int | None = None) -> TrainConfig:
    """The preset's measured defaults for ``objective`` on ``data``, trained for ``images`` images, or ``epochs``
    passes over its ``train_images`` (both None: a time budget, which stops the run)."""
    from .presets import get_preset, preset_for_data

    name = preset_for_data(data)
    if name == "fashion-mnist":
        base = get_preset({"soft-introvae": "fashion-mnist-soft", "vae": "fashion-mnist-vae"}.get(objective, name))
    else:
        base = get_preset(name)
    fields = {"data": data, "objective": objective, "seed": seed, "logger": "none"}
    if image_size:
        fields["image_size"] = image_size
    if objective == "soft-introvae" and base.objective != "soft-introvae":
        # Soft-IntroVAE's knob beta_neg is of the order of the latent size (the authors: 256 for z = 32, 2 x the
        # latent size elsewhere), with no warm-up as theirs; the batch, lr and Adam stay the preset's, as in
        # fashion-mnist-soft (the authors' batch 128 and lr 2e-4 trailed far behind there at budgets of epochs)
        fields.update(beta_neg=float(2 * base.model.latent_dim), vae_steps=0)
    cfg = base.replace(**fields)
    if epochs is not None:  # the trainer's epochs: whole batches only, an incomplete last one dropped
        steps = max(1, int(epochs * (train_images // cfg.batch_size)))
    else:  # a time budget trains until the clock runs out; its step count is only a cap (1,000 epochs of 60,000)
        steps = max(1, (images or 60_000_000) // cfg.batch_size)
    counted = images is not None or epochs is not None
    return cfg.replace(steps=steps, epochs=None, image_every=steps if counted else 1000, checkpoint_every=0)


def plan(data: str, budget: Budget, *, objectives=OBJECTIVES, seeds: int = 1, out: Path,
         image_size: int | None = None) -> list[Plan]:
    plans = []
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise UserError(f"compare: unknown objective {unknown[0]!r} (known: {', '.join(OBJECTIVES)})")
    n_train = training_images(data)  # opens the data before any folder is made: a wrong --data is one line, no folder
    if budget.epochs is not None and budget.epochs * n_train < 1:
        raise UserError(f"compare: {budget.words()} of {data}'s {n_train} training images is less than one image")
    for objective in objectives:
        for seed in range(seeds):
            cfg = config_for(objective, data, image_size=image_size, seed=seed, images=budget.images,
                             epochs=budget.epochs, train_images=n_train)
            plans.append(Plan(objective, seed, cfg, Path(out) / f"{objective}-s{seed}"))
    return plans


def training_images(data: str) -> int:
    """How many training images ``data`` has (its official training split, or a folder's images less the held-out
    part), without decoding a folder that has no decoded copy yet."""
    from .data import load
    from .presets import get_preset, preset_for_data

    model = get_preset(preset_for_data(data)).model
    return len(load(data, image_size=model.image_size, in_channels=model.in_channels, show_progress=False,
                    lazy=True).train)


def run_all(plans: list[Plan], *, eval_samples: int, device: str = "auto", show_progress: bool = True,
            say=print, features=None, budget: Budget | None = None) -> list[dict]:
    """Train (or resume) and score every plan; one row per plan. With a time ``budget`` each run trains until it
    has trained that long (counted over its resumptions), then stops at the next log step."""
    from . import checkpoint
    from .evaluate import evaluate_model
    from .provenance import training_seconds
    from .metrics import EvalSettings
    from .trainer import Trainer, resume

    seconds = budget.seconds if budget else None
    rows = []
    for p in plans:
        t0 = time.perf_counter()
        done = checkpoint.latest(p.run)
        step = checkpoint.load(done)["step"] if done is not None else 0
        trained = (training_seconds(p.run) or 0.0) if done is not None and seconds is not None else 0.0
        marker = p.run / "budget-done.json"  # written when a time budget ran out (the stats' time is a lower bound)
        spent = json.loads(marker.read_text())["seconds"] if marker.is_file() else None
        if done is not None and (step >= p.config.steps or
                                 (seconds is not None and spent is not None and spent >= seconds)):
            say(f"compare: {p.run.name} already trained ({p.config.steps} steps)" if seconds is None else
                f"compare: {p.run.name} already trained ({trained / 60:.1f} min)")
        else:
            # a time budget's step count is only a cap (its bar counts steps without a total), and its stop is the
            # plan, not a pause
            def log(line: str) -> None:
                if seconds is None or not line.startswith("stopped at step"):
                    say(line)

            quiet = {"show_progress": show_progress, "log": log}
            if done is not None:
                say(f"compare: {p.run.name}: resuming from {done.name}")
                trainer = resume(p.run, {"device": device}, **quiet)
            else:
                trainer = Trainer(p.config.replace(device=device), p.run, **quiet)
                if seconds is None and trainer.run.warmup_steps >= trainer.run.total_steps and p.objective != "vae":
                    raise UserError(f"compare: a budget of {p.config.steps} steps leaves no step after the "
                                    f"{trainer.run.warmup_steps}-step VAE warm-up of {NAMES[p.objective]}; give a "
                                    f"larger --budget")
                say(f"compare: training {NAMES[p.objective]} (seed {p.seed}) for "
                    f"{f'{p.config.steps} steps' if seconds is None else f'{(seconds - trained) / 60:g} min'} of "
                    f"batches of {p.config.batch_size} into {p.run}")
            trainer.open_ended = seconds is not None
            timer = _stop_after(trainer, seconds - trained) if seconds is not None else None
            try:
                trainer.train()
            finally:
                if timer is not None:
                    timer.cancel()
            step = trainer.step
            out_of_time = timer is not None and timer.finished.is_set() and not timer.interrupted
            if trainer.step < p.config.steps and not out_of_time:
                raise UserError(f"compare: stopped during {p.run.name}; run the same command again to resume",
                                status=3)
            if out_of_time:
                marker.write_text(json.dumps({"seconds": seconds, "steps": trainer.step}) + "\n")
                say(f"compare: {p.run.name}: {seconds / 60:g} min trained, {trainer.step} steps")
            if out_of_time and p.objective != "vae" and trainer.step <= trainer.run.warmup_steps:
                raise UserError(f"compare: {seconds / 60:g} min trained {NAMES[p.objective]} for {trainer.step} steps, "
                                f"all inside its {trainer.run.warmup_steps}-step VAE warm-up; give a larger --budget")
        settings = EvalSettings(num_samples=eval_samples, ref_images=eval_samples, pairs=min(eval_samples, 2000),
                                neighbours=0)
        result = _scored(p.run, settings) or evaluate_model(
            p.run, settings, device=device, show_progress=show_progress, features=features,
            metrics=("fid", "precision_recall", "reconstruction"))
        m = result["metrics"]
        rows.append({"objective": p.objective, "seed": p.seed, "steps": step,
                     "batch_size": p.config.batch_size, "fid": m["fid"]["value"],
                     "precision": m["precision_recall"].get("precision"), "recall": m["precision_recall"].get("recall"),
                     "psnr": m["reconstruction"]["posterior_mean"]["psnr"], "train_s": training_seconds(p.run),
                     "protocol": result.get("protocol"), "run": str(p.run), "elapsed_s": time.perf_counter() - t0})
    return rows


def _stop_after(trainer, seconds: float):
    """A timer that asks ``trainer`` to stop (as Ctrl-C does: at the next log step, with a checkpoint) once
    ``seconds`` have passed; ``interrupted`` tells a stop by the user (a signal) from the budget's."""
    import threading

    def stop():
        timer.interrupted = trainer.stop_requested  # already asked to stop: by the user, not the clock
        trainer.stop_requested = True

    timer = threading.Timer(max(0.0, seconds), stop)
    timer.daemon, timer.interrupted = True, False
    timer.start()
    return timer


def _scored(run: Path, settings) -> dict | None:
    """The run's last evaluation if it used these settings (a resumed compare does not score twice)."""
    from .metrics.store import read_metrics

    for row in reversed(read_metrics(run)):
        p = row.get("protocol") or {}
        if not row.get("during_training") and p.get("num_samples") == settings.num_samples and \
                "reconstruction" in row.get("metrics", {}) and "precision_recall" in row["metrics"]:
            return row
    return None


def write_outputs(rows: list[dict], plans: list[Plan], out: Path, *, data: str, budget: Budget) -> Path:
    """compare.md (the table), compare.json (the rows) and samples.png (one row of samples per objective)."""
    from .grids import save_labelled_rows
    from .runs import load_model

    out = Path(out)
    lines = [f"# {data}: {', '.join(NAMES[o] for o in dict.fromkeys(r['objective'] for r in rows))} at "
             f"{budget.words()}", "",
             "| objective | seed | steps x batch | FID | precision | recall | PSNR (dB) | training time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["train_s"]
        lines.append(f"| {NAMES[r['objective']]} | {r['seed']} | {r['steps']} x {r['batch_size']} | {r['fid']:.1f} | "
                     f"{_num(r['precision'])} | {_num(r['recall'])} | {r['psnr']:.2f} | "
                     f"{'-' if t is None else f'{t / 60:.1f} min'} |")
    proto = rows[0].get("protocol") if rows else None
    if proto:
        lines += ["", f"Protocol: {proto['num_samples']} samples vs {proto['ref_images']} {proto['ref_split']} images, "
                      f"{proto['feature_precision']} Inception features, generator BatchNorm {proto['bn_protocol']}."]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    (out / "compare.json").write_text(json.dumps(rows, indent=1))
    pictures, labels = [], []
    for p in plans:
        if p.seed == 0:
            model = load_model(p.run, device="cpu")
            with torch.no_grad():
                pictures.append(model.sample(8, seed=0).clamp(0, 1))
            labels.append(NAMES[p.objective])
    if pictures:
        save_labelled_rows(pictures, labels, out / "samples.png", title=f"{data}, {budget.words()}")
    return out / "compare.md"


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


@dataclass(frozen=True)
class Budget:
    """Per objective and seed: ``images`` seen, ``epochs`` over the training images, or ``seconds`` of training
    (one of the three; the others None)."""
    images: int | None = None
    seconds: float | None = None
    epochs: float | None = None

    def words(self) -> str:
        if self.epochs is not None:
            return f"{self.epochs:g} epoch{'' if self.epochs == 1 else 's'}"
        return f"{self.images:,} images seen" if self.images else f"{self.seconds / 60:g} min of training"


TIME_UNITS = {"s": 1, "sec": 1, "min": 60, "h": 3600}
EPOCH_UNITS = ("epochs", "epoch", "ep")


def parse_budget(text: str) -> Budget:
    """``--budget``: images seen per objective and seed (60000, 60k, 1.2m), passes over the training images (5epochs,
    1epoch, 0.5ep), or minutes of training on this machine (30min, 2h, 90s)."""
    t = text.strip().lower().replace(",", "").replace("_", "").replace(" ", "")
    unit = next((u for u in EPOCH_UNITS if t.endswith(u)), None)
    if unit is not None:
        try:
            epochs = float(t[:-len(unit)])
        except ValueError:
            epochs = float("nan")
        if not epochs > 0:
            raise UserError(f"compare: --budget in epochs must be a positive number of them (5epochs), got {text!r}")
        return Budget(epochs=epochs)
    unit = next((u for u in sorted(TIME_UNITS, key=len, reverse=True) if t.endswith(u)), None)
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1) if unit is None else TIME_UNITS[unit]
    number = t[:-len(unit)] if unit else (t[:-1] if mult > 1 else t)
    try:
        value = float(number) * mult
    except ValueError:
        raise UserError(f"compare: --budget is a number of images seen (60000, 60k, 1.2m), of epochs (5epochs) or a "
                        f"training time (30min, 2h), got {text!r}") from None
    if unit is not None:
        if not value > 0:
            raise UserError(f"compare: --budget must be a positive time, got {text!r}")
        return Budget(seconds=value)
    if value < 1:
        raise UserError(f"compare: --budget must be at least 1 image, got {text!r}")
    return Budget(images=int(value))
