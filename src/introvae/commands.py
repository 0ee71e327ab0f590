"""What each ``introvae`` command does with its parsed arguments (the parser is in ``cli``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .config import flat_fields, read_config_file
from .errors import UserError
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


def check_writable(run_dir: Path, command: str = "train") -> None:
    """Refuse, before any work, an output directory that cannot be made or written (one line)."""
    import os

    p = Path(run_dir).absolute()
    if p.exists() and not p.is_dir():
        raise UserError(f"{command}: --out {run_dir}: {p} is a file, not a directory")
    ancestor = p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{command}: --out {run_dir}: {ancestor} is a file, so no directory can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{command}: --out {run_dir}: no permission to write in {ancestor}")


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


TOY_FIELDS = ("objective", "steps", "vae_steps", "batch_size", "lr", "seed", "beta_kl", "beta_rec", "beta_neg",
              "gamma_r", "margin", "alpha", "log_every", "precision")


def train_toy(args) -> int:
    """``train --data 8gaussians|2spirals|checkerboard|rings``: the 2D density benchmark (introvae.toy2d)."""
    from . import devices
    from .toy2d import ToyConfig, train

    given = {k: v for k, v in config_overrides(args).items() if k not in ("data", "device")}
    other = [k for k in given if k not in TOY_FIELDS]
    if other or args.preset or args.config or args.resume:
        flag = f"--{other[0].replace('_', '-')}" if other else "--preset, --config and --resume"
        raise UserError(f"train: {flag} does not apply to a 2D density (these do: "
                        f"{', '.join('--' + f.replace('_', '-') for f in TOY_FIELDS)})")
    cfg = ToyConfig(density=args.data, device=str(devices.resolve_device(args.device or "auto")), **given)
    out = Path(args.out) if args.out else new_run_dir("runs", args.data)
    print(f"training a {cfg.objective} of {cfg.density} (MLPs, z = 2) for {cfg.steps} steps "
          f"({cfg.warmup_steps()} VAE warm-up) on {cfg.device} into {out}")
    result = train(cfg, out, progress=not args.quiet)
    print(format_toy_scores(result))
    print(f"done; density.png, scores.json and stats.jsonl in {out}")
    return 0


def format_toy_scores(r: dict) -> str:
    return (f"KL {r['kl']:.3f}  JSD {r['jsd']:.3f}  (the Soft-IntroVAE authors' way: densities / 100 rows)\n"
            f"KL {r['kl_textbook']:.3f}  JSD {r['jsd_textbook']:.4f}  (textbook, on probability masses, nats)")


def cmd_train(args) -> int:
    from .toy2d.densities import DENSITIES

    if args.data in DENSITIES:
        return train_toy(args)
    from . import distributed
    from .checkpoint import latest
    from . import devices
    from .model import describe
    from .trainer import Trainer, resume

    world = distributed.world_from_env()  # several processes under torchrun
    say = print if world.is_main else (lambda *a, **k: None)
    if args.resume:
        if args.data is not None or args.preset is not None or args.config is not None:
            raise UserError("train: --resume continues a run with its own data and model; give no --data, "
                            "--preset or --config (runtime flags and --steps/--epochs may change)")
        trainer = resume(args.resume, config_overrides(args), show_progress=not args.quiet)
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
            f"{trainer.run.arithmetic}{procs} into {run_dir}")
        from .loggers import available

        if cfg.logger == "tensorboard" or (cfg.logger == "auto" and available()):
            say(f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}"
                + (" (--logger auto: the package is installed; --logger none turns it off)" if cfg.logger == "auto"
                   else ""))
        if cfg.objective != "vae" and trainer.run.warmup_steps >= trainer.run.total_steps:
            say(warmup_covers_run(trainer.run.total_steps, trainer.run.warmup_steps))
    try:
        trainer.train()
    finally:
        distributed.teardown()
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


def cmd_sample(args) -> int:
    import torch

    from .data import IMAGE_EXTENSIONS, save_image, to_float, to_uint8
    from .grids import save_grid
    from .runs import load_model

    if args.n < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UserError("sample: -n and --batch-size must be >= 1")
    model = load_model(args.model, ema=not args.no_ema, device=args.device)
    args.batch_size = args.batch_size or model.chunk
    z, out = model.latents(args.n, seed=args.seed), Path(args.out)
    if out.suffix.lower() in IMAGE_EXTENSIONS:  # a file name: one grid (grid.jpg is a JPEG, not a folder)
        images = torch.cat([to_uint8(model.sample(z=c)).cpu() for c in z.split(args.batch_size)])
        out.parent.mkdir(parents=True, exist_ok=True)
        save_grid(to_float(images), out, nrow=max(1, round(math.sqrt(args.n))))
        print(f"wrote a grid of {args.n} samples to {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    for chunk in z.split(args.batch_size):  # written as generated: 50,000 samples need not fit in memory
        for img in model.sample(z=chunk).cpu():
            save_image(img, out / f"sample-{k:05d}.png")
            k += 1
    print(f"wrote {args.n} samples to {out}/")
    return 0


def image_files(paths: list[str], command: str) -> list[Path]:
    """Image files named, or found (recursively, sorted) in the folders named."""
    from .data import IMAGE_EXTENSIONS

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UserError(f"{command}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder {p}")
            out += found
        elif not p.exists():
            raise UserError(f"{command}: image not found: {p}")
        else:
            out.append(p)
    return out


def _model_and_images(args, paths: list[Path], *, skip_unreadable: bool = False):
    """The model on its device, the image files read at its size and channel count (N, C, H, W), and the
    paths read. ``skip_unreadable``: leave out (with a warning) images that cannot be decoded, as train does."""
    import warnings

    import torch

    from .data import DataError, read_image
    from .errors import DataWarning
    from .runs import load_model

    model = load_model(args.model, device=args.device)
    c = model.config
    read, kept, problems = [], [], []
    for p in paths:
        try:
            read.append(read_image(p, image_size=c.image_size, in_channels=c.in_channels))
            kept.append(p)
        except DataError as e:
            if not skip_unreadable or len(paths) == 1:
                raise
            problems.append(str(e))
    if not read:
        raise UserError(f"none of the {len(paths)} images could be read (first: {problems[0]})")
    if problems:
        warnings.warn(f"skipped {len(problems)} unreadable image(s) of {len(paths)} (first: {problems[0]})",
                      DataWarning, stacklevel=2)
    return model, torch.stack(read).to(model.device), kept


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names that never collide: a file's stem, with as much of its folder as tells same names apart."""
    import os

    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    parents = [p.resolve().parent for p in paths]
    common = Path(os.path.commonpath(parents))
    names = ["_".join((*parent.relative_to(common).parts, p.stem)) for p, parent in zip(paths, parents)]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # still the same (a.png beside a.jpg): number them
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n}-{seen[n]}"
    return names


