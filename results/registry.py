"""The results registry: every figure the README states, one JSON record each, and the tables rendered from them.

    python results/registry.py render            # rewrite the result tables (README, docs/) and docs/results.md
    python results/registry.py render --check    # exit 1 if a rendered table differs from the records (CI)
    python results/registry.py add RUN --preset fashion-mnist --train-command "..."   # record RUN's last evaluation

A record (``results/records.jsonl``) holds: ``data``, ``objective``, ``preset`` and ``config_sha``, ``epochs``,
``seed``, ``metric``, ``value``, ``protocol``, ``command``, ``commit``, ``machine``, ``wall_time``, ``date``;
a published figure has ``source`` instead of a commit. Tables are never edited by hand: each sits in the
README (or a page of docs/) between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``, and ``render``
writes it anew.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "results" / "records.jsonl"
README = ROOT / "README.md"
RESULTS_PAGE = ROOT / "docs" / "results.md"
# The literature's Fashion-MNIST protocol (Lucic et al. 2018; Dai & Wipf 2019, Table 1).
LITERATURE = {"ref_split": "test", "num_samples": 10_000, "ref_images": 10_000, "feature_precision": "fp32"}
# evaluate --bn-protocol, as the literature table's rows say it (eval, the running statistics, goes unsaid)
BN_WORDS = {"recalibrate": "re-estimated on prior draws", "train": "each batch's own",
            "mix": "one set for both passes (≤ 0.7.7)", "posterior": "the encoder codes'",
            "vae-one-set": "the encoder codes' (≤ 0.7.8)"}
OBJECTIVE_NAMES = {"introvae": "IntroVAE", "vae": "VAE", "soft-introvae": "Soft-IntroVAE"}
# The 2D networks of the records made before runs named theirs: one ReLU layer fewer than the authors'
EARLIER_2D_NETWORKS = "MLPs with 3 ReLU layers of 256, z = 2 (introvae 0.5 and before)"
# The commit from which Soft-IntroVAE's warm-up has the authors' scale (2D runs from before it do not say so)
SOFT_WARMUP_SINCE = "4146a4e"
# Settings that do not change what a run learns: left out of the config hash, so seeds of one preset share it.
NOT_HASHED = ("seed", "steps", "epochs", "device", "precision", "channels_last", "compile", "loader_workers",
              "log_every", "image_every", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints",
              "eval_every", "eval_samples", "grid_size", "checkpoint_activations")


# --- reading and writing records ---------------------------------------------------------------
def read_records(path: Path = RECORDS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append_records(records: list[dict], path: Path = RECORDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def config_sha(config: dict) -> str:
    kept = {k: v for k, v in config.items() if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def machine() -> dict:
    """The machine that makes the record: the CPU (model and the flags that decide speed) or GPU, torch's version."""
    import torch

    from introvae.provenance import machine as describe

    return describe(torch.device("cuda") if torch.cuda.is_available() else None)


MEASURED_AT = "HEAD"  # the code that measured: --commit REV when a run used an earlier commit's code


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", f"{MEASURED_AT}^{{commit}}"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        if MEASURED_AT != "HEAD":
            raise SystemExit(f"results: --commit {MEASURED_AT} is not a commit of this repository") from None
        return None


def training_seconds(run: Path, until_step: int | None = None) -> float | None:
    from introvae.provenance import training_seconds as seconds

    s = seconds(run, until_step)
    return round(s, 1) if s else None


def wall_time(run: Path, step: int, evaluate_s: float | None) -> dict:
    """The run's training time up to ``step``, by the machine that trained it where the run recorded that (0.7.14
    on), and the evaluation's time."""
    from introvae.provenance import recorded, time_by_machine

    out = {"train_s": training_seconds(run, step), "evaluate_s": evaluate_s}
    by_machine = time_by_machine(run, step)
    if recorded(by_machine):
        out["train_machines"] = {words: round(s, 1) for words, s in by_machine.items()}
    return out


