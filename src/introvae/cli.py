"""The ``introvae`` command line: a thin layer that builds a Config and hands it on.

A user error (missing path, bad value, unusable checkpoint) prints one line naming the
problem and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from .config import PRESETS, Config, ConfigError, get_preset, read_config_file

EXIT_USAGE = 2

HELP_HPARAMS = {
    "image_size": "image side in pixels, a power of two from 16 to 1024 (images are centre-cropped and resized)",
    "latent_dim": "M, the size of the latent code z (paper: 256 at 128 px, 512 at 256/1024 px)",
    "margin": "m, the hinge margin of Eq. 11: the encoder pushes the KL of generated images up to m; pick it a "
              "little above the KL a plain VAE reaches on your data (see `introvae calibrate`)",
    "alpha": "weight of the introspective (adversarial) terms in Eq. 11-12; 0 gives a plain VAE (paper: 0.25)",
    "beta": "weight of the reconstruction error L_AE in Eq. 11-12; larger improves reconstructions, "
            "may reduce diversity and needs a larger margin",
    "batch_size": "images per step (paper: 8; 64/32/12/8 at 128/256/512/1024 px in its speed table)",
    "steps": "total training steps; one step is one iteration of Algorithm 1 (an encoder and a generator update)",
    "epochs": "total passes over the training split (instead of --steps)",
    "vae_steps": "VAE warm-up: train with alpha = 0 for the first N steps, as the paper advises",
    "vae_epochs": "VAE warm-up in epochs (instead of --vae-steps)",
    "lr": "Adam learning rate for both networks (paper: 2e-4, fixed)",
    "seed": "random seed: initialisation, batch order, z draws (same seed -> same run on CPU)",
    "channels": "channels per resolution from image_size down to 4x4, e.g. 32,64,128,128",
    "in_channels": "1 for grayscale, 3 for RGB",
    "objective": "introvae (Algorithm 1) or vae (the same networks as a plain VAE)",
    "log_every": "steps between lines of stats.jsonl",
    "image_every": "steps between image grids and KL plots",
    "checkpoint_every": "steps between checkpoints",
    "precision": "fp32, bf16 (autocast; CPU and GPU) or fp16 (autocast and a gradient scaler); "
                 "the KL, hinge and reconstruction sums stay fp32",
    "device": "auto (the GPU if there is one), cpu, cuda or cuda:N",
    "eval_every": "steps between FID measurements during training, into stats.jsonl and kl.png (0: none)",
    "eval_samples": "generated and real images per FID measurement during training",
    "ema": "keep an exponential moving average of the generator with this decay (e.g. 0.999) and sample "
           "from it; 0 (default) turns it off",
    "loader_workers": "processes that prepare batches (decoding for streamed data: LMDB, large folders); "
                      "0 prepares them in the training process",
}


class CliError(Exception):
    """A user error to report in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise CliError(f"{self.prog}: {message} (see --help)")


def _data_preset(data: str) -> str:
    if data in PRESETS:
        return data
    if data in ("fashion_mnist", "fmnist"):
        return "fashion-mnist"
    return "rgb64"


def build_config(args: argparse.Namespace) -> Config:
    """preset (named, or chosen from --data) <- config file <- command-line flags."""
    preset_name = args.preset or _data_preset(args.data or "faces")
    cfg = get_preset(preset_name)
    if args.config:
        cfg = cfg.replace(**read_config_file(args.config))
    overrides = {k: getattr(args, k) for k in (
        "data", "image_size", "in_channels", "latent_dim", "channels", "margin", "alpha", "beta", "lr",
        "batch_size", "steps", "epochs", "vae_steps", "vae_epochs", "seed", "objective", "log_every",
        "image_every", "checkpoint_every", "eval_every", "eval_samples", "precision", "device",
        "channels_last", "sync_bn", "compile", "checkpoint_activations", "ema", "loader_workers")
        if getattr(args, k, None) is not None}
    # --steps and --epochs each replace whichever of the two the preset or file set.
    if "steps" in overrides:
        overrides.setdefault("epochs", None)
    elif "epochs" in overrides:
        overrides["steps"] = None
    return cfg.replace(**overrides)


