"""Models as the field shares them: a folder with ``config.json``, ``model.safetensors`` and a ``README.md`` model
card (the Hugging Face hub layout), loadable by a shipped model's name, a folder, or ``hf://OWNER/NAME``.

Shipped models live in the repository's ``models/`` folder (``$INTROVAE_MODELS`` overrides where to look);
``introvae models`` lists them with the metrics their cards record. ``hf://`` goes through
``huggingface_hub``'s download cache (the optional ``hub`` extra), so ``HF_HUB_OFFLINE=1`` works from a
filled cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError, UserError

CARD = "README.md"


def models_dir() -> Path:
    """Where shipped models are: ``$INTROVAE_MODELS``, else the repository's ``models/`` beside ``src/``."""
    env = os.environ.get("INTROVAE_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def shipped() -> dict[str, Path]:
    """Shipped model name -> its folder."""
    root = models_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "model.safetensors").is_file()}


def resolve(source: str | Path) -> Path:
    """A path for ``source``: an existing path as it is, ``hf://OWNER/NAME[@REVISION]`` from the hub's cache
    (downloading only where the hub is reachable and not offline), or a shipped model's name."""
    text = str(source)
    if text.startswith("hf://"):
        return _from_hub(text.removeprefix("hf://"))
    p = Path(source)
    if p.exists():
        return p
    models = shipped()
    if text in models:
        return models[text]
    known = f" (shipped models: {', '.join(models)})" if models else ""
    raise UserError(f"model not found: {text} is neither a path nor a shipped model's name{known}")


def _from_hub(repo: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError("hf:// models need the huggingface_hub package: pip install 'introvae[hub]'") from None
    repo_id, _, revision = repo.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None,
                                      allow_patterns=["config.json", "model.safetensors", CARD]))
    except Exception as e:  # noqa: BLE001 - offline with an empty cache, unknown repo, no network
        raise UserError(f"hf://{repo}: could not be loaded ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def check_folder(d: Path) -> None:
    """One clear line for a model folder whose files do not belong together (before loading any weight)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{d / 'model.safetensors'} cannot be read (truncated or not safetensors: "
                              f"{str(e).splitlines()[0]})") from None
    try:
        config = json.loads((d / "config.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{d / 'config.json'} is not valid JSON ({e})") from None
    out = shapes.get("decoder.to_image.weight")
    if out is not None and isinstance(config, dict) and "in_channels" in config and out[0] != config["in_channels"]:
        raise CheckpointError(f"{d}: config.json says {config['in_channels']} image channel(s) but the weights make "
                              f"{out[0]}; the files do not belong together")


def card_metadata(d: Path) -> dict:
    """The YAML header of a model card, as a dict (empty without a card)."""
    import yaml

    card = d / CARD
    if not card.is_file():
        return {}
    text = card.read_text()
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def _article(objective: str) -> str:
    """'An IntroVAE', 'A Soft-IntroVAE', 'A VAE': the objective's name with its article, for a card's first line."""
    name = {"introvae": "IntroVAE", "soft-introvae": "Soft-IntroVAE", "vae": "VAE"}.get(objective, objective)
    return f"{'An' if name[0] in 'AEIOU' else 'A'} {name}"


def write_card(d: Path, *, name: str, config: dict, run_config: dict | None, evaluation: dict | None,
               source: str, training: dict | None = None, commit: str | None = None, samples: str | None = None,
               limits: str = "") -> Path:
    """A ``README.md`` model card: YAML metadata (library, licence, data set, metrics), then what it is, the data,
    how it was trained (command, commit, time, machine), its metrics with their protocol, a picture, limits."""
    import yaml

    data = (run_config or {}).get("data") or "unknown"
    objective = (run_config or {}).get("objective", "introvae")
    metrics = []
    if evaluation:
        m, proto = evaluation.get("metrics", {}), evaluation.get("protocol", {})
        if "fid" in m:
            metrics.append({"type": "fid", "value": round(m["fid"]["value"], 2),
                            "name": f"FID ({proto.get('num_samples')} samples vs {proto.get('ref_images')} "
                                    f"{proto.get('ref_split')} images, {proto.get('feature_precision')} features)"})
        for k in ("precision", "recall"):
            if k in m.get("precision_recall", {}):
                metrics.append({"type": k, "value": round(m["precision_recall"][k], 4), "name": f"{k} (k = 5)"})
    meta = {"library_name": "introvae", "license": "mit", "objective": objective,  # the tags name the family only
            "tags": list(dict.fromkeys(["introvae", objective, "image-generation", "vae"])),
            "datasets": [data], "model-index": [{"name": name, "results": [{
                "task": {"type": "unconditional-image-generation"}, "dataset": {"name": data, "type": data},
                "metrics": metrics}]}]}
    proto = (evaluation or {}).get("protocol")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", "",
             f"{_article(objective)} model ({config.get('image_size')} px, {config.get('in_channels')} channel(s), "
             f"latent size {config.get('latent_dim')}"
             f"{', a Bernoulli decoder' if config.get('likelihood') == 'bernoulli' else ''}) trained with "
             f"[introvae](https://pypi.org/project/introvae/) on `{data}`.", "",
             "```python", "from introvae import load_model", f'model = load_model("{name}")   # or a path to this folder',
             "x = model.sample(16, seed=0)", "```", "", "## Training", "",
             f"* from: `{source}`" + (f", commit `{commit}`" if commit else "")]
    if training:
        lines += [f"* {k}: {v}" for k, v in training.items()]
    if run_config:
        keep = ("objective", "margin", "alpha", "alpha_early", "alpha_early_epochs", "beta", "beta_rec", "beta_kl",
                "beta_neg", "lr", "adam_beta1", "batch_size", "vae_steps", "seed", "mirror")
        lines.append("* settings: " + ", ".join(f"{k} {run_config[k]}" for k in keep if k in run_config))
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += [f"* {m['name']}: **{m['value']}**" for m in metrics]
        lines.append(f"* protocol: `{json.dumps(proto, sort_keys=True)}`")
        lines.append(f"* evaluated at step {evaluation.get('step')}")
    else:
        lines.append("Not evaluated.")
    if samples:
        lines += ["", "## Samples", "", f"![samples]({samples})"]
    lines += ["", "## Data and licence", "", _data_words(data), "", "## Limits and intended use", "",
              limits or "A research model for reproducing and comparing IntroVAE; small and trained briefly on a CPU. "
                        "Not for any decision about people.", ""]
    path = d / CARD
    path.write_text("\n".join(lines))
    return path


def _data_words(data: str) -> str:
    if data == "fashion-mnist":
        return ("Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence), from Debian's `dataset-fashion-mnist`: "
                "60,000 training images; the 10,000 test images score it.")
    if data == "faces":
        return ("100 faces of the LFW subset that scikit-image ships (Labeled Faces in the Wild; people photographed "
                "in the news, shared for research).")
    return f"The training data: `{data}`."
