"""What each ``introvae`` command does with its parsed arguments (the parser is in ``cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from .config import flat_fields, read_config_file
from .errors import UserError, report
from .outputs import check_writable
from .runs import new_run_dir


def config_overrides(args: argparse.Namespace) -> dict:
    """The config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in flat_fields() if getattr(args, f.name, None) is not None}


def chosen_preset(args: argparse.Namespace) -> str:
    """The preset a command starts from: named, or chosen from --data."""
    from .presets import preset_for_data

    return args.preset or preset_for_data(args.data)


def preset_words(args: argparse.Namespace) -> str:
    """How the first line of a run names its preset ("preset rgb64, chosen for a folder of images")."""
    name = chosen_preset(args)
    return f"preset {name}" + ("" if args.preset else f" (chosen for --data {args.data}; --preset names another)")


def build_config(args: argparse.Namespace):
    """preset (named, or chosen from --data) <- config file <- command-line flags."""
    from .presets import get_preset

    preset = chosen_preset(args)
    cfg = get_preset(preset)
    if args.config:
        cfg = cfg.replace(**read_config_file(args.config))
    cfg = cfg.replace(**config_overrides(args))
    if cfg.data is None:
        raise UserError(f"data: the preset {preset!r} names no data set; give --data (a folder of images, a zip, "
                        "an LMDB database or a directory of IDX files)")
    return cfg


def train_toy(args) -> int:
    """``train --data 8gaussians|2spirals|checkerboard|rings``: the 2D density benchmark (introvae.toy2d)."""
    from . import devices
    from .toy2d import ToyConfig, format_scores, train
    from .toy2d.run import RUNTIME_FIELDS, load_config

    shared = [f.name for f in dataclasses.fields(ToyConfig) if f.name not in ("density", "device")]
    given = {k: v for k, v in config_overrides(args).items() if k not in ("data", "device")}
    other = [k for k in given if k not in shared]
    if other or args.preset or args.config or args.fork:
        flag = f"--{other[0].replace('_', '-')}" if other else "--preset, --config and --fork"
        train_flags = {g.name for g in flat_fields()}
        flags = [f for f in shared if f in train_flags]  # the ToyConfig fields train has flags for
        raise UserError(f"train: {flag} does not apply to a 2D density (these do: "
                        f"{', '.join('--' + f.replace('_', '-') for f in flags)})")
    if args.resume:  # an interrupted 2D run: its own settings, where and how often it reports aside
        if args.data is not None or args.out:
            raise UserError("train: --resume continues a 2D run with its own density and directory; give no --data "
                            "or --out")
        fixed = [k for k in given if k not in RUNTIME_FIELDS]
        if fixed:
            raise UserError(f"train: --{fixed[0].replace('_', '-')} cannot change when a 2D run resumes (these can: "
                            f"{', '.join('--' + f.replace('_', '-') for f in RUNTIME_FIELDS)})")
        out = Path(args.resume)
        saved = load_config(out)
        cfg = dataclasses.replace(saved, **given, **({"device": args.device} if args.device else {}))
    else:
        cfg = ToyConfig(density=args.data, device=args.device or "auto", **given)
        out = Path(args.out) if args.out else new_run_dir("runs", args.data)
        check_writable(out)
    if (out / "scores.json").is_file():
        raise UserError(f"train: {out} already holds a finished 2D run (scores.json); choose another --out")
    what = (f"a {cfg.objective} of {cfg.density} (MLPs, z = 2) for {cfg.steps} steps ({cfg.warmup_steps()} VAE "
            f"warm-up) on {devices.resolve_device(cfg.device)} into {out}")
    covered = cfg.objective != "vae" and cfg.warmup_steps() >= cfg.steps
    if args.dry_run:  # the settings it would train with; nothing trained or written
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        print(f"would train {what}" + (", from its checkpoint" if (out / "checkpoint.pt").is_file() else ""))
        if covered:
            print(warmup_covers_run(cfg.steps, cfg.warmup_steps()))
        return 0
    print(f"training {what}")
    if covered:
        print(warmup_covers_run(cfg.steps, cfg.warmup_steps()))
    result = train(cfg, out, progress=not args.quiet)
    print(format_scores(result))
    print(f"done; density.png, scores.json and stats.jsonl in {out}")
    return 0


def _dry_run_continued(plan, say) -> int:
    """``train --resume/--fork ... --dry-run``: the config the run would continue with, and its changes; nothing is
    trained or written."""
    from .model import describe

    say(json.dumps(plan.config.to_dict(), indent=2))
    say(f"{plan.summary(str(plan.state['step']), would=True)}; {describe(plan.config.model)}")
    return 0


