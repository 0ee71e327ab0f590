"""The losses of IntroVAE (Eq. 9-12) and one training iteration (Algorithm 1).

Every sum (KL, hinge, reconstruction) is taken in fp32, also under autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .distributed import SINGLE, World, agreed, all_true
from .model import IntroVAE, reparameterize
from .precision import Precision


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Eq. 9, per image: 1/2 * sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1). Shape (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def reconstruction_error(x_r: Tensor, x: Tensor) -> Tensor:
    """Eq. 10, per image: 1/2 * sum over all pixel values of (x_r - x)^2. Shape (B,)."""
    return 0.5 * (x_r.float() - x.float()).pow(2).flatten(1).sum(dim=1)


def reconstruction_loss(x_r: Tensor, x: Tensor) -> Tensor:
    """L_AE of a minibatch: Eq. 10 averaged over the images."""
    return reconstruction_error(x_r, x).mean()


def hinge(margin: float, kl: Tensor) -> Tensor:
    """Eq. 11's per-sample hinge [m - KL]+ (shape of ``kl``)."""
    return torch.clamp(margin - kl.float(), min=0.0)


def loss_encoder(kl_real: Tensor, kl_rec_ng: Tensor, kl_fake_ng: Tensor, l_ae: Tensor,
                 *, margin: float, alpha: float, beta: float) -> Tensor:
    """Eq. 11: L_E = L_REG(z) + alpha * sum_s [m - L_REG(E(ng(x_s)))]+ + beta * L_AE (batch means)."""
    adv = hinge(margin, kl_rec_ng).mean() + hinge(margin, kl_fake_ng).mean()
    return kl_real.mean() + alpha * adv + beta * l_ae


