"""``introvae info RUN``: where a run stands, on one screen, without reading its JSON lines by hand.

What it trains (objective, data, seed), how far (step and epoch of its total, finished or the command that
resumes it), its last logged row (the encoder's KLs against the margin in force, the reconstruction, the rate),
its training time by the machine that took it (``sessions.jsonl``), its checkpoints, and its evaluations with
their protocol. ``--json`` gives the same as one JSON object for scripts. A 2D density run gets its settings,
its progress and its scores. An exported model folder (or a shipped model's name) gets what its card records.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .errors import PlainWarning, UserError
from .provenance import duration_words, recorded

EVALUATIONS_SHOWN = 5


def _epochs_seen(state: dict) -> float | None:
    """Epochs of training images seen, from a checkpoint's data cursor (None before 0.7.18, which kept no count of
    the training images)."""
    n = state.get("num_train")
    if not n or state.get("data_epoch") is None:
        return None
    from .runstate import epochs_seen

    return epochs_seen(int(state["data_epoch"]), int(state.get("data_epoch_images", 0)), int(n))


def summarize(run: str | Path) -> dict:
    """The facts ``introvae info`` prints, as a dict (also its ``--json``)."""
    from . import toy2d

    run, shown = Path(run), str(run)
    if not run.exists():
        from . import hub

        models = hub.shipped()
        if str(run) not in models and not str(run).startswith("hf://"):
            known = f", or a shipped model's name: {', '.join(models)}" if models else ""
            raise UserError(f"info: {run} does not exist (give a run directory, a checkpoint, a model folder{known})")
        run = hub.resolve(run)
    if run.is_file() and run.parent.name == "checkpoints":  # a checkpoint: its run
        run = run.parent.parent
    if toy2d.is_run(run):
        return _summarize_2d(run)
    if (run / "model.safetensors").is_file():  # an exported model folder, not a run
        return _summarize_model(run, shown)
    if not (run / "config.json").is_file() and ((run / "metrics.jsonl").is_file() or any(run.glob("*-partial-*.pt"))):
        return _summarize_evaluations(run)  # a folder `evaluate -o` wrote
    if not (run / "config.json").is_file() and run.is_dir() and _compare_runs(run):
        return _summarize_compare(run)  # a folder `introvae compare` wrote
    if not (run / "config.json").is_file():
        raise UserError(f"info: {run} is not a run directory (no config.json; give the folder `introvae train "
                        "--out` wrote)")
    from . import checkpoint
    from .metrics.store import read_metrics
    from .provenance import forked_from, read_sessions, setting_changes, time_by_machine, training_seconds
    from .stats import read_stats

    config = json.loads((run / "config.json").read_text())
    found = checkpoint.list_checkpoints(run)
    newest = None
    for path in reversed(found):  # the newest readable one, as --resume takes
        try:
            newest = (path, checkpoint.load(path, mmap=True))
            break
        except UserError:
            continue
    out = {"run": str(run), "objective": config.get("objective"), "data": config.get("data"),
           "seed": config.get("seed"), "checkpoints": len(found)}
    if newest is not None:
        path, state = newest
        total = int(state["total_steps"])
        out.update(step=int(state["step"]), total_steps=total, epoch=state.get("data_epoch"),
                   epochs=config.get("epochs"), epochs_seen=_epochs_seen(state), warmup_steps=state.get("warmup_steps"),
                   newest_checkpoint=path.name, written_by=state.get("version"),
                   finished=int(state["step"]) >= total)
    budget = run / "budget-done.json"  # compare's time budget: its step count was only a cap
    if budget.is_file():
        out["stopped_by_budget_s"] = json.loads(budget.read_text()).get("seconds")
    stats = read_stats(run)
    if stats:
        out["last_log"] = {k: stats[-1].get(k) for k in ("step", "reconstruction", "kl_real", "kl_rec", "kl_fake",
                                                         "margin", "lr", "images_per_s", "alpha")}
    if newest is not None and not out["finished"] and not budget.is_file():
        left = _seconds_left(stats, out["step"], out["total_steps"], out.get("warmup_steps") or 0,
                             config.get("batch_size", 1))
        if left is not None:
            out["seconds_left"], out["seconds_left_rate"] = left
    by_machine = time_by_machine(run)
    if by_machine:
        out["training_seconds"] = round(sum(by_machine.values()), 1)
        out["training_seconds_by_machine"] = {k: round(v, 1) for k, v in by_machine.items()}
    sessions = read_sessions(run)
    if sessions:
        out["sessions"] = len(sessions)
        out["last_session"] = {k: sessions[-1].get(k) for k in ("started", "step", "device", "precision", "threads",
                                                                 "processes", "introvae")}
    source = forked_from(run)
    if source is not None:
        out["forked_from"] = {"step": source[0], "checkpoint": str(source[1])}
        before = training_seconds(source[1].parent.parent, until_step=source[0])  # counted in training_seconds
        if before is not None:  # the source is still there (a time that rounds to 0 is still its time)
            out["forked_from"]["training_seconds"] = round(before, 1)
    changes = setting_changes(run)
    if changes:
        out["changes"] = changes
    pictures = [sorted(run.glob(f"{kind}-*.png"))[-1:] for kind in ("samples", "reconstructions")]
    out["pictures"] = [str(p) for p in sum(pictures, []) + [run / "kl.png"] if p.is_file()]
    out["evaluations"] = [_evaluation(r) for r in read_metrics(run) if not r.get("during_training")]
    during = read_metrics(run, during_training=True)
    if during:
        out["last_evaluation_during_training"] = _evaluation(during[-1])
    return out


def _seconds_left(stats: list[dict], step: int, total: int, warmup: int, batch: int) -> tuple[float, float] | None:
    """The time the rest of a run takes at its last logged rate (the median of the last rows of the same kind of
    step, so one slow interval does not swing it), and that rate; None without logged rates. A run still in its
    VAE warm-up counts each introspective step as ``eta.INTROSPECTIVE_COST`` warm-up steps, as training's estimate
    does until it has timed them."""
    import statistics

    from .eta import INTROSPECTIVE_COST

    in_warmup = step < warmup
    rates = [r["images_per_s"] for r in stats if r.get("images_per_s") and (r["step"] <= warmup) == in_warmup]
    if not rates:
        return None
    rate = statistics.median(rates[-10:])
    steps = (warmup - step + INTROSPECTIVE_COST * (total - warmup)) if in_warmup else total - step
    return steps * batch / rate, rate


def _evaluation(row: dict) -> dict:
    m, p = row.get("metrics", {}), row.get("protocol") or {}
    pr = m.get("precision_recall", {})
    rec = m.get("reconstruction", {}).get("posterior_mean", {})
    return {"step": row.get("step"), "fid": (m.get("fid") or {}).get("value"), "precision": pr.get("precision"),
            "recall": pr.get("recall"), "psnr": rec.get("psnr"), "num_samples": p.get("num_samples"),
            "ref_images": p.get("ref_images"), "ref_split": p.get("ref_split"),
            "feature_precision": p.get("feature_precision")}


def _summarize_evaluations(d: Path) -> dict:
    """A folder of ``introvae evaluate -o``: every evaluation in it (a sweep's every checkpoint), what they scored,
    and any evaluation stopped there with the images it had done."""
    from .metrics.partial import kept_in
    from .metrics.store import read_metrics

    rows = read_metrics(d)
    return {"evaluations_folder": str(d), "models": list(dict.fromkeys(str(r.get("model")) for r in rows)),
            "evaluations": [_evaluation(r) for r in rows],
            "in_progress": [{"file": name, "done": done, "total": total} for name, done, total in kept_in(d)]}


def _compare_runs(d: Path) -> list[Path]:
    """The runs ``introvae compare`` made in ``d`` (``OBJECTIVE-sSEED`` folders with a config.json)."""
    from .compare import OBJECTIVES

    return [sub for sub in sorted(d.iterdir()) if sub.is_dir() and (sub / "config.json").is_file()
            and sub.name.rpartition("-s")[0] in OBJECTIVES]


def _summarize_compare(d: Path) -> dict:
    """A folder of ``introvae compare``: its table (compare.md, once every run is trained and scored) and where
    each of its runs stands."""
    table = d / "compare.md"
    return {"compare_folder": str(d), "table": table.read_text() if table.is_file() else None,
            "runs": [summarize(sub) for sub in _compare_runs(d)]}


def _summarize_model(d: Path, shown: str) -> dict:
    """An exported model folder (``shown``: as the user named it, a path or a shipped model's name): its sizes
    (config.json), and what its card records of its training and metrics."""
    from . import hub

    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"info: {d / 'config.json'} cannot be read ({e})") from None
    try:
        meta = hub.card_metadata(d)
    except Exception as e:  # noqa: BLE001 - a hand-edited card's YAML: the folder is still worth describing
        warnings.warn(f"info: {d / hub.CARD}'s metadata cannot be read ({type(e).__name__}); shown without it",
                      PlainWarning, stacklevel=2)
        meta = {}
    index = (meta.get("model-index") or [{}])[0]
    results = (index.get("results") or [{}])[0].get("metrics") or []
    training, metrics_section = _card_bullets(d, "Training"), _card_bullets(d, "Metrics")
    protocol = metrics_section.get("protocol", "").strip("`")
    out = {"model": shown, "folder": str(d), "name": index.get("name", d.name), "objective": meta.get("objective"),
           "data": (meta.get("datasets") or [None])[0],
           **{k: config.get(k) for k in ("image_size", "in_channels", "latent_dim", "likelihood")},
           "weights_bytes": (d / "model.safetensors").stat().st_size,
           "metrics": {m["type"]: m["value"] for m in results if "type" in m and "value" in m},
           "training": training}
    if results and results[0].get("type") == "fid":
        out["fid_protocol"] = results[0].get("name")
    try:
        out["protocol"] = json.loads(protocol)
    except ValueError:  # none recorded (not evaluated), or edited by hand
        pass
    step = next((k.removeprefix("evaluated at step ") for k in metrics_section if k.startswith("evaluated at step")),
                "")
    if step.isdigit():
        out["evaluated_at_step"] = int(step)
    out["pictures"] = [str(p) for p in sorted(d.glob("*.png"))]
    return out


def _card_bullets(d: Path, section: str) -> dict:
    """A model card section's ``* key: value`` bullets as a dict (a bullet without ``: `` is a key with value '')."""
    from .hub import CARD

    card = d / CARD
    if not card.is_file():
        return {}
    out, inside = {}, False
    for line in card.read_text().splitlines():
        if line.startswith("## "):
            inside = line[3:].strip() == section
        elif inside and line.startswith("* "):
            key, _, value = line[2:].partition(": ")
            out[key.strip()] = value.strip()
    return out


def _summarize_2d(run: Path) -> dict:
    from . import checkpoint
    from .provenance import read_sessions, time_by_machine
    from .toy2d.run import CHECKPOINT_FILE, CONFIG_FILE

    config = json.loads((run / CONFIG_FILE).read_text())
    scores_path = run / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else None
    saved = run / CHECKPOINT_FILE  # an unfinished run resumes from its checkpoint's step, not its last logged row
    step = config.get("steps") if scores else checkpoint.load(saved, mmap=True)["step"] if saved.is_file() else 0
    out = {"run": str(run), "objective": config.get("objective"), "data": config.get("density"),
           "seed": config.get("seed"), "total_steps": config.get("steps"), "finished": scores is not None,
           "step": int(step), "checkpoint": saved.is_file()}
    if scores:
        out["scores"] = {k: scores.get(k) for k in ("kl", "jsd", "kl_textbook", "jsd_textbook", "seconds")}
    by_machine = time_by_machine(run)
    sessions = read_sessions(run)
    if sessions:
        out["sessions"] = len(sessions)
    if recorded(by_machine):
        out["training_seconds_by_machine"] = {k: round(v, 1) for k, v in by_machine.items()}
    return out


def format_summary(s: dict) -> str:
    """The summary as lines for a terminal."""
    from .compare import NAMES

    name = NAMES.get(s.get("objective"), s.get("objective"))
    if "model" in s:
        return _format_model(s, name)
    if "evaluations_folder" in s:
        return _format_evaluations(s)
    if "compare_folder" in s:
        return _format_compare(s)
    lines = [f"{s['run']}: {name} on {s['data']}, seed {s['seed']}"]
    if "total_steps" in s:
        where = f"step {s['step']:,}" + ("" if s.get("stopped_by_budget_s") else f" of {s['total_steps']:,}")
        if s.get("epochs"):
            # the data cursor's count where the checkpoint has it: a run whose batch changed (a fork with another
            # batch, other processes) is not at step / total_steps of its epochs
            seen = s.get("epochs_seen")
            seen = s["epochs"] * s["step"] / s["total_steps"] if seen is None else seen
            where += f" ({seen:.1f} of {s['epochs']:g} epochs)"
        state = ("finished" if s["finished"] else
                 f"finished: compare's budget of {s['stopped_by_budget_s'] / 60:g} min (the step count is a cap)"
                 if s.get("stopped_by_budget_s") else f"unfinished: introvae train --resume {s['run']}")
        if "seconds_left" in s:
            state += (f" (about {duration_words(s['seconds_left'])} left at {s['seconds_left_rate']:.1f} img/s, "
                      "its last logged rate)")
        lines.append(f"  progress     {where}; {state}")
    elif s.get("checkpoints") == 0:
        lines.append("  progress     no readable checkpoint yet")
    if "last_log" in s:
        r = s["last_log"]
        kls = " / ".join(f"{k} {r[f'kl_{k}']:.1f}" for k in ("real", "rec", "fake") if r.get(f"kl_{k}") is not None)
        parts = [f"reconstruction {r['reconstruction']:.2f}" if r.get("reconstruction") is not None else None,
                 f"KL {kls}" if kls else None, f"margin {r['margin']:.1f}" if r.get("margin") is not None else None,
                 f"lr {r['lr']:.3g}" if r.get("lr") is not None else None,
                 f"{r['images_per_s']:.1f} img/s" if r.get("images_per_s") else None]
        lines.append(f"  last log     step {r['step']:,}: " + ", ".join(p for p in parts if p))
    if "training_seconds_by_machine" in s:
        machines = s["training_seconds_by_machine"]
        total = s.get("training_seconds", sum(machines.values()))
        parts = ("; ".join(f"{words} {duration_words(sec)}" for words, sec in machines.items()) if recorded(machines)
                 else "the machines not recorded (introvae 0.7.13 and before)")
        before = s.get("forked_from", {}).get("training_seconds")
        whose = f"; {duration_words(before)} of it in its source, before the fork" if before is not None else ""
        lines.append(f"  trained      {duration_words(total)} (from its logged rates{whose}): {parts}")
    if s.get("last_session"):
        ls = s["last_session"]
        lines.append(f"  last call    {ls['started']}, from step {ls['step']:,}, on {ls['device']} in {ls['precision']}, "
                     f"{ls['threads']} thread(s), {ls['processes']} process(es), introvae {ls['introvae']} "
                     f"({s['sessions']} call(s) in all)")
    if "forked_from" in s:
        lines.append(f"  forked from  {s['forked_from']['checkpoint']} (step {s['forked_from']['step']:,})")
    for step, changed in _changes_by_step(s.get("changes", [])):
        lines.append(f"  changed      at step {step:,}: {changed}")
    if s.get("checkpoints"):
        lines.append(f"  checkpoints  {s['checkpoints']}, newest {s.get('newest_checkpoint', '(none readable)')}"
                     + (f" (written by introvae {s['written_by']})" if s.get("written_by") else ""))
    if s.get("pictures"):
        lines.append("  pictures     " + ", ".join(s["pictures"]))
    if "scores" in s:
        sc = s["scores"]
        lines.append(f"  scores       KL {sc['kl']:.3f}, JSD {sc['jsd']:.3f} (the Soft-IntroVAE authors' way); "
                     f"textbook JSD {sc['jsd_textbook']:.4f}")
    evaluations = s.get("evaluations", [])
    if evaluations:
        shown = evaluations[-EVALUATIONS_SHOWN:]
        lines.append(f"  evaluations  {len(evaluations)}" + (f", the last {len(shown)}:" if len(shown) < len(evaluations)
                                                             else ":"))
        lines += [f"    {_evaluation_words(e)}" for e in shown]
    if s.get("last_evaluation_during_training"):
        lines.append(f"  during training: {_evaluation_words(s['last_evaluation_during_training'])}")
    return "\n".join(lines)


def _changes_by_step(changes: list[dict]) -> list[tuple[int, str]]:
    """("field from -> to; ...") per step at which a fork or a resume changed settings, in order."""
    by_step: dict[int, list[str]] = {}
    for c in changes:
        by_step.setdefault(int(c["step"]), []).append(f"{c['field']} {c['from']} -> {c['to']}")
    return [(step, "; ".join(words)) for step, words in by_step.items()]


def _format_compare(s: dict) -> str:
    from .compare import NAMES

    state = ("its table, compare.md:" if s["table"] else
             "not finished (no compare.md yet): the same introvae compare command resumes it")
    lines = [f"{s['compare_folder']}: a folder of introvae compare, {len(s['runs'])} run(s); {state}"]
    if s["table"]:
        lines += [f"  {line}" for line in s["table"].strip().splitlines() if line.strip()]
    for r in s["runs"]:
        where = f"step {r['step']:,}" if "step" in r else "no readable checkpoint yet"
        state = ("finished" if r.get("finished") or r.get("stopped_by_budget_s") else
                 f"{duration_words(r['seconds_left'])} left at its last rate" if "seconds_left" in r else "unfinished")
        lines.append(f"  {Path(r['run']).name:18s} {NAMES.get(r['objective'], r['objective'])}, {where}, {state}")
    return "\n".join(lines)


def _format_evaluations(s: dict) -> str:
    models = s["models"]
    runs = {str(Path(m).parent.parent) for m in models}
    one_run = len(runs) == 1 and all(Path(m).parent.name == "checkpoints" for m in models)
    if len(models) == 1:
        of = f" of {models[0]}"
    elif len(models) > 1:
        of = f" of {len(models)} checkpoints of {runs.pop()}" if one_run else f" of {len(models)} models"
    else:
        of = ""
    lines = [f"{s['evaluations_folder']}: {len(s['evaluations'])} evaluation(s){of}"]
    lines += [f"    {_evaluation_words(e)}" for e in s["evaluations"]]
    for p in s["in_progress"]:
        kind = p["file"].split("-partial-")[0].replace("-", " ")
        lines.append(f"  unfinished   {kind}: {p['done']:,} of {p['total']:,} images so far (running now, or "
                     "stopped: the same evaluate command resumes there)")
    return "\n".join(lines)


def _format_model(s: dict, name: str) -> str:
    likelihood = ", a Bernoulli decoder" if s.get("likelihood") == "bernoulli" else ""
    lines = [f"{s['folder']}: the exported model \"{s['name']}\", {name or 'objective not recorded'} on "
             f"{s['data'] or 'data not recorded'} ({s['image_size']} px, "
             f"{s['in_channels']} channel(s), latent size {s['latent_dim']}{likelihood})"]
    t = s.get("training", {})
    said = [f"step {int(t['step']):,}" if t.get("step", "").isdigit() else None,
            f"the {t['generator']} generator" if t.get("generator") else None,
            f"on {t['trained on']}" if t.get("trained on") else t.get("training time (from its logged rates)")]
    if any(said):
        lines.append("  trained      " + ", ".join(w for w in said if w))
    if t.get("from"):
        lines.append(f"  from         {t['from']}")
    m = s.get("metrics", {})
    if m:
        words = ", ".join(f"FID {v:.2f}" if k == "fid" else f"{k} {v:.3f}"
                          for k, v in m.items() if isinstance(v, (int, float)))
        proto = _protocol_words(s.get("protocol", {}))
        at = f" at step {s['evaluated_at_step']:,}" if "evaluated_at_step" in s else ""
        lines.append(f"  metrics      {words}{proto}{at}")
    else:
        lines.append("  metrics      not evaluated")
    stored = t.get("weights", "")
    size = s["weights_bytes"]
    size = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
    lines.append(f"  weights      model.safetensors, {size}" + (f" ({stored})" if stored else ""))
    if s.get("pictures"):
        lines.append("  pictures     " + ", ".join(s["pictures"]))
    lines.append(f"  use          introvae sample {s['model']} -n 16 -o samples.png; introvae serve {s['model']}")
    return "\n".join(lines)


def _evaluation_words(e: dict) -> str:
    parts = [f"FID {e['fid']:.2f}" if e.get("fid") is not None else None,
             f"precision {e['precision']:.3f}" if e.get("precision") is not None else None,
             f"recall {e['recall']:.3f}" if e.get("recall") is not None else None,
             f"PSNR {e['psnr']:.2f} dB" if e.get("psnr") is not None else None]
    protocol = _protocol_words(e)
    step = f"step {e['step']:,}: " if e.get("step") is not None else ""
    return step + (", ".join(p for p in parts if p) or "no FID") + protocol


def _protocol_words(p: dict) -> str:
    """" (10,000 samples vs 10,000 test images, fp32 features)" from a protocol's (or an evaluation's) fields."""
    if not (p.get("num_samples") and p.get("ref_images")):
        return ""
    return (f" ({p['num_samples']:,} samples vs {p['ref_images']:,} {p.get('ref_split')} images, "
            f"{p.get('feature_precision')} features)")