def cmd_train(args) -> int:
    from .toy2d import is_run
    from .toy2d.densities import DENSITIES

    if args.data in DENSITIES or (args.resume and is_run(args.resume)):
        return train_toy(args)
    from . import distributed
    from .checkpoint import latest
    from . import devices
    from .model import describe
    from .runstate import plan_fork, plan_resume
    from .trainer import Trainer, fork, resume

    world = distributed.world_from_env()  # several processes under torchrun
    say = print if world.is_main else (lambda *a, **k: None)
    if args.resume and args.fork:
        raise UserError("train: --resume continues a run, --fork starts a new one from a checkpoint: give one")
    if (args.resume or args.fork) and (args.data is not None or args.preset is not None or args.config is not None):
        raise UserError("train: --resume continues a run with its own data and model; give no --data, --preset or "
                        "--config (runtime flags and --steps/--epochs may change)" if args.resume else
                        "train: --fork continues a checkpoint with its own data and model; give no --data, --preset "
                        "or --config (the game's weights, the margin and the learning rate may change)")
    if args.resume:
        if args.dry_run:
            return _dry_run_continued(plan_resume(args.resume, config_overrides(args)), say)
        trainer = resume(args.resume, config_overrides(args), show_progress=not args.quiet)
        if trainer.step >= trainer.run.total_steps:  # exits 0: a script that resumes until done may call it again
            say(f"{args.resume} has trained all its {trainer.run.total_steps} steps already; give more --epochs or "
                "--steps to train on")
    elif args.fork:
        if not args.out:
            raise UserError("train: --fork needs --out, the new run's directory")
        run_dir = Path(args.out)
        check_writable(run_dir)
        if latest(run_dir) is not None:
            raise UserError(f"train: {run_dir} already holds a run; choose another --out")
        if args.dry_run:
            return _dry_run_continued(plan_fork(args.fork, run_dir, config_overrides(args)), say)
        trainer = fork(args.fork, run_dir, config_overrides(args), show_progress=not args.quiet)
    else:
        if args.data is None and args.preset is None and args.config is None:
            raise UserError("train: give --data (faces, fashion-mnist or a path), a --preset or a --config")
        cfg = build_config(args)
        if cfg.steps is None and cfg.epochs is None:
            raise UserError("train: give --steps or --epochs")
        if args.dry_run:
            say(json.dumps(cfg.to_dict(), indent=2))
            say(f"{preset_words(args)}; {describe(cfg.model)}")
            if cfg.steps is not None and cfg.objective != "vae" and cfg.vae_steps >= cfg.steps:
                say(warmup_covers_run(cfg.steps, cfg.vae_steps))
            return 0
        if args.out:
            check_writable(Path(args.out))
            run_dir = Path(args.out)
        else:
            distributed.setup(world, devices.resolve_device(cfg.device))  # to agree on the run directory's number
            run_dir = distributed.broadcast_object(
                new_run_dir("runs", args.preset or Path(cfg.data).name) if world.is_main else None, world)
        if latest(run_dir) is not None:
            raise UserError(f"train: {run_dir} already holds a run; continue it with --resume {run_dir} "
                            "or choose another --out")
        try:
            trainer = Trainer(cfg, run_dir, show_progress=not args.quiet)
        except KeyboardInterrupt:
            raise UserError("interrupted while reading the data; no run was started and nothing was written",
                            status=130) from None
        procs = f" on {world.size} processes (global batch {trainer.run.global_batch})" if world.enabled else ""
        say(f"training {describe(cfg.model)}, {preset_words(args)}, on {trainer.data.name} "
            f"({len(trainer.data.train)} train / {len(trainer.data.test)} held-out images) for "
            f"{trainer.run.total_steps} steps ({trainer.run.warmup_steps} VAE warm-up) on {trainer.device} in "
            f"{trainer.run.precision_words}{procs} into {run_dir}")
        from .loggers import available

        if cfg.logger == "tensorboard" or (cfg.logger == "auto" and available()):
            say(f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}"
                + (" (--logger auto: the package is installed; --logger none turns it off)" if cfg.logger == "auto"
                   else ""))
        if cfg.logger == "wandb":
            say(f"Weights & Biases: project {os.environ.get('WANDB_PROJECT') or 'introvae'}, run {run_dir.name} "
                f"(files in {run_dir / 'wandb'}; WANDB_MODE=offline keeps them on this machine)")
        if cfg.objective != "vae" and trainer.run.warmup_steps >= trainer.run.total_steps:
            say(warmup_covers_run(trainer.run.total_steps, trainer.run.warmup_steps))
    finished = False
    try:
        trainer.train()  # Ctrl-C and SIGTERM stop it normally, agreed by all processes
        finished = True
    finally:
        trainer.close(clean=finished)
    if trainer.step < trainer.run.total_steps:  # Ctrl-C or SIGTERM: resumable, but not finished
        say(f"stopped at step {trainer.step} of {trainer.run.total_steps}; pictures and kl.png of step "
            f"{trainer.step} in {trainer.run_dir}")
        return STOPPED_EARLY
    say(f"done: step {trainer.step}; pictures and kl.png in {trainer.run_dir}")
    return 0