def loss_generator(kl_rec: Tensor, kl_fake: Tensor, l_ae: Tensor, *, alpha: float, beta: float) -> Tensor:
    """Eq. 12: L_G = alpha * sum_s L_REG(E(x_s)) + beta * L_AE (batch means)."""
    return alpha * (kl_rec.mean() + kl_fake.mean()) + beta * l_ae


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Let gradients flow *through* ``module`` but into none of its parameters, and keep its
    BatchNorm running statistics unchanged: the generator step must not change the encoder."""
    params = [p for p in module.parameters() if p.requires_grad]
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for p in params:
        p.requires_grad_(False)
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, mom in zip(norms, momenta):
            m.momentum = mom


def train_step(model: IntroVAE, opt_e: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, x: Tensor,
               *, margin: float, alpha: float, beta: float, guard: bool = True,
               precision: Precision | None = None, replicas: tuple[nn.Module, nn.Module] | None = None,
               world: World = SINGLE) -> dict[str, Tensor]:
    """One iteration of Algorithm 1: an encoder step, then a generator step.

    With ``guard``, a non-finite loss or gradient skips the update of that phase (and, in the
    encoder phase, of the whole step); ``out["skipped"]`` is then 1. With optimisers that can skip a
    step on the device (fused Adam, as ``make_optimizers`` builds them; not under fp16) this needs no
    host-device synchronisation: the skip is a flag tensor, the losses are still returned (the caller
    must ignore those of a skipped step) and the BatchNorm statistics are put back with ``where``.
    Other optimisers are checked on the host (one sync per phase) and a skipped step returns no losses.

    Returns detached fp32 scalars: loss_encoder, loss_generator, reconstruction, kl_real, and (when
    ``alpha > 0``) kl_rec, kl_fake: the encoder's KL of real, reconstructed and sampled images (Fig. 5).
    ``precision`` runs the networks under autocast; with fp16 its one GradScaler scales both losses,
    steps both optimisers and is updated once per iteration, after both steps. A gradient overflow
    under fp16 is the scaler's business (that phase is skipped, ``out["overflow"]`` is 1), not the guard's.
    With ``alpha == 0`` this is a plain VAE step (ELBO with weight ``beta`` on the reconstruction).

    Several processes (``world``): ``replicas`` are the DistributedDataParallel wrappers of E and G
    (see ``distributed.replicate``), used for every pass whose gradients reach that network's weights,
    so DDP averages them over the processes; ``x`` is this process's share of the global batch, and
    eps and z_p are drawn for the whole global batch and sliced the same way, so N processes with
    batch B compute what one process does with batch N*B (exactly so with ``--sync-bn``). The skip
    decisions of the guard are agreed between the processes.
    """
    E, G = model.encoder, model.decoder
    E_train, G_train = replicas if replicas is not None else (E, G)
    enc_params = [p for p in E.parameters()]
    dec_params = [p for p in G.parameters()]
    # A bad batch corrupts BatchNorm running statistics in the forward pass already, so the guard
    # keeps a copy of them to put back when it skips the step.
    stats = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    saved = [b.clone() for b in stats] if guard else []

    autocast = precision.autocast() if precision else contextlib.nullcontext()
    scaler = precision.scaler if precision else None
    overflow = torch.tensor(0.0)
    deferred = guard and scaler is None and masks_steps(opt_e) and masks_steps(opt_g)

    # Forward: Z <- reparam(E(X)); X_r <- G(Z); X_p <- G(Z_p).
    with autocast:
        mu, logvar = E_train(x)
        z = reparameterize(mu.float(), logvar.float(), eps=_noise(mu.shape, world, mu.device))
        x_r = G_train(z)
        introspective = alpha > 0
        if introspective:
            # Separate passes, as in Algorithm 1: each batch gets its own BatchNorm statistics.
            x_p = G_train(_noise(z.shape, world, z.device))
    kl_real = kl_divergence(mu, logvar)
    l_ae = reconstruction_loss(x_r, x)

    # Encoder step: ng() on X_r and X_p keeps L_E's adversarial part from reaching G.
    if introspective:
        with autocast:
            enc_rec, enc_fake = E_train(x_r.detach()), E_train(x_p.detach())
        kl_rec_ng, kl_fake_ng = kl_divergence(*enc_rec), kl_divergence(*enc_fake)
    else:
        kl_rec_ng = kl_fake_ng = torch.zeros_like(kl_real)
    l_e = loss_encoder(kl_real, kl_rec_ng, kl_fake_ng, l_ae, margin=margin, alpha=alpha, beta=beta)
    opt_e.zero_grad(set_to_none=True)
    # Gradients of L_E go to the encoder only; the graph through G is kept for G's step.
    torch.autograd.backward(scaler.scale(l_e) if scaler else l_e, inputs=enc_params, retain_graph=True)
    if scaler:
        scaler.unscale_(opt_e)
    if deferred:
        ok_e = agreed(finite(l_e, enc_params), world)
        masked_step(opt_e, ok_e)
    elif guard and not all_true(finite(l_e, enc_params), world, x.device):
        # A non-finite loss or gradient: update neither network with this batch.
        opt_e.zero_grad(set_to_none=True)
        torch._foreach_copy_(stats, saved)
        if scaler and bool(torch.isfinite(l_e)):  # fp16 overflow: the scaler lowers its scale
            scaler.update()
            return {"skipped": torch.tensor(0.0), "overflow": torch.tensor(1.0)}
        return {"skipped": torch.tensor(1.0), "overflow": overflow}
    else:
        scaler.step(opt_e) if scaler else opt_e.step()

    # Generator step: the second encoder pass runs *after* E's update (the authors' code
    # reuses the pre-update graph, which current PyTorch rejects as an in-place change).
    if introspective:
        with frozen(E), autocast:
            enc_rec, enc_fake = E(x_r), E(x_p)
        kl_rec, kl_fake = kl_divergence(*enc_rec), kl_divergence(*enc_fake)
    else:
        kl_rec = kl_fake = torch.zeros_like(kl_real)
    l_g = loss_generator(kl_rec, kl_fake, l_ae, alpha=alpha, beta=beta)
    opt_g.zero_grad(set_to_none=True)
    torch.autograd.backward(scaler.scale(l_g) if scaler else l_g, inputs=dec_params)
    if scaler:
        scaler.unscale_(opt_g)
    if deferred:
        ok_g = ok_e & agreed(finite(l_g, dec_params), world)
        masked_step(opt_g, ok_g)
        enc_stats = {id(b) for b in E.buffers()}
        for b, v in zip(stats, saved):  # where(), not a branch: no sync, and NaN statistics are replaced too
            b.copy_(torch.where(ok_e if id(b) in enc_stats else ok_g, b, v))
        skipped = (~ok_g).float()
    elif guard and not all_true(finite(l_g, dec_params), world, x.device):
        skipped = True
        opt_g.zero_grad(set_to_none=True)
        dec_stats = {id(b) for b in G.buffers()}
        for b, v in zip(stats, saved):
            if id(b) in dec_stats:  # the encoder's were updated legitimately in its own step
                b.copy_(v)
        if scaler and bool(torch.isfinite(l_g)):
            skipped, overflow = False, torch.tensor(1.0)
    else:
        skipped = False
        scaler.step(opt_g) if scaler else opt_g.step()
    if scaler:
        scaler.update()  # once per iteration, after both optimisers

    out = {
        "skipped": skipped if isinstance(skipped, torch.Tensor) else torch.tensor(float(skipped)),
        "overflow": overflow,
        "loss_encoder": l_e.detach(),
        "loss_generator": l_g.detach(),
        "reconstruction": l_ae.detach(),
        "kl_real": kl_real.detach().mean(),
    }
    if introspective:  # during the VAE warm-up nothing is fed back, so there is nothing to report
        out["kl_rec"] = kl_rec_ng.detach().mean()
        out["kl_fake"] = kl_fake_ng.detach().mean()
    return out


def finite(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    """A 0-d bool tensor: whether ``loss`` and every gradient of ``params`` are finite (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads) if grads else []
    return torch.isfinite(torch.stack([loss.detach().float().reshape(())] + [n.float() for n in norms])).all()


