"""Curves: the KL of real, reconstructed and sampled images against the margin (Fig. 5), and a run's scores
against the step."""

from __future__ import annotations

from pathlib import Path


def draw_kl(ax, rows: list[dict], *, margin: float | str | None, warmup_steps: int = 0,
            linewidth: float = 1.5) -> None:
    """Fig. 5 on one matplotlib axis: ``kl_real``, ``kl_rec`` and ``kl_fake`` of the stats rows, the margin (a number:
    a line; ``auto``: the rows' ``margin`` as it moved; None: none) and the VAE warm-up shaded."""
    for key, label, color in (("kl_real", "real", "tab:blue"), ("kl_rec", "reconstructed", "tab:orange"),
                              ("kl_fake", "sampled", "tab:green")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=f"KL {label}", color=color, linewidth=linewidth)
    if margin == "auto":
        pts = [(r["step"], r["margin"]) for r in rows if r.get("margin") is not None]
        if pts:
            ax.plot(*zip(*pts), color="k", linestyle="--", linewidth=1, label=f"margin m (auto), now {pts[-1][1]:.3g}")
    elif margin is not None:
        ax.axhline(margin, color="k", linestyle="--", linewidth=1, label=f"margin m = {margin:g}")
    if warmup_steps:
        ax.axvspan(0, warmup_steps, color="0.9", label="VAE warm-up (alpha = 0)")
    for step, before, after in alpha_switches(rows):
        ax.axvline(step, color="0.4", linestyle=":", linewidth=1, label=f"alpha {before:g} -> {after:g}")


def alpha_switches(rows: list[dict]) -> list[tuple[int, float, float]]:
    """(step, alpha before, alpha after) wherever the game's alpha changes between two stats rows (the end of
    --alpha-early-epochs); step is the last logged step of the old alpha (the switch follows it, before the next
    row). The start of the game after the warm-up (alpha 0) is not one."""
    found, last, last_step = [], None, 0
    for r in rows:
        a = r.get("alpha")
        if a:  # None (Soft-IntroVAE) and 0 (the warm-up) are not the game's alpha
            if last is not None and a != last:
                found.append((last_step, last, a))
            last, last_step = a, r["step"]
    return found


def plot_kl(rows: list[dict], path: str | Path, *, margin: float | str | None, warmup_steps: int = 0,
            title: str = "", fids: list[tuple[int, float]] = ()) -> Path:
    """Plot ``kl_real``, ``kl_rec``, ``kl_fake`` (and the reconstruction error) from stats rows, and the
    (step, FID) pairs of evaluations during training beside them. ``margin``: a number (a line), ``auto`` (the
    rows' ``margin``, as it moved) or None (an objective without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "kl_real" in r]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3 if fids else 2, figsize=(16 if fids else 11, 4))
    ax, ax2 = axes[0], axes[1]
    draw_kl(ax, rows, margin=margin, warmup_steps=warmup_steps)
    ax.set_xlabel("step")
    ax.set_ylabel("KL to the prior (nats)")
    ax.set_title(title or "IntroVAE: encoder KL of real / reconstructed / sampled images")
    ax.legend(loc="best", fontsize=8)
    if fids:
        axes[2].plot(*zip(*fids), marker="o", color="tab:purple")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("FID")
        axes[2].set_title("FID over training (lower is better)")
    ax2.plot(steps, [r["reconstruction"] for r in rows], color="tab:red")
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("L_AE (1/2 sum of squared errors)")
    ax2.set_title("reconstruction error")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path



def plot_scores(rows: list[tuple[int, dict]], path: str | Path, *, title: str = "") -> Path:
    """FID, precision and recall, and the held-out reconstructions' PSNR, against the step: one point per
    (step, evaluate result row), e.g. every checkpoint of a run scored alike (``evaluate --every-checkpoint``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(get):
        pts = []
        for step, row in rows:
            try:
                pts.append((step, get(row["metrics"])))
            except (KeyError, TypeError):  # a metric this row did not measure
                continue
        return pts

    panels = [("FID (lower is better)", [("FID", "tab:purple", lambda m: m["fid"]["value"])]),
              ("precision and recall (higher is better)",
               [("precision", "tab:blue", lambda m: m["precision_recall"]["precision"]),
                ("recall", "tab:orange", lambda m: m["precision_recall"]["recall"])]),
              ("held-out reconstructions (posterior mean)",
               [("PSNR (dB)", "tab:red", lambda m: m["reconstruction"]["posterior_mean"]["psnr"])])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (name, lines) in zip(axes, panels):
        for label, color, get in lines:
            pts = series(get)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=label)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    samples = {row["metrics"]["fid"]["samples"] for _, row in rows if "fid" in row.get("metrics", {})}
    if title or samples:
        fig.suptitle(title + (f" (FID of {', '.join(f'{n:,}' for n in sorted(samples))} samples)" if samples else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