def _add_hparams(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="faces (built in), fashion-mnist, or a path: folder of images (recursive), "
                                  "zip of images, or a directory of IDX files")
    p.add_argument("--preset", help=f"named configuration: {', '.join(sorted(PRESETS))} "
                                    "(default: chosen from --data)")
    p.add_argument("--config", help="JSON or YAML file of config fields (applied over the preset)")
    for name, typ in (("image_size", int), ("in_channels", int), ("latent_dim", int), ("channels", str),
                      ("margin", float), ("alpha", float), ("beta", float), ("lr", float), ("batch_size", int),
                      ("steps", int), ("epochs", float), ("vae_steps", int), ("vae_epochs", float),
                      ("seed", int), ("objective", str), ("log_every", int), ("image_every", int),
                      ("checkpoint_every", int), ("eval_every", int), ("eval_samples", int),
                      ("precision", str), ("device", str), ("ema", float), ("loader_workers", int)):
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, dest=name, type=_typed(flag, typ), help=HELP_HPARAMS.get(name))
    p.add_argument("--channels-last", dest="channels_last", action="store_const", const=True, default=None,
                   help="NHWC memory layout for the convolutions (faster with bf16 on CPUs with AMX, and on GPUs)")
    p.add_argument("--sync-bn", dest="sync_bn", action="store_const", const=True, default=None,
                   help="with several processes (torchrun): BatchNorm statistics over the global batch")
    p.add_argument("--compile", dest="compile", action="store_const", const=True, default=None,
                   help="torch.compile the networks (slow first steps, faster after, mostly on GPUs)")
    p.add_argument("--checkpoint-activations", dest="checkpoint_activations", action="store_const", const=True,
                   default=None, help="recompute the residual stages in the backward pass: less memory "
                                      "(1024 px), about a third more compute")


def _add_no_ema(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-ema", action="store_true",
                   help="use the trained generator even if the run kept an EMA of it (--ema)")


