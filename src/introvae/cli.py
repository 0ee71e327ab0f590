"""The ``introvae`` command line: a thin layer that builds a config and hands it on.

The flags of ``train`` and ``calibrate`` are generated from the fields of :class:`ModelConfig` and
:class:`TrainConfig` (their help text and defaults come from the fields' metadata: one list, never three).
A :class:`UserError` prints one line naming the problem and exits with status 2; no traceback. So does a path the
file system refuses (a missing parent, no permission, a full disk): the user's to fix, and the line names the path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from .devices import DEVICE_HELP
from .version import __version__
from .config import flat_fields
from .config_checks import WORDS_FOR_NUMBERS
from .data.imageset import HOLDOUT_FRACTION
from .errors import UserError, report
from .outputs import path_error_line

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        command = self.prog.removeprefix("introvae").strip()  # main() prints the one "introvae: error:" prefix
        raise UserError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _typed(typ, words: tuple[str, ...] = ()):
    def convert(text: str):
        if text in words:
            return text
        try:
            v = typ(text)
        except ValueError:
            expected = " or ".join((*words, typ.__name__))
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        return v

    convert.__name__ = typ.__name__
    return convert


def add_config_flags(p: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """One flag per config field (``--image-size``, ..., ``--no-channels-last``), typed, with its help."""
    add_field_flags(p, [f for f in flat_fields() if f.name not in exclude], _default_words)


def add_field_flags(p: argparse.ArgumentParser, settings, default_words=None) -> None:
    """One flag per field declared with ``config.param`` (a dataclass, or a list of its fields): typed, with its
    help and default, ``--name``/``--no-name`` for a bool; each flag's value is None unless given."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(settings) if dataclasses.is_dataclass(settings) else settings:
        group = f.metadata["group"]
        g = groups.setdefault(group, p.add_argument_group(f"{group} settings"))
        base = str(f.type).split("|")[0].strip()
        help_ = f"{f.metadata['help']} ({default_words(f) if default_words else f'default: {f.default}'})"
        flag = "--" + f.name.replace("_", "-")
        if base == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        typ = {"int": int, "float": float}.get(base, str)
        metavar = None if f.metadata["choices"] else {"int": "N", "float": "X", "str": "TEXT"}.get(base, "A,B,...")
        words = WORDS_FOR_NUMBERS.get(f.name, ())
        if words:
            metavar = "|".join((*words, metavar))
        g.add_argument(flag, dest=f.name, type=_typed(typ, words), default=None, choices=f.metadata["choices"],
                       metavar=metavar, help=help_)


def _default_words(f) -> str:
    """A field's default as it will apply: one value where every preset agrees, else where it comes from."""
    from .config import field_value
    from .presets import PRESETS

    values = {json.dumps(field_value(cfg, f.name), default=str) for cfg in PRESETS.values()}
    if len(values) == 1:
        v = field_value(next(iter(PRESETS.values())), f.name)
        return f"default: {','.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
    return "default: set by the preset; `introvae presets` and --dry-run show it"


def _model_args(p: argparse.ArgumentParser, *, ema: bool = True) -> None:
    p.add_argument("model", help="a run directory (its newest checkpoint), a checkpoint file, or an exported model")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if ema:
        p.add_argument("--no-ema", action="store_true",
                       help="use the trained generator even if the run kept an EMA of it (--ema)")