def _noise(shape: torch.Size, world: World, device: torch.device) -> Tensor:
    """Standard normal noise of ``shape`` for this process: its slice of the global batch's draw, so that
    the draws do not depend on how the batch is split over processes (every process draws them all)."""
    if not world.enabled:
        return torch.randn(shape, device=device)
    b = shape[0]
    return torch.randn((b * world.size, *shape[1:]), device=device)[world.rank * b:(world.rank + 1) * b]


def make_optimizers(model: IntroVAE, *, lr: float, betas: tuple[float, float]):
    """Two Adam optimisers, one per network (Section 4.1); fused, where the device has the fused kernel,
    so that the divergence guard can skip a step on the device (see :func:`masked_step`)."""
    def adam(params):
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
            return torch.optim.Adam(params, lr=lr, betas=betas)

    return adam(model.encoder.parameters()), adam(model.decoder.parameters())


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s fused kernel: a state saved by a non-fused Adam
    (older checkpoints) would otherwise switch it off, and with it the guard's skip on the device."""
    fused = [g.get("fused") for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, was_fused in zip(opt.param_groups, fused):
        if was_fused and not group.get("fused"):
            group["fused"], group["foreach"] = True, None
            for p in group["params"]:  # fused Adam keeps its step count beside the weights, in fp32
                st = opt.state.get(p, {})
                if "step" in st:
                    st["step"] = st["step"].to(p.device, torch.float32)


def masks_steps(opt: torch.optim.Optimizer) -> bool:
    """Whether ``opt`` can skip a step by a flag on the device (the protocol GradScaler uses)."""
    return bool(getattr(opt, "_step_supports_amp_scaling", False))


def masked_step(opt: torch.optim.Optimizer, ok: Tensor) -> None:
    """``opt.step()`` if ``ok`` else nothing at all (weights, moments and step count unchanged), decided
    on the device: the ``found_inf`` flag of the fused optimisers, as set by ``torch.amp.GradScaler``."""
    opt.grad_scale, opt.found_inf = None, (~ok).float().reshape(())
    try:
        opt.step()
    finally:
        del opt.grad_scale, opt.found_inf