def cmd_reconstruct(args) -> int:
    import torch

    from .data import save_image
    from .grids import make_grid

    model, x, paths = _model_and_images(args, image_files(args.images, "reconstruct"), skip_unreadable=True)
    rec = model.reconstruct(x).cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, a, r in zip(unique_stems(paths), x.cpu(), rec):
        save_image(r, out / f"{name}-reconstruction.png")
        # the input as the model saw it (cropped, resized) beside its reconstruction
        save_image(make_grid(torch.stack([a, r]), nrow=2), out / f"{name}-pair.png")
    print(f"wrote {len(rec)} reconstructions to {out}/ (NAME-reconstruction.png, and NAME-pair.png: "
          f"the input as the model sees it | its reconstruction)")
    return 0


def cmd_interpolate(args) -> int:
    from .grids import save_grid

    if args.steps < 2:
        raise UserError("interpolate: --steps must be >= 2")
    for p in (args.a, args.b):
        if Path(p).is_dir():
            raise UserError(f"interpolate: {p} is a folder; give two image files")
    model, ab, _ = _model_and_images(args, image_files([args.a, args.b], "interpolate"))
    strip = model.interpolate(ab[0], ab[1], args.steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(strip, out, nrow=args.steps)
    print(f"wrote an interpolation strip of {args.steps} images to {out}")
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate

    if args.steps is None and args.epochs is None:
        args.steps = 1000
    result = calibrate(build_config(args), out=args.out, show_progress=not args.quiet)
    print(result.report())
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps, device=args.device, show_progress=not args.quiet)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_folder, evaluate_model, format_table
    from .metrics import EvalSettings

    for name in ("num_samples", "pairs", "ref_images", "bn_samples"):
        if getattr(args, name) < 2:
            raise UserError(f"evaluate: --{name.replace('_', '-')} must be >= 2")
    if args.neighbours < 0 or args.batch_size < 1:
        raise UserError("evaluate: --neighbours must be >= 0 and --batch-size >= 1")
    settings = EvalSettings(num_samples=args.num_samples, pairs=args.pairs, ref_split=args.ref_split,
                            ref_images=args.ref_images, neighbours=args.neighbours, batch_size=args.batch_size,
                            seed=args.seed, ema=not args.no_ema, bn_protocol=args.bn_protocol,
                            encoder_stats=args.encoder_stats, bn_samples=args.bn_samples,
                            feature_precision=args.feature_precision)
    from . import hub

    src = Path(args.source)
    if not src.exists():
        try:
            src = hub.resolve(args.source)  # a shipped model's name, or hf://OWNER/NAME
        except UserError:
            raise UserError(f"evaluate: not found: {src}") from None
    from . import toy2d

    if toy2d.is_run(src):  # a 2D density run: histogram KL and JSD of samples against fresh data
        model, cfg = toy2d.load_run(src)
        result = toy2d.evaluate(model, cfg, seed=args.seed)
        print(format_toy_scores(result))
        return 0
    if src.is_file() or (src / "model.safetensors").is_file() or (src / "checkpoints").is_dir():
        given = [f for f, v in (("--in-channels", args.in_channels), ("--image-size", args.image_size)) if v]
        if given:
            raise UserError(f"evaluate: {' and '.join(given)} apply to a folder of images; a model is scored at "
                            f"its own size and channels")
        result = evaluate_model(src, settings, data=args.data, out=args.out, device=args.device,
                                show_progress=not args.quiet)
    else:
        if not args.data or not args.image_size:
            raise UserError("evaluate: for a folder of images give --data (the real images) and --image-size")
        from .config import ModelConfig

        channels = args.in_channels or 3
        ModelConfig(image_size=args.image_size, in_channels=channels)  # validates, naming the field
        result = evaluate_folder(src, data=args.data, image_size=args.image_size, in_channels=channels,
                                 settings=settings, out=args.out, device=args.device, show_progress=not args.quiet)
    print(format_table(result))
    print(f"appended to {result['metrics_file']}")
    return 0