def warmup_covers_run(total: int, warmup: int) -> str:
    return (f"introvae: warning: the VAE warm-up ({warmup} steps) covers the whole run ({total} steps): this trains "
            f"a plain VAE and never plays the introspective game; give more --steps or fewer --vae-steps")


STOPPED_EARLY = 3  # the exit status of a run stopped before its last step (a script can tell it from the end)


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate

    if args.steps is None and args.epochs is None:
        args.steps = 1000
    result = calibrate(build_config(args), out=args.out, show_progress=not args.quiet)
    print(result.report())
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.steps is not None and args.steps < 1:
        raise UserError(f"demo: --steps must be >= 1, got {args.steps}")
    run_demo(Path(args.out), steps=args.steps, device=args.device, show_progress=not args.quiet)
    return 0


def cmd_prepare(args) -> int:
    from .config import ModelConfig
    from .data.prepared import prepare

    ModelConfig(image_size=args.image_size, in_channels=args.in_channels)  # validates, naming the field
    if args.workers is not None and args.workers < 0:
        raise UserError("prepare: --workers must be >= 0")
    if Path(args.out).resolve() == Path(args.source).resolve():
        raise UserError("prepare: OUT must differ from SOURCE")
    check_writable(Path(args.out), "prepare")
    try:
        prepare(args.source, args.out, image_size=args.image_size, in_channels=args.in_channels,
                holdout_fraction=args.holdout_fraction, workers=args.workers, show_progress=not args.quiet)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; no store was left at {args.out} (run it again to start over)",
                        status=130) from None
    return 0


def cmd_compare(args) -> int:
    from .compare import parse_budget, plan, run_all, write_outputs

    budget = parse_budget(args.budget)
    out = Path(args.out or f"compare-{Path(args.data).name}")
    check_writable(out, "compare")
    plans = plan(args.data, budget, objectives=[o.strip() for o in args.objectives.split(",") if o.strip()],
                 seeds=args.seeds, out=out, image_size=args.image_size)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = run_all(plans, eval_samples=args.eval_samples, device=args.device, show_progress=not args.quiet,
                       budget=budget)
    except UserError:  # images found unreadable only when the first run decodes them (plan opened the data): leave
        # no empty folder behind, nor a tree of them
        if made and not any(p.is_file() for p in out.rglob("*")):
            import shutil

            shutil.rmtree(out)
        raise
    table = write_outputs(rows, plans, out, data=args.data, budget=budget)
    print(table.read_text())
    print(f"wrote {table}, {out / 'compare.json'} and {out / 'samples.png'}")
    return 0


def cmd_info(args) -> int:
    from .info import format_summary, summarize

    if len(args.run) == 1:  # one: its error is the command's
        summary = summarize(args.run[0])
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
        return 0
    summaries, failed = [], 0  # several (introvae info runs/*): one bad folder does not hide the others
    for run in args.run:
        try:
            summaries.append(summarize(run))
        except UserError as e:
            report(e)  # as main() would, had it been the only one
            failed += 1
    print(json.dumps(summaries, indent=2) if args.json else "\n\n".join(format_summary(s) for s in summaries))
    return 2 if failed else 0


def cmd_presets(args) -> int:
    from .model import describe
    from .presets import PRESETS

    for name, cfg in PRESETS.items():
        print(f"{name:18s} data={cfg.data or '(give --data)':14s} {cfg.objective:13s} {cfg.weights_words()}; "
              f"batch={cfg.batch_size}  {describe(cfg.model)}")
    return 0


from .model_commands import (cmd_evaluate, cmd_export, cmd_interpolate, cmd_models, cmd_reconstruct,  # noqa: E402
                             cmd_sample, cmd_serve)

COMMANDS = {
    "train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct, "interpolate": cmd_interpolate,
    "calibrate": cmd_calibrate, "demo": cmd_demo, "export": cmd_export, "presets": cmd_presets,
    "evaluate": cmd_evaluate, "serve": cmd_serve, "models": cmd_models, "prepare": cmd_prepare,
    "compare": cmd_compare, "info": cmd_info,
}
