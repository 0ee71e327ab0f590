"""What the commands that use a trained model do: sample, reconstruct, interpolate, evaluate, export, models,
serve (the parser is in ``cli``; training and setting up are in ``commands``)."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

from .errors import UserError
from .outputs import check_writable
from .stopping import sigterm_as_interrupt


def cmd_sample(args) -> int:
    import torch

    from .data import IMAGE_EXTENSIONS, save_image, to_float, to_uint8
    from .grids import save_grid
    from .runs import load_model

    if args.n < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UserError("sample: -n and --batch-size must be >= 1")
    from . import toy2d

    if toy2d.is_run(args.model):  # a 2D density run: points, as a table or their histogram
        check_writable(Path(args.out), "sample", "-o", file=True)
        model, cfg = toy2d.load_run(args.model)
        out = toy2d.write_samples(model, cfg, args.n, Path(args.out), seed=args.seed)
        print(f"wrote {args.n} points of the {cfg.objective} of {cfg.density} to {out}")
        return 0
    check_writable(Path(args.out), "sample", "-o", file=Path(args.out).suffix.lower() in IMAGE_EXTENSIONS)
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

    check_writable(Path(args.out), "reconstruct", "-o")
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
    check_writable(Path(args.out), "interpolate", "-o", file=True)
    model, ab, _ = _model_and_images(args, image_files([args.a, args.b], "interpolate"))
    strip = model.interpolate(ab[0], ab[1], args.steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(strip, out, nrow=args.steps)
    print(f"wrote an interpolation strip of {args.steps} images to {out}")
    return 0


def eval_settings(args):
    """The :class:`EvalSettings` of an ``evaluate`` command line: its defaults (``--screen``: the screen's), with
    the flags given."""
    from .errors import ConfigError
    from .metrics import EvalSettings
    from .metrics.context import SCREEN

    given = {f.name: getattr(args, f.name) for f in fields(EvalSettings) if getattr(args, f.name) is not None}
    try:
        return EvalSettings(**{**(SCREEN if getattr(args, "screen", False) else {}), **given})
    except ConfigError as e:  # "num_samples: must be >= 2, got 1" -> "evaluate: --num-samples: must be ..."
        name, problem = str(e).split(": ", 1)
        raise UserError(f"evaluate: --{name.replace('_', '-')}: {problem}") from None


def cmd_evaluate(args) -> int:
    with sigterm_as_interrupt():
        return _evaluate(args)


def _evaluate(args) -> int:
    from .evaluate import evaluate_checkpoints, evaluate_folder, evaluate_model, format_sweep, format_table

    settings = eval_settings(args)
    if args.out:
        check_writable(Path(args.out), "evaluate", "-o")
    from . import hub

    src = Path(args.source)
    if not src.exists():
        try:
            src = hub.resolve(args.source)  # a shipped model's name, or hf://OWNER/NAME
        except UserError:
            raise UserError(f"evaluate: not found: {src}") from None
    from . import toy2d

    if args.every_checkpoint and (toy2d.is_run(src) or not (src / "checkpoints").is_dir()):
        raise UserError(f"evaluate: --every-checkpoint takes an image model's run directory (with checkpoints/), "
                        f"got {src}")
    if args.every_steps and not args.every_checkpoint:
        raise UserError("evaluate: --every-steps picks checkpoints for --every-checkpoint; give both")
    if toy2d.is_run(src):  # a 2D density run: histogram KL and JSD of samples against fresh data
        model, cfg = toy2d.load_run(src)
        result = toy2d.evaluate(model, cfg, seed=settings.seed)
        print(toy2d.format_scores(result))
        if args.out:  # the run's own scores.json stays as training wrote it
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            print(f"scores in {toy2d.write_scores(out, dict(result, run=str(src), seed=settings.seed))}")
        return 0
    if src.is_file() or (src / "model.safetensors").is_file() or (src / "checkpoints").is_dir():
        given = [f for f, v in (("--in-channels", args.in_channels), ("--image-size", args.image_size)) if v]
        if given:
            raise UserError(f"evaluate: {' and '.join(given)} apply to a folder of images; a model is scored at "
                            f"its own size and channels")
        if args.every_checkpoint:
            rows = evaluate_checkpoints(src, settings, data=args.data, out=args.out, device=args.device,
                                        show_progress=not args.quiet, every_steps=args.every_steps)
            out = Path(args.out) if args.out else src
            print(format_sweep(rows))
            print(f"results in {out / 'metrics.jsonl'}, the curve in {out / 'fid-curve.png'}")
            return 0
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
    check_writable(Path(args.out), "export", "-o")
    model, out = export(args.model, args.out, ema=not args.no_ema, fp16=args.fp16, name=args.name,
                        train_command=args.train_command, commit=args.commit)
    print(f"exported the {model.generator_source} generator to {out}/ (config.json, model.safetensors"
          f"{' in fp16' if args.fp16 else ''}, README.md model card, samples.png)")
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