def make_parser() -> argparse.ArgumentParser:
    from .metrics.context import EvalSettings
    from .presets import PRESETS

    p = _Parser(prog="introvae", description="IntroVAE: introspective variational autoencoders "
                                             "(Huang et al., NeurIPS 2018).")
    p.add_argument("--version", action="version", version=f"introvae {__version__}")
    p.add_argument("--threads", dest="global_threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads, before or after the command (introvae --threads 1 sample ...)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    preset_help = f"named configuration: {', '.join(PRESETS)} (default: chosen from --data)"

    t = sub.add_parser("train", help="train a model (with optional VAE warm-up) into a run directory",
                       description="Train IntroVAE (Algorithm 1). Writes config.json, stats.jsonl, image grids, "
                                   "kl.png and checkpoints/ into the run directory. Values come from the preset, then "
                                   "--config, then the flags. Several GPUs (or CPU processes): torchrun "
                                   "--nproc_per_node N -m introvae train ...; --batch-size is then per process.")
    t.add_argument("--preset", help=preset_help)
    t.add_argument("--config", help="JSON or YAML file of config fields (applied over the preset)")
    t.add_argument("--out", help="run directory (default: runs/NNNNN-<preset>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint; runtime and "
                                                       "logging flags may change, --steps/--epochs may extend it")
    t.add_argument("--fork", metavar="CHECKPOINT", help="start a new run (--out) where a checkpoint (or a run "
                                                        "directory's newest) left off: the same weights, optimiser "
                                                        "moments, step and data order, with other --alpha, --beta, "
                                                        "--margin, --lr, --lr-half-life, --lr-decay-start or "
                                                        "--batch-size (and --steps/--epochs)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--dry-run", action="store_true", help="print the effective config and the model size, then exit")
    add_config_flags(t)

    s = sub.add_parser("sample", help="generate images from z ~ N(0, I) (a 2D density run: points)")
    _model_args(s)
    s.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--seed", type=int, default=0, help="same seed -> same images, on any device")
    s.add_argument("--batch-size", type=int, default=None,
                   help="images generated at a time (default: from the image size, 256 up to 64 px, 4 at 1024 px)")
    s.add_argument("-o", "--out", required=True,
                   help="a file (.png, .jpg, .webp, .bmp) for one grid, or a directory for one PNG per image; "
                        "for a 2D density run a .csv or .npy of the points, or a .png of their histogram")

    r = sub.add_parser("reconstruct", help="encode and decode images (posterior mean)")
    _model_args(r, ema=False)
    r.add_argument("images", nargs="+", help="image files, or folders of them (searched recursively); unreadable "
                                             "ones are skipped with a warning")
    r.add_argument("-o", "--out", required=True, help="output directory")

    i = sub.add_parser("interpolate", help="decode the line between two images' latent codes (Fig. 6)")
    _model_args(i, ema=False)
    i.add_argument("a", help="the image at one end")
    i.add_argument("b", help="the image at the other end")
    i.add_argument("--steps", type=int, default=8, help="images in the strip, ends included (default 8)")
    i.add_argument("-o", "--out", required=True, help="output PNG")

    c = sub.add_parser("calibrate", help="train a plain VAE briefly and suggest a margin m (Appendix D)",
                       description="Trains the preset's networks as a plain VAE (alpha = 0) and prints the KL it "
                                   "reaches on the training data, with a suggested margin.")
    c.add_argument("--preset", help=preset_help)
    c.add_argument("--config", help="JSON or YAML file of config fields (applied over the preset)")
    c.add_argument("--out", help="run directory of the calibration run (default: a temporary one)")
    c.add_argument("--quiet", action="store_true")
    add_config_flags(c, exclude=tuple(f.name for f in flat_fields() if not f.metadata.get("calibrate", True)))

    d = sub.add_parser("demo", help="train a few minutes on the built-in faces and write pictures")
    d.add_argument("--out", default="demo", help="output directory (default ./demo)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's fixed budget)")
    d.add_argument("--device", default="auto", help=DEVICE_HELP)
    d.add_argument("--quiet", action="store_true")

    v = sub.add_parser("evaluate", help="FID, MS-SSIM, reconstruction quality and nearest neighbours",
                       description="Scores a model (run directory, checkpoint or exported model) or a folder of "
                                   "images against real data, offline. Appends the result, with the checkpoint's "
                                   "step, to metrics.jsonl (and writes nearest_neighbours.png for a model).")
    v.add_argument("source", help="run directory, checkpoint, exported model, or a folder of generated images")
    v.add_argument("--data", help="real data to compare with (default: the run's training data; "
                                  "required for an exported model or a folder of images)")
    v.add_argument("--image-size", type=int, help="for a folder of images: the size to score at")
    v.add_argument("--in-channels", type=int, choices=(1, 3), default=None,
                   help="for a folder of images: 1 or 3 (default 3); a model knows its own")
    add_field_flags(v, EvalSettings)
    v.add_argument("--screen", action="store_true",
                   help="the quick protocol of a screen, to rank runs or checkpoints scored alike: --num-samples "
                        "2000 --ref-images 2000 --pairs 2000 --neighbours 0 (flags given override it); its FIDs "
                        "read higher than 10,000 samples' (about 10 at Fashion-MNIST's 15 to 40): never compare them "
                        "with published numbers")
    v.add_argument("--device", default="auto", help=DEVICE_HELP)
    v.add_argument("-o", "--out", help="where metrics.jsonl goes (default: the run or model directory; for a "
                                       "folder of images, ./evaluate-FOLDERNAME, never the images' own folder)")
    v.add_argument("--every-checkpoint", action="store_true",
                   help="score each checkpoint of a run directory, oldest first, and draw fid-curve.png beside "
                        "metrics.jsonl; checkpoints already scored with the same settings are skipped, so the "
                        "same command resumes")
    v.add_argument("--every-steps", type=int, default=0, metavar="N",
                   help="with --every-checkpoint: only the checkpoints at multiples of N steps (one per epoch, "
                        "say), not step 0 nor those a stop wrote in between")
    v.add_argument("--quiet", action="store_true")

    e = sub.add_parser("export", help="write a model folder (config.json, model.safetensors, a README.md card)",
                       description="Writes the hub layout: config.json (the model config), model.safetensors (both "
                                   "networks), README.md (a model card with metadata, the training settings and the "
                                   "run's last evaluation with its protocol) and samples.png.")
    e.add_argument("model", help="a run directory (its newest checkpoint) or a checkpoint file")
    e.add_argument("-o", "--out", required=True, help="output directory")
    e.add_argument("--no-ema", action="store_true", help="export the trained generator even if the run kept an EMA")
    e.add_argument("--fp16", action="store_true", help="store the weights in fp16 (half the size; loaded as fp32)")
    e.add_argument("--name", help="the model's name in its card (default: the output folder's name)")
    e.add_argument("--train-command", help="the command that trained it, for the card")
    e.add_argument("--commit", metavar="REV", help="the commit whose code trained it, for the card (default: this "
                                                   "checkout's; give it when the run used an earlier snapshot)")
    sub.add_parser("models", help="list the shipped pretrained models with their metrics")
    n = sub.add_parser("info", help="where a run stands: progress, last log, time per machine, evaluations",
                       description="Prints what a run trains, how far it is (or the command that resumes it and "
                                   "the time left at its last logged rate), its last logged KLs against the margin, "
                                   "its training time by the machine that took it, its checkpoints and its "
                                   "evaluations with their protocol; for an exported model, what its card records. "
                                   "Reads files only.")
    n.add_argument("run", nargs="+", help="a run directory (image or 2D density), one of its checkpoints, an exported "
                                          "model folder, a shipped model's name, or a folder evaluate -o or "
                                          "compare wrote; several: each in turn")
    n.add_argument("--json", action="store_true", help="one JSON object (a list of them for several), for scripts")

    cp = sub.add_parser("compare", help="IntroVAE, Soft-IntroVAE and a VAE on your data at one budget, scored alike",
                        description="Trains each objective on --data for the same budget (images seen, epochs or "
                                    "minutes), with the "
                                    "presets' measured defaults, scores each under evaluate's protocol, and writes "
                                    "compare.md (FID, precision, recall, PSNR, time), compare.json and samples.png "
                                    "into --out. Run it again after a stop: it resumes.")
    cp.add_argument("--data", required=True, help="what train's --data takes")
    cp.add_argument("--budget", required=True, help="per objective and seed: images seen (60000, 60k, 1.2m), "
                                                    "epochs over the training images (1epoch, 5epochs) or minutes "
                                                    "of training on this machine (30min, 2h)")
    cp.add_argument("--objectives", default="introvae,soft-introvae,vae", help="comma-separated (default: all three)")
    cp.add_argument("--seeds", type=_positive_int, default=1, help="seeds per objective (default 1)")
    cp.add_argument("--image-size", type=int, help="image side (default: the preset's)")
    cp.add_argument("--eval-samples", type=_positive_int, default=10_000,
                    help="samples and real images for FID (default 10000, the literature's)")
    cp.add_argument("--out", help="output folder (default compare-DATANAME)")
    cp.add_argument("--device", default="auto", help=DEVICE_HELP)
    cp.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("prepare", help="decode a data source once, over all cores, into a store --data can map",
                        description="Decodes SOURCE (a folder, zip, LMDB database, IDX directory, faces or "
                                    "fashion-mnist) at one size into OUT: train.npy and test.npy (uint8, memory-"
                                    "mapped by every later command and every torchrun process) and index.json "
                                    "(names, skipped files, a fingerprint of the source). Then --data OUT.")
    pr.add_argument("source", help="what --data would take")
    pr.add_argument("out", help="the store directory to write")
    pr.add_argument("--image-size", type=int, required=True, help="image side in pixels (as the run's)")
    pr.add_argument("--in-channels", type=int, choices=(1, 3), default=3, help="1 or 3 (default 3)")
    pr.add_argument("--holdout-fraction", type=float, default=HOLDOUT_FRACTION,
                    help=f"held-out share, as the run's (default {HOLDOUT_FRACTION})")
    pr.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    pr.add_argument("--quiet", action="store_true")

    s = sub.add_parser("serve", help="a local web page to explore a model: sample, reconstruct, interpolate, edit",
                       description="Starts a local web app (Gradio; pip install 'introvae[app]') on a model and "
                                   "prints its address: samples from a seed and temperature, reconstructions of "
                                   "uploaded images with the encoder's KL, interpolation, latent editing along "
                                   "the principal directions of the training codes, nearest training images.")
    s.add_argument("model", help="a run directory (its newest checkpoint), a checkpoint file, or an exported model")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--data", help="the training data, for an exported model (edit directions, neighbours)")

    for name in ("train", "calibrate", "demo", "sample", "reconstruct", "interpolate", "evaluate", "serve", "compare"):
        sub.choices[name].add_argument(
            "--threads", type=_positive_int, default=None, metavar="N",
            help="CPU threads for the computations (default: one per core, PyTorch's choice); with torchrun, per "
                 "process. Fewer leave cores to other work")
    for name in ("train", "calibrate", "reconstruct", "interpolate", "evaluate", "serve", "prepare"):
        sub.choices[name].add_argument(
            "--max-image-pixels", type=_positive_int, default=None, metavar="N",
            help="decode images up to N pixels without a warning (PIL's default: 89478485; larger ones warn, "
                 "over twice N are skipped as possible decompression bombs)")
    sub.add_parser("presets", help="list the named presets with their hyper-parameters and sizes")
    return p


def _positive_int(text: str) -> int:
    v = _typed(int)(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def _port(text: str) -> int:
    v = _typed(int)(text)
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text!r}")
    return v


def _one_line_warnings() -> None:
    """Data and setting warnings as one plain line each, in the voice of the errors (not Python's file:line: Category:)."""
    import warnings

    from .errors import PlainWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PlainWarning):
            print(f"introvae: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    from .commands import COMMANDS

    _one_line_warnings()
    try:
        parser = make_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's own parser, so the message names the command and its --help
            commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        threads = getattr(args, "threads", None) or args.global_threads
        if threads:
            import torch

            torch.set_num_threads(threads)
        if getattr(args, "max_image_pixels", None):
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = args.max_image_pixels
        return COMMANDS[args.command](args) or 0
    except UserError as e:
        report(e)
        return getattr(e, "status", EXIT_USAGE)
    except KeyboardInterrupt:
        print("introvae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (introvae presets | head): not our error
        sys.stderr.close()
        return 0
    except OSError as e:  # after BrokenPipeError, one of its kinds
        line = path_error_line(e)
        if line is None:
            raise
        report(line)
        return EXIT_USAGE