def cmd_export(args) -> int:
    from .export import export

    if Path(args.out).suffix.lower() in (".safetensors", ".pt", ".pth", ".bin", ".json", ".ckpt"):
        raise UserError(f"export: -o names a directory (it gets config.json and model.safetensors), not a file: "
                        f"{args.out}; try -o {Path(args.out).with_suffix('')}")
    model, out = export(args.model, args.out, ema=not args.no_ema, fp16=args.fp16, name=args.name,
                        train_command=args.train_command)
    print(f"exported the {model.generator_source} generator to {out}/ (config.json, model.safetensors"
          f"{' in fp16' if args.fp16 else ''}, README.md model card, samples.png)")
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
    out.mkdir(parents=True, exist_ok=True)
    rows = run_all(plans, eval_samples=args.eval_samples, device=args.device, show_progress=not args.quiet)
    table = write_outputs(rows, plans, out, data=args.data, budget_images=budget)
    print(table.read_text())
    print(f"wrote {table}, {out / 'compare.json'} and {out / 'samples.png'}")
    return 0


def cmd_models(args) -> int:
    from . import hub

    models = hub.shipped()
    if not models:
        print(f"no shipped models in {hub.models_dir()}")
        return 0
    for name, d in models.items():
        meta = hub.card_metadata(d)
        results = (meta.get("model-index") or [{}])[0].get("results") or [{}]
        metrics = ", ".join(f"{m['type']} {m['value']}" for m in results[0].get("metrics", []))
        print(f"{name:22s} data={(meta.get('datasets') or ['?'])[0]:14s} {metrics or 'not evaluated'}")
    print(f"(in {hub.models_dir()}; use a name wherever a MODEL goes: introvae sample NAME -n 16 -o s.png)")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    serve(args.model, host=args.host, port=args.port, device=args.device, data=args.data)
    return 0


def cmd_presets(args) -> int:
    from .model import describe
    from .presets import PRESETS

    for name, cfg in PRESETS.items():
        margin = cfg.margin if cfg.margin == "auto" else f"{cfg.margin:g}"
        weights = (f"beta_rec={cfg.beta_rec:g} beta_kl={cfg.beta_kl:g} beta_neg={cfg.beta_neg:g}"
                   if cfg.objective == "soft-introvae" else f"m={margin} alpha={cfg.alpha_words()} beta={cfg.beta:g}")
        print(f"{name:18s} data={cfg.data or '(give --data)':14s} {cfg.objective:13s} {weights} "
              f"batch={cfg.batch_size}  {describe(cfg.model)}")
    return 0


COMMANDS = {
    "train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct, "interpolate": cmd_interpolate,
    "calibrate": cmd_calibrate, "demo": cmd_demo, "export": cmd_export, "presets": cmd_presets,
    "evaluate": cmd_evaluate, "serve": cmd_serve, "models": cmd_models, "prepare": cmd_prepare,
    "compare": cmd_compare,
}