def records_from_run(run: Path, *, preset: str, train_command: str, eval_command: str,
                     num_train: int, step: int | None = None) -> list[dict]:
    """One record per figure (FID, precision, recall) of ``run``'s last evaluation (of checkpoint ``step``)."""
    cfg = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("during_training") and step in (None, r["step"]) and "protocol" in r]
    if not rows:
        raise SystemExit(f"results: {run} has no evaluation with a protocol" + (f" at step {step}" if step else ""))
    row = rows[-1]
    # the trainer's epochs: an epoch is the whole batches of the training images (the last, incomplete one is
    # dropped), so 468 steps of 128 are one epoch of 60,000 images, not 0.998
    epochs = round(row["step"] / max(1, num_train // cfg["batch_size"]), 3)
    base = {"data": cfg["data"], "objective": cfg["objective"], "preset": preset, "config_sha": config_sha(cfg),
            "epochs": epochs, "step": row["step"], "seed": cfg["seed"], "protocol": row["protocol"],
            "command": f"{train_command}; {eval_command}", "commit": git_commit(), "machine": machine(),
            "wall_time": wall_time(run, row["step"], row["seconds"]),
            "date": datetime.date.today().isoformat(), "run": run.name}
    m = row["metrics"]
    out = [dict(base, metric="fid", value=round(m["fid"]["value"], 2))]
    pr = m.get("precision_recall", {})
    out += [dict(base, metric=k, value=round(pr[k], 4)) for k in ("precision", "recall") if k in pr]
    return out


def _soft_warmup(cfg: dict, scores: dict) -> str | None:
    """How a Soft-IntroVAE 2D run weighed its warm-up: as its scores say, else by the commit that measured it."""
    if cfg["objective"] != "soft-introvae" or not cfg["vae_steps"]:
        return None
    if "warmup" in scores:
        return scores["warmup"]
    try:
        measured = subprocess.run(["git", "merge-base", "--is-ancestor", SOFT_WARMUP_SINCE,
                                   f"{MEASURED_AT}^{{commit}}"], cwd=ROOT, capture_output=True).returncode == 0
    except OSError:  # no git: the run cannot be placed
        measured = False
    from introvae.toy2d.run import SOFT_WARMUP  # the words the runs themselves write

    return SOFT_WARMUP if measured else None


def records_from_2d_run(run: Path, *, command: str) -> list[dict]:
    """One record per score (KL, JSD, both ways) of a finished 2D density run (``toy2d.json``, ``scores.json``)."""
    cfg = json.loads((run / "toy2d.json").read_text())
    scores = json.loads((run / "scores.json").read_text())
    if "networks" not in scores:
        raise SystemExit(f"results: {run} was trained before 2D runs named their networks (introvae 0.6); "
                         "its scores are of the earlier, shallower networks")
    preset = (f"2d ({cfg['steps']:,} steps of {cfg['batch_size']}, {cfg['vae_steps']:,} as a VAE, lr {cfg['lr']:g} "
              f"/10 at {', '.join(f'{m:,}' for m in cfg['lr_milestones'])})")
    base = {"data": cfg["density"], "objective": cfg["objective"], "preset": preset, "precision": cfg["precision"],
            "seed": cfg["seed"], "protocol": {"kind": "2d-histogram", "bins": "100x100 on [-2r, 2r]^2",
                                              "samples": cfg["eval_points"], "data_points": cfg["eval_points"],
                                              "scorer": "Soft-IntroVAE authors' KL/JSD and textbook JSD"},
            "extra": {"networks": scores["networks"], "weights": {k: cfg[k] for k in ("beta_kl", "beta_rec", "beta_neg")},
                      "target_grad": cfg.get("target_grad", False), "warmup": _soft_warmup(cfg, scores)},
            "wall_time": {"train_s": scores["seconds"]}, "command": command, "commit": git_commit(),
            "machine": machine(), "date": datetime.date.today().isoformat(), "run": run.name}
    out = [dict(base, metric=k, value=round(scores[k], 4)) for k in ("kl", "jsd", "kl_textbook", "jsd_textbook")]
    draws = scores.get("draws")
    if draws is None:  # a run from before 2D runs scored several draws: score them now, from its saved model
        from introvae.toy2d import evaluate, load_run

        draws = evaluate(*load_run(run))["draws"]
    out += [dict(base, metric=f"{k}_draws", value=round(draws[k][0], 4), std=round(draws[k][1], 4),
                 extra=dict(base["extra"], draws=draws["n"])) for k in ("kl", "jsd")]
    return out


def records_from_throughput(rows: list[dict], *, command: str) -> list[dict]:
    """One record per configuration of ``benchmarks/throughput.py --json-out`` (images/s against the peak)."""
    out = []
    for r in rows:
        if "images_per_s" not in r or r.get("emulated"):
            continue
        out.append({"data": f"random images {r['image_size']} px", "objective": r["objective"], "preset": r["preset"],
                    "metric": "train_images_per_s", "value": r["images_per_s"],
                    "protocol": {"kind": "throughput", "step": "one Algorithm 1 step, after warm-up",
                                 "flops": "FlopCounterMode", "peak": "2048^3 matmul in the same dtype, same run"},
                    "extra": {"precision": r["precision"], "channels_last": r["channels_last"], "threads": r.get("threads"),
                              "batch_size": r["batch_size"], "gflop_per_image": r["gflop_per_image"],
                              "tflops": r["achieved_tflops"], "peak_tflops": r["peak_tflops"]},
                    "command": command, "commit": git_commit(), "machine": machine(),
                    "date": datetime.date.today().isoformat()})
    return out


def records_from_pipeline(rows: list[dict], *, command: str) -> list[dict]:
    """One record per configuration of ``benchmarks/data_pipeline.py --json-out`` (images/s, no model)."""
    import os

    return [{"data": f"{r['source']} of generated photographs", "objective": None, "preset": None,
             "metric": "pipeline_images_per_s", "value": r["images_per_s"],
             "protocol": {"kind": "data pipeline", "what": "uint8 batches from data.batches, no model, after "
                          "one warm-up batch; encoded sources streamed, the store mapped"},
             "extra": {**r, "cores": os.cpu_count()}, "command": command, "commit": git_commit(),
             "machine": machine(), "date": datetime.date.today().isoformat()} for r in rows]


def records_from_compare(out: Path, *, command: str) -> list[dict]:
    """One record per figure (FID, precision, recall, reconstruction PSNR) of each row of ``introvae compare``'s
    ``compare.json`` in ``out``; ``command`` is the compare command line, whose ``--data`` and ``--budget`` name
    what was compared."""
    import shlex

    from introvae.compare import parse_budget

    rows = json.loads((out / "compare.json").read_text())
    words = shlex.split(command)

    def flag(name: str) -> str:
        given = [w.split("=", 1)[1] for w in words if w.startswith(name + "=")]
        given += [words[i + 1] for i, w in enumerate(words[:-1]) if w == name]
        if not given:
            raise SystemExit(f"results: the compare command names no {name}: {command!r}")
        return given[-1]

    data, budget = flag("--data"), parse_budget(flag("--budget")).words()
    out_records = []
    for r in rows:
        base = {"data": data, "objective": r["objective"], "preset": f"introvae compare, {budget}", "seed": r["seed"],
                "protocol": r["protocol"], "extra": {"compare": budget, "steps": r["steps"],
                                                     "batch_size": r["batch_size"]},
                "wall_time": {"train_s": r["train_s"]}, "command": command, "commit": git_commit(),
                "machine": machine(), "date": datetime.date.today().isoformat(), "run": Path(r["run"]).name}
        out_records += [dict(base, metric=k, value=round(r[k], 2 if k in ("fid", "psnr") else 4))
                        for k in ("fid", "precision", "recall", "psnr") if r.get(k) is not None]
    return out_records


# --- rendering ---------------------------------------------------------------------------------
def _is_literature_protocol(p: dict | None) -> bool:
    return p is not None and all(p.get(k) == v for k, v in LITERATURE.items())


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _hours(seconds: float | None) -> str:
    from introvae.provenance import duration_words

    return "-" if seconds is None else duration_words(seconds)


def _bn_kind(record: dict) -> str:
    """Which BatchNorm statistics the generator sampled with: the protocol's (evaluate --bn-protocol), and for
    ``eval`` whether the model kept one set per pass (0.7.8 on: ``eval``) or one set for both passes of a two-pass
    objective, a mix (records say ``generator_stats`` from 0.7.8; earlier ones were all shared). The VAE's one set
    was its encoder codes' until 0.7.9 (``vae-one-set``; ``--bn-protocol posterior`` samples with those of a later
    model), when it began to track its prior draws' too."""
    bn = record["protocol"].get("bn_protocol", "eval")
    if bn == "eval" and record["protocol"].get("generator_stats") != "per-pass":
        return "vae-one-set" if record["objective"] == "vae" else "mix"
    return bn


def table_fashion_mnist(records: list[dict], *, every_version: bool = False) -> str:
    """Our objectives and the literature's models on Fashion-MNIST, all under the literature's FID protocol. Our rows
    are the presets as users get them; a preset with changed settings (a screen: ``fashion-mnist --ema 0``) is
    listed in docs/results.md and its preset's docs only. An objective's row at a number of epochs measured with
    the current code (the generator's statistics per pass, scored in eval mode) stands alone; the rows of earlier
    versions and other statistics stay while no current one exists, and all of them with ``every_version``
    (docs/history.md)."""
    ours = [r for r in records if r.get("data") == "fashion-mnist" and "source" not in r
            and _is_literature_protocol(r.get("protocol")) and "compare" not in r.get("extra", {})
            and " --" not in r["preset"]]
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in ours:
        # the generator's BatchNorm statistics (evaluate --bn-protocol) part rows: other figures of the same models
        key = (r["objective"], r["preset"], r["epochs"], _bn_kind(r))
        groups[key][r["metric"]].append(r["value"])
        if r["metric"] == "fid":
            groups[key]["seeds"].append(r["seed"])
            groups[key]["train_s"].append(_time_words(r.get("wall_time") or {}))
    if not every_version:
        current = {(obj, epochs) for obj, _, epochs, bn in groups if bn == "eval"}
        groups = {k: g for k, g in groups.items() if k[3] == "eval" or (k[0], k[2]) not in current}
    # the fastest seed's time: the seeds of a row often shared the cores with different numbers of other jobs
    lines = ["| model | preset / source | epochs | FID ↓ | precision ↑ | recall ↑ | seeds | training time (fastest seed) |",
             "|---|---|---|---|---|---|---|---|"]
    order = {"introvae": 0, "soft-introvae": 1, "vae": 2}
    for (obj, preset, epochs, bn), g in sorted(groups.items(),
                                               key=lambda kv: (order.get(kv[0][0], 9), kv[0][2], kv[0][3] != "eval",
                                                               kv[0][3] != "mix")):
        times = sorted((t for t in g["train_s"] if t is not None), key=lambda t: t[0])
        bn_note = f", generator's BN: {BN_WORDS[bn]}" if bn in BN_WORDS else ""
        lines.append(f"| {OBJECTIVE_NAMES.get(obj, obj)} (ours) | `{preset}`{bn_note} | {epochs:g} | "
                     f"**{_mean_std(g['fid'], 1)}** | "
                     + " | ".join(_mean_std(g[k], 3) if g.get(k) else "-" for k in ("precision", "recall"))
                     + f" | {', '.join(map(str, sorted(g['seeds'])))} | "
                     f"{times[0][1] if times else '-'} |")
    for r in sorted((r for r in records if r.get("data") == "fashion-mnist" and "source" in r
                     and r["metric"] == "fid"), key=lambda r: r["value"]):
        std = f" ± {r['std']:.1f}" if r.get("std") is not None else ""
        lines.append(f"| {r['model']} | {r['source']} | {r.get('epochs_text', '-')} | {r['value']:.1f}{std} | - | - "
                     f"| {r.get('runs', '-')} | - |")
    return "\n".join(lines)


def _time_words(wall_time: dict) -> tuple[float, str] | None:
    """(seconds, words) of a record's training time, with the machine that took it where the run recorded that
    (0.7.14 on): "52 min, AMD EPYC (avx2)", or "5.5 h, 2 machines"."""
    seconds = wall_time.get("train_s")
    if seconds is None:
        return None
    machines = wall_time.get("train_machines") or {}
    where = (f", {next(iter(machines))}" if len(machines) == 1 else
             f", {len(machines)} machines" if machines else "")
    return seconds, _hours(seconds) + where


def _networks_2d(record: dict) -> str:
    """The networks a 2D score was measured with, and the authors' undetached x_r target where it was used."""
    extra = record.get("extra", {})
    networks = extra.get("networks", EARLIER_2D_NETWORKS)
    return (networks + ("; x_r's target with its gradient, as the authors' code" if extra.get("target_grad") else "")
            + (f"; {extra['warmup']}" if extra.get("warmup") else ""))


def table_densities(records: list[dict]) -> str:
    """The three objectives on the 2D densities: the histogram JSD the Soft-IntroVAE authors report (lower is
    better), one row per density, mean ± std where several seeds ran. Each cell is from the current networks where
    they have run, else from the earlier ones, marked with a dagger."""
    rows: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if r.get("protocol", {}).get("kind") == "2d-histogram" and r["metric"] == "jsd" and \
                not r.get("extra", {}).get("target_grad"):  # the paper's objective only
            rows[r["data"]][r["objective"]][_networks_2d(r)].append(r["value"])
    order = ("vae", "introvae", "soft-introvae", "data")
    lines = ["| density | VAE | IntroVAE | Soft-IntroVAE | *data itself* | seeds |", "|---|---|---|---|---|---|"]
    earlier_shown = False
    for data in sorted(rows, key=lambda d: (d != "8gaussians", d)):
        cells: dict[str, tuple[list, bool]] = {}
        for o in order:
            groups = rows[data].get(o, {})
            newer = [n for n in groups if n != EARLIER_2D_NETWORKS]
            if groups:
                cells[o] = (groups[newer[-1]], False) if newer else (groups[EARLIER_2D_NETWORKS], o != "data")
        best = min(statistics.mean(cells[o][0]) for o in order[:3] if o in cells)
        texts = []
        for o in order:
            if o not in cells:
                texts.append("-")
                continue
            values, earlier = cells[o]
            text = _mean_std(values, 2) + (" †" if earlier else "")
            earlier_shown |= earlier
            texts.append(f"**{text}**" if o != "data" and statistics.mean(values) == best else text)
        counts = {len(cells[o][0]) for o in order[:3] if o in cells}
        seeds = str(counts.pop()) if len(counts) == 1 else "/".join(str(len(cells[o][0])) for o in order[:3] if o in cells)
        lines.append(f"| {data} | " + " | ".join(texts) + f" | {seeds} |")
    if earlier_shown:
        lines.append("\n† the earlier, shallower networks (introvae 0.5 and before: 3 ReLU layers of 256, the authors' "
                     "have 4), in bf16; not yet re-run.")
    return "\n".join(lines)


def table_densities_full(records: list[dict]) -> str:
    """Every score of the 2D densities: the authors' KL and JSD, and the textbook JSD in nats, per networks and
    arithmetic."""
    rows: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("protocol", {}).get("kind") == "2d-histogram":
            networks = "-" if r["objective"] == "data" else _networks_2d(r)
            key = (r["data"], r["objective"], networks, r.get("precision", "-"))
            rows[key][r["metric"]].append(r["value"])
            if r["metric"].endswith("_draws"):
                rows[key][r["metric"] + "_sd"].append(r["std"])
                rows[key]["draws"] = [r["extra"]["draws"]]
    lines = ["| density | objective | networks | arithmetic | KL (authors) | JSD (authors) | JSD (textbook, nats) "
             "| seeds | KL / JSD (authors), mean of N draws (± one draw's sd) |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {"vae": 0, "introvae": 1, "soft-introvae": 2, "data": 3}
    for (data, obj, networks, precision), g in sorted(rows.items(), key=lambda kv: (
            kv[0][0] != "8gaussians", kv[0][0], order.get(kv[0][1], 9), kv[0][2] != EARLIER_2D_NETWORKS)):
        name = "*data itself*" if obj == "data" else OBJECTIVE_NAMES.get(obj, obj)
        draws = "-"
        if g.get("kl_draws"):  # the mean over seeds of each run's mean over draws; a single draw's spread beside it
            sd = {k: statistics.mean(g[f"{k}_draws_sd"]) for k in ("kl", "jsd")}
            draws = (f"{_mean_std(g['kl_draws'], 2)} (± {sd['kl']:.2f}) / {_mean_std(g['jsd_draws'], 2)} "
                     f"(± {sd['jsd']:.2f}), N = {g['draws'][0]}")
        lines.append(f"| {data} | {name} | {networks} | {precision} | {_mean_std(g['kl'], 2)} | "
                     f"{_mean_std(g['jsd'], 2)} | {_mean_std(g['jsd_textbook'], 2)} | {len(g['kl'])} | {draws} |")
    return "\n".join(lines)


def table_speed(records: list[dict]) -> str:
    """Training speed against the same run's matmul peak."""
    rows = [r for r in records if r.get("metric") == "train_images_per_s"]
    lines = ["| preset | objective | batch | precision | channels-last | threads | images/s | min per 60,000 images "
             "| GFLOP/image | TFLOP/s | matmul peak TFLOP/s | % of peak | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        x = r["extra"]
        # records before 0.7.14 did not say their threads: they ran with torch's default, the machine's 2 cores
        lines.append(f"| `{r['preset']}` | {OBJECTIVE_NAMES.get(r['objective'], r['objective'])} | {x['batch_size']} "
                     f"| {x['precision']} | {'yes' if x['channels_last'] else 'no'} | {x.get('threads') or 2} | "
                     f"{r['value']:.1f} | {60_000 / r['value'] / 60:.0f} | {x['gflop_per_image']:.2f} | "
                     f"{x['tflops']:.3f} | {x['peak_tflops']:.3f} | "
                     f"{100 * x['tflops'] / x['peak_tflops']:.1f} | {r['machine'].get('cpu', '?')}, "
                     f"{' '.join(r['machine'].get('cpu_flags', []))} |")
    return "\n".join(lines)


def table_projection(records: list[dict]) -> str:
    """benchmarks/gpu_projection.py's rows: projected on a CPU, never measured."""
    rows = [r for r in records if r.get("metric") == "projected_img_s_h100"]
    lines = ["| preset | params (M) | GFLOP/image | activations MiB/image (checkpointed) | largest batch in 80 GB "
             "(checkpointed) | img/s on an H100 | min per 30k-image epoch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        x = r["extra"]
        lines.append(f"| `{r['preset']}` | {x['parameters'] / 1e6:.1f} | {x['gflop_per_image']:.0f} | "
                     f"{x['activations_mib_per_image']:.0f} ({x['activations_mib_per_image_checkpointed']:.0f}) | "
                     f"{x['max_batch_80gb']} ({x['max_batch_80gb_checkpointed']}) | {r['value']:.0f} *projected* | "
                     f"{x['minutes_per_epoch H100 80GB']:.1f} *projected* |")
    return "\n".join(lines)


def table_pipeline(records: list[dict]) -> str:
    """benchmarks/data_pipeline.py: images/s the data pipeline delivers (no model), by source and size, for each
    number of worker processes, under the rate one GPU consumes at that size (the projection's H100 rate)."""
    rows = [r for r in records if r.get("metric") == "pipeline_images_per_s"]
    consumes = {256: "celebahq256", 1024: "celebahq1024"}
    projected = {r["preset"]: r["value"] for r in records if r.get("metric") == "projected_img_s_h100"}
    sizes = sorted({r["extra"]["size"] for r in rows})
    workers = sorted({r["extra"]["workers"] for r in rows})
    by = {(r["extra"]["source"], r["extra"]["size"], r["extra"]["workers"]): r["value"] for r in rows}
    sources = list(dict.fromkeys(r["extra"]["source"] for r in rows))
    w = " / ".join(map(str, workers))
    lines = ["| source | " + " | ".join(f"{size} px, {w} workers" for size in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for src in sources:
        cells = [" / ".join(f"{by[(src, size, k)]:.0f}" if (src, size, k) in by else "-" for k in workers)
                 for size in sizes]
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    gpu = [f"{projected[consumes[size]]:.0f} *projected*" if consumes.get(size) in projected else "-"
           for size in sizes]
    lines.append("| *one H100 consumes* | " + " | ".join(gpu) + " |")
    return "\n".join(lines)


def table_compare(records: list[dict]) -> str:
    """The newest ``introvae compare`` on Fashion-MNIST: a row per objective (the mean over seeds), its command,
    commit and evaluation protocol under it."""
    rows = [r for r in records if "compare" in r.get("extra", {}) and r.get("data") == "fashion-mnist"]
    if not rows:
        return "No comparison recorded yet."
    newest = max(rows, key=lambda r: (r["date"], r["command"]))
    rows = [r for r in rows if (r["command"], r["commit"]) == (newest["command"], newest["commit"])]
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        g = groups[r["objective"]]
        g[r["metric"]].append(r["value"])
        if r["metric"] == "fid":
            g["seeds"].append(r["seed"])
            g["train_s"].append(r["wall_time"]["train_s"])
            g["images"].append(r["extra"]["steps"] * r["extra"]["batch_size"])
    lines = ["| objective | images seen | FID ↓ | precision ↑ | recall ↑ | PSNR (dB) ↑ | training time | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for obj, g in groups.items():
        lines.append(f"| {OBJECTIVE_NAMES.get(obj, obj)} | {round(statistics.mean(g['images'])):,} | "
                     f"**{_mean_std(g['fid'], 1)}** | "
                     + " | ".join(_mean_std(g[k], 3) if g.get(k) else "-" for k in ("precision", "recall"))
                     + f" | {_mean_std(g['psnr'], 2) if g.get('psnr') else '-'} | "
                     f"{statistics.mean(g['train_s']) / 60:.1f} min | {len(g['seeds'])} |")
    p = newest["protocol"]
    lines += ["", f"`{newest['command']}` (commit {newest['commit']}, {newest['date']}): FID of {p['num_samples']:,} "
                  f"samples against {p['ref_images']:,} {p['ref_split']} images, {p['feature_precision']} Inception "
                  f"features, the generator's BatchNorm in {p.get('bn_protocol', 'eval')} mode; PSNR of the "
                  f"reconstructions (posterior mean) of held-out images."]
    return "\n".join(lines)


def table_models(records: list[dict]) -> str:
    """The shipped models (models/*/README.md cards): their data, size and recorded metrics."""
    import yaml

    lines = ["| name | data | objective | size | FID (protocol) | use it |", "|---|---|---|---|---|---|"]
    for d in sorted((ROOT / "models").glob("*/README.md")):
        text = d.read_text()
        meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
        metrics = (meta.get("model-index") or [{}])[0].get("results", [{}])[0].get("metrics", [])
        fid = next((f"{m['value']} {m['name'].removeprefix('FID ')}" for m in metrics if m["type"] == "fid"), "-")
        size = (d.parent / "model.safetensors").stat().st_size / 2**20
        objective = meta.get("objective", "introvae")
        lines.append(f"| `{d.parent.name}` | {(meta.get('datasets') or ['?'])[0]} | {OBJECTIVE_NAMES[objective]} | "
                     f"{size:.1f} MB | {fid} | `introvae sample {d.parent.name} -n 16 -o s.png` |")
    return "\n".join(lines)


TABLES = {"fashion-mnist": table_fashion_mnist,
          "fashion-mnist-every-version": lambda records: table_fashion_mnist(records, every_version=True),
          "densities": table_densities,
          "densities-full": table_densities_full, "speed": table_speed,
          "projection": table_projection, "models": table_models, "pipeline": table_pipeline,
          "compare": table_compare}


def replace_tables(text: str, records: list[dict]) -> str:
    """``text`` with every ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->`` block rendered anew."""
    for name, make in TABLES.items():
        start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        if end not in rest:
            raise SystemExit(f"results: {start} has no closing {end}")
        text = f"{head}{start}\n{make(records)}\n{end}{rest.split(end, 1)[1]}"
    return text


def results_page(records: list[dict]) -> str:
    """docs/results.md: every record, grouped by what it measured and under which protocol."""
    out = ["# Every recorded figure", "",
           "Rendered from `results/records.jsonl` by `python results/registry.py render`; do not edit by hand.",
           "Figures measured under different protocols are never in one table.", ""]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[json.dumps(r.get("protocol"), sort_keys=True)].append(r)
    for proto, rs in groups.items():
        p = json.loads(proto) or {}
        title = ", ".join(f"{k} {v}" for k, v in p.items() if k not in ("inception_sha256", "resize", "network"))
        out += [f"## {title or 'no protocol'}", "",
                "| data | model | preset / source | epochs | seed | metric | value | commit | date |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            model = r.get("model") or OBJECTIVE_NAMES.get(r.get("objective"), r.get("objective"))
            out.append(f"| {r.get('data')} | {model} | {r.get('preset') or r.get('source')} | "
                       f"{r.get('epochs', r.get('epochs_text', '-'))} | {r.get('seed', '-')} | {r['metric']} | "
                       f"{r['value']}{' ± ' + str(r['std']) if r.get('std') is not None else ''} | "
                       f"{r.get('commit') or '-'} | {r.get('date', '-')} |")
        out.append("")
    return "\n".join(out)


def render(*, check: bool, readme: Path = README, page: Path = RESULTS_PAGE, records_path: Path = RECORDS) -> int:
    records = read_records(records_path)
    stale = []
    pages = [readme] + sorted(p for p in page.parent.glob("*.md") if p != page)  # tables may sit in docs/ too
    rendered = [(path, replace_tables(path.read_text(), records)) for path in pages]
    for path, new in rendered + [(page, results_page(records))]:
        old = path.read_text() if path.is_file() else ""
        if old != new:
            stale.append(path)
            if not check:
                path.write_text(new)
    if check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in stale)
        print(f"results: {names} differ from results/records.jsonl; run python results/registry.py render",
              file=sys.stderr)
        return 1
    print("results: tables match the records" if check else f"results: rendered {len(records)} records")
    return 0


def main(argv: list[str] | None = None) -> int:
    global MEASURED_AT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="HEAD", help="the commit whose code measured what is added (default: HEAD; "
                                                    "a run made from a snapshot of an earlier commit names it)")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("render", help="rewrite the README's result tables and docs/results.md")
    r.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from the records")
    a = sub.add_parser("add", help="record the figures of a run's last evaluation")
    a.add_argument("run", type=Path)
    a.add_argument("--preset", required=True)
    a.add_argument("--train-command", required=True)
    a.add_argument("--eval-command", default="introvae evaluate RUN --threads 1")
    a.add_argument("--num-train", type=int, default=60_000, help="training images (one epoch)")
    a.add_argument("--step", type=int, help="the evaluation of this checkpoint step (default: the last one)")
    t = sub.add_parser("add-throughput", help="record the rows of benchmarks/throughput.py --json-out FILE")
    t.add_argument("file", type=Path)
    t.add_argument("--command", required=True, help="the benchmark's command line")
    j = sub.add_parser("add-projection", help="record the rows of benchmarks/gpu_projection.py --json-out FILE")
    j.add_argument("file", type=Path)
    j.add_argument("--command", required=True)
    d = sub.add_parser("add-pipeline", help="record the rows of benchmarks/data_pipeline.py --json-out FILE")
    d.add_argument("file", type=Path)
    d.add_argument("--command", required=True)
    two = sub.add_parser("add-2d", help="record the scores of finished 2D density runs (introvae train --data 8gaussians)")
    two.add_argument("runs", type=Path, nargs="+")
    two.add_argument("--command", required=True, help="the training command line, RUN for the run directory")
    c = sub.add_parser("add-compare", help="record the rows of an introvae compare output folder (compare.json)")
    c.add_argument("out", type=Path)
    c.add_argument("--command", required=True, help="the compare command line (its --data and --budget are read)")
    args = p.parse_args(argv)
    MEASURED_AT = args.commit
    if args.action == "add-compare":
        new = records_from_compare(args.out, command=args.command)
        append_records(new)
        print(f"results: recorded {len(new)} figures of {args.out}")
        return 0
    if args.action == "add-2d":
        new = [r for run in args.runs for r in records_from_2d_run(run, command=args.command)]
        append_records(new)
        print(f"results: recorded {len(new)} scores of {len(args.runs)} 2D run(s)")
        return 0
    if args.action == "add-pipeline":
        new = records_from_pipeline(json.loads(args.file.read_text()), command=args.command)
        append_records(new)
        print(f"results: recorded {len(new)} pipeline rows")
        return 0
    if args.action == "add-projection":
        rows = json.loads(args.file.read_text())
        append_records([{"data": "meta tensors (shapes only)", "objective": "introvae", "preset": r["preset"],
                         "metric": "projected_img_s_h100", "value": round(r["img_s H100 80GB"], 1),
                         "protocol": {"kind": "projection", "fraction_of_bf16_peak": r["fraction_of_peak"],
                                      "activations": "bytes saved for backward, fp32"},
                         "extra": r, "command": args.command, "commit": git_commit(), "machine": machine(),
                         "date": datetime.date.today().isoformat()} for r in rows])
        print(f"results: recorded {len(rows)} projections")
        return 0
    if args.action == "render":
        return render(check=args.check)
    if args.action == "add-throughput":
        rows = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
        new = records_from_throughput(rows, command=args.command)
        append_records(new)
        print(f"results: recorded {len(new)} throughput figures")
        return 0
    new = records_from_run(args.run, preset=args.preset, train_command=args.train_command,
                           eval_command=args.eval_command, num_train=args.num_train, step=args.step)
    append_records(new)
    print(f"results: recorded {len(new)} figures of {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