def _typed(flag: str, typ):
    def convert(text: str):
        try:
            v = typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {typ.__name__}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        return v

    convert.__name__ = typ.__name__
    return convert


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="introvae", description="IntroVAE: introspective variational autoencoders "
                                             "(Huang et al., NeurIPS 2018).")
    p.add_argument("--version", action="version", version=f"introvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (with optional VAE warm-up) into a run directory",
                       description="Train IntroVAE (Algorithm 1). Writes config.json, stats.jsonl, image grids, "
                                   "kl.png and checkpoints/ into the run directory. Several GPUs (or CPU "
                                   "processes): torchrun --nproc_per_node N -m introvae train ...; --batch-size "
                                   "is then per process.")
    _add_hparams(t)
    t.add_argument("--out", help="run directory (default: runs/NNNNN-<preset>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--dry-run", action="store_true", help="print the effective config and the model size, then exit")

    s = sub.add_parser("sample", help="generate images from z ~ N(0, I)")
    s.add_argument("model", help="run directory, checkpoint file or exported model directory")
    s.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--seed", type=int, default=0, help="same seed -> same images")
    s.add_argument("-o", "--out", required=True, help="FILE.png for a grid, or a directory for one PNG per image")
    _add_no_ema(s)

    r = sub.add_parser("reconstruct", help="encode and decode images (posterior mean)")
    r.add_argument("model")
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("-o", "--out", required=True, help="output directory")

    i = sub.add_parser("interpolate", help="decode the line between two images' latent codes (Fig. 6)")
    i.add_argument("model")
    i.add_argument("a")
    i.add_argument("b")
    i.add_argument("--steps", type=int, default=8, help="images in the strip, ends included (default 8)")
    i.add_argument("-o", "--out", required=True, help="output PNG")

    c = sub.add_parser("calibrate", help="train a plain VAE briefly and suggest a margin m (Appendix D)",
                       description="Trains the preset's networks as a plain VAE (alpha = 0) and prints the KL it "
                                   "reaches on the training data with a suggested margin a little above it.")
    _add_hparams(c)
    c.add_argument("--out", help="run directory of the calibration run (default: a temporary one)")
    c.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="train a few minutes on the built-in faces and write pictures")
    d.add_argument("--out", default="demo", help="output directory (default ./demo)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's fixed budget)")
    d.add_argument("--quiet", action="store_true")

    v = sub.add_parser("evaluate", help="FID, MS-SSIM, reconstruction quality and nearest neighbours",
                       description="Scores a model (run directory, checkpoint or exported model) or a folder of "
                                   "images against real data, offline. Writes metrics.json (and "
                                   "nearest_neighbours.png for a model) and prints a table.")
    v.add_argument("source", help="run directory, checkpoint, exported model, or a folder of generated images")
    v.add_argument("--data", help="real data to compare with (default: the model's training data; "
                                  "required for a folder of images)")
    v.add_argument("--num-samples", type=int, default=10_000, help="generated images for FID (default 10000; "
                                                                    "the paper uses 50000)")
    v.add_argument("--pairs", type=int, default=10_000, help="random pairs for MS-SSIM (default 10000, as the paper)")
    v.add_argument("--ref-split", choices=("train", "test"), default="train",
                   help="the real images FID compares with (default train)")
    v.add_argument("--ref-images", type=int, default=10_000, help="at most this many real images (a fixed subset)")
    v.add_argument("--neighbours", type=int, default=8, help="samples shown with their nearest training images")
    v.add_argument("--image-size", type=int, help="for a folder of images: the size to score at")
    v.add_argument("--in-channels", type=int, choices=(1, 3), default=3, help="for a folder of images")
    v.add_argument("--batch-size", type=int, default=100)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("-o", "--out", help="where metrics.json goes (default: the run or image folder)")
    v.add_argument("--quiet", action="store_true")
    _add_no_ema(v)

    e = sub.add_parser("export", help="write config.json + model.safetensors from a run")
    e.add_argument("model")
    e.add_argument("-o", "--out", required=True, help="output directory")
    _add_no_ema(e)

    sub.add_parser("presets", help="list the named presets with their hyper-parameters and sizes")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return COMMANDS[args.command](args) or 0
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"introvae: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        # DataError, CheckpointError, RunError and weight mismatches are ValueErrors with a message for the user.
        from .checkpoint import CheckpointError
        from .data import DataError
        from .trainer import RunError

        if isinstance(e, (DataError, CheckpointError, RunError)) or "do not fit this architecture" in str(e):
            print(f"introvae: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except RuntimeError as e:
        from .metrics.fid import MetricError

        if isinstance(e, MetricError):
            print(f"introvae: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --- commands -----------------------------------------------------------------
def cmd_train(args) -> int:
    from . import distributed
    from .trainer import Trainer, new_run_dir, resume

    world = distributed.world_from_env()  # several processes under torchrun
    say = print if world.is_main else (lambda *a, **k: None)
    if args.resume:
        if any(getattr(args, k, None) is not None for k in ("data", "preset", "config", "steps", "epochs")):
            raise CliError("train: --resume continues a run with its own config.json; give no other settings")
        trainer = resume(args.resume, show_progress=not args.quiet)
    else:
        if args.data is None and args.preset is None and args.config is None:
            raise CliError("train: give --data (faces, fashion-mnist or a path), a --preset or a --config")
        cfg = build_config(args)
        if cfg.steps is None and cfg.epochs is None:
            raise CliError("train: give --steps or --epochs")
        if args.dry_run:
            from .model import describe

            say(json.dumps(cfg.to_dict(), indent=2))
            say(describe(cfg))
            return 0
        if args.out:
            run_dir = Path(args.out)
        else:
            from .precision import resolve_device

            distributed.setup(world, resolve_device(cfg.device))  # to agree on the run directory's number
            run_dir = distributed.broadcast_object(
                new_run_dir("runs", args.preset or _data_preset(cfg.data)) if world.is_main else None, world)
        from .checkpoint import latest

        if latest(run_dir) is not None:
            raise CliError(f"train: {run_dir} already holds a run; continue it with --resume {run_dir} "
                           "or choose another --out")
        trainer = Trainer(cfg, run_dir, show_progress=not args.quiet)
        from .model import describe

        procs = f" on {world.size} processes (global batch {trainer.global_batch})" if world.enabled else ""
        say(f"training {describe(cfg)} on {trainer.data.name} ({len(trainer.data.train)} train / "
            f"{len(trainer.data.test)} held-out images) for {trainer.total_steps} steps "
            f"({trainer.warmup_steps} VAE warm-up){procs} into {run_dir}")
    try:
        trainer.train()
    finally:
        distributed.teardown()
    say(f"done: step {trainer.step}; pictures and kl.png in {trainer.run_dir}")
    return 0


def cmd_sample(args) -> int:
    from .data import save_image
    from .grids import save_grid
    from .trainer import load_model

    if args.n < 1:
        raise CliError("sample: -n must be >= 1")
    model = load_model(args.model, ema=not args.no_ema)
    images = model.sample(args.n, seed=args.seed)
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_grid(images, out, nrow=max(1, round(math.sqrt(args.n))))
        print(f"wrote a grid of {args.n} samples to {out}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(images):
            save_image(img, out / f"sample-{k:05d}.png")
        print(f"wrote {args.n} samples to {out}/")
    return 0


def _model_and_images(model_arg: str, paths: list[str]):
    """The model, and the image files read and prepared at its size and channel count, (N, C, H, W)."""
    import torch

    from .data import read_image
    from .trainer import load_model

    model = load_model(model_arg)
    c = model.config
    return model, torch.stack([read_image(p, image_size=c.image_size, in_channels=c.in_channels) for p in paths])


def cmd_reconstruct(args) -> int:
    from .data import save_image

    model, x = _model_and_images(args.model, args.images)
    rec = model.reconstruct(x)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p, r in zip(args.images, rec):
        save_image(r, out / f"{Path(p).stem}-reconstruction.png")
    print(f"wrote {len(rec)} reconstructions to {out}/")
    return 0


def cmd_interpolate(args) -> int:
    from .grids import save_grid

    if args.steps < 2:
        raise CliError("interpolate: --steps must be >= 2")
    model, ab = _model_and_images(args.model, [args.a, args.b])
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
    cfg = build_config(args)
    result = calibrate(cfg, out=args.out, show_progress=not args.quiet)
    print(result.report())
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps, show_progress=not args.quiet)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import EvalSettings, evaluate_folder, evaluate_model, format_table

    for name in ("num_samples", "pairs", "ref_images"):
        if getattr(args, name) < 2:
            raise CliError(f"evaluate: --{name.replace('_', '-')} must be >= 2")
    if args.neighbours < 0 or args.batch_size < 1:
        raise CliError("evaluate: --neighbours must be >= 0 and --batch-size >= 1")
    settings = EvalSettings(num_samples=args.num_samples, pairs=args.pairs, ref_split=args.ref_split,
                            ref_images=args.ref_images, neighbours=args.neighbours, batch_size=args.batch_size,
                            seed=args.seed, ema=not args.no_ema)
    src = Path(args.source)
    if not src.exists():
        raise CliError(f"evaluate: not found: {src}")
    is_model = src.is_file() or (src / "model.safetensors").is_file() or (src / "checkpoints").is_dir()
    if is_model:
        result = evaluate_model(src, settings, data=args.data, out=args.out, show_progress=not args.quiet)
    else:
        if not args.data or not args.image_size:
            raise CliError("evaluate: for a folder of images give --data (the real images) and --image-size")
        Config(image_size=args.image_size)  # validates the size, naming the field
        result = evaluate_folder(src, data=args.data, image_size=args.image_size, in_channels=args.in_channels,
                                 settings=settings, out=args.out, show_progress=not args.quiet)
    print(format_table(result))
    print(f"wrote {result['metrics_file']}")
    return 0


def cmd_export(args) -> int:
    from .trainer import load_model

    model = load_model(args.model, ema=not args.no_ema)
    out = model.save_pretrained(args.out)
    print(f"exported to {out}/ (config.json + model.safetensors)")
    return 0


def cmd_presets(args) -> int:
    from .model import describe

    for name, cfg in PRESETS.items():
        print(f"{name:14s} data={cfg.data:14s} m={cfg.margin:g} alpha={cfg.alpha:g} beta={cfg.beta:g} "
              f"batch={cfg.batch_size}  {describe(cfg)}")
    return 0


COMMANDS = {
    "train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct, "interpolate": cmd_interpolate,
    "calibrate": cmd_calibrate, "demo": cmd_demo, "export": cmd_export, "presets": cmd_presets,
    "evaluate": cmd_evaluate,
}
