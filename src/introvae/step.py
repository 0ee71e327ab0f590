"""One training iteration of any objective: the generic machinery around an objective's phases.

:class:`TrainStep` runs the objective's shared forward pass, then each phase in order: its loss, a
backward pass into the phase's network only, and that network's optimiser step. Around this it puts
what every objective needs and none should spell out:

* the **divergence guard**: a non-finite loss or gradient skips the step of that phase (a failed first
  phase skips the whole iteration) and puts back the BatchNorm statistics the bad batch already changed.
  With optimisers that can skip a step on the device (fused Adam, as :func:`make_optimizers` builds them)
  this needs no host-device synchronisation: the verdict is a flag tensor (``found_inf``, the protocol of
  ``torch.amp.GradScaler``) and the statistics are put back with ``where``;
* **mixed precision**: the passes run under autocast, and under fp16 one GradScaler scales every phase's
  loss, steps every optimiser and is updated once per iteration. A gradient overflow is the scaler's
  business (reported as ``overflow``), a non-finite loss the guard's;
* **several processes**: the networks that a phase updates are called through their DistributedDataParallel
  wrappers, the noise is drawn for the global batch and sliced, and the guard's verdicts are agreed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from .blocks import batch_norms
from .distributed import SINGLE, World, agreed
from .generator_stats import posterior_statistics, tracked_statistics
from .precision import Precision


class TrainStep:
    """``step(objective, x)`` -> the detached values to log (fp32 scalars on the device), plus ``skipped``
    (1 when the guard skipped the last phase's update) and ``overflow`` (fp16: a phase's gradients overflowed).

    ``optimizers`` and ``wrappers`` map the network names ``encoder`` and ``decoder`` to their optimiser and
    to the module to call when a phase updates them (DistributedDataParallel or compiled; default: the network);
    ``frozen_wrappers`` to the module to call when a phase runs them frozen (compiled; default: the network).
    An objective runs the encoder's passes over generated images inside ``nets.generated()``: with
    ``real_statistics`` those passes leave the encoder's running statistics to the real images; with
    ``generated_norm`` "real" they are also normalised with them (BatchNorm as in eval mode), not by their own
    batch's statistics (config ``generated_norm``). It runs the
    generator's passes over the encoder's codes inside ``nets.posterior()``, which normalise with and update the
    generator's second set of BatchNorm statistics (:mod:`introvae.generator_stats`).
    """

    def __init__(self, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], *,
                 precision: Precision | None = None, world: World = SINGLE,
                 wrappers: dict[str, nn.Module] | None = None, frozen_wrappers: dict[str, nn.Module] | None = None,
                 guard: bool = True, real_statistics: bool = False, generated_norm: str = "batch"):
        self.networks = {"encoder": model.encoder, "decoder": model.decoder}
        self.wrappers = wrappers or self.networks
        self.frozen_wrappers = frozen_wrappers or self.networks
        self.optimizers, self.world, self.guard = optimizers, world, guard
        self.real_statistics = real_statistics  # the encoder's passes over generated images keep its running stats
        self.generated_norm = generated_norm  # "real": those passes normalise with the running (real) statistics
        self.precision = precision
        self.scaler = precision.scaler if precision else None
        self.norm_stats = {name: tracked_statistics(net) for name, net in self.networks.items()}

    def release_wrappers(self) -> None:
        """Call the plain networks from now on: drops the DistributedDataParallel (and compiled) wrappers, whose
        reducers hold the process group."""
        self.wrappers = self.frozen_wrappers = self.networks

    def __call__(self, objective, x: Tensor) -> dict[str, Tensor]:
        saved = {k: [b.clone() for b in v] for k, v in self.norm_stats.items()} if self.guard else {}
        with self._autocast():
            f = objective.forward(self._nets(updating=None), x, self._noise)
        ok = torch.ones((), dtype=torch.bool, device=x.device)
        self.overflow = torch.zeros((), device=x.device)
        logs, ok_per_network = {}, {}
        last = len(objective.phases) - 1
        for i, (phase, network) in enumerate(objective.phases.items()):
            others = [net for name, net in self.networks.items() if name != network]
            with frozen(*others), self._autocast():
                loss, values = getattr(objective, f"{phase}_phase")(self._nets(updating=network), f)
            ok = self._update(network, loss, ok, retain_graph=i < last)
            ok_per_network[network] = ok
            logs[f"loss_{phase}"] = loss.detach().float()
            logs.update({k: v.detach().float() for k, v in values.items()})
            # release this phase's own graph (its encoder passes over generated images) before the next phase runs:
            # retain_graph keeps only what the shared forward pass still references (a quarter of a 1024 px peak)
            del loss, values
        for network, stats in saved.items():  # where(), not a branch: no sync, and NaN statistics are replaced
            live = self.norm_stats[network]
            if live:  # networks without BatchNorm (the 2D MLPs) have none
                torch._foreach_copy_(live, [torch.where(ok_per_network[network], b, v)
                                            for b, v in zip(live, stats)])
        if self.scaler:
            self.scaler.update()  # once per iteration, after every optimiser
        return {**logs, "skipped": (~ok).float(), "overflow": self.overflow}

    def _update(self, network: str, loss: Tensor, ok: Tensor, *, retain_graph: bool) -> Tensor:
        """Back-propagate ``loss`` into ``network`` only and step its optimiser if ``ok`` and the guard agree."""
        opt, params = self.optimizers[network], list(self.networks[network].parameters())
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(self.scaler.scale(loss) if self.scaler else loss, inputs=params,
                                retain_graph=retain_graph)
        if not self.guard:
            self.scaler.step(opt) if self.scaler else opt.step()
            return ok
        if self.scaler:  # fp16: overflowing gradients are the scaler's to skip; the loss is the guard's
            self.scaler.unscale_(opt)
            ok = ok & agreed(torch.isfinite(loss.detach()).reshape(()), self.world)
            self.overflow = torch.maximum(self.overflow, (ok & ~finite(None, params)).float())
            if masks_steps(opt):  # fused Adam: the scaler hands found_inf to the kernel, no host read
                skip_in_scaler(self.scaler, opt, ~ok)
                self.scaler.step(opt)
            elif bool(ok):  # an optimiser that cannot skip on the device: decided on the host
                self.scaler.step(opt)
            return ok
        ok = ok & agreed(finite(loss, params), self.world)
        step_if(opt, ok)
        return ok

    def _nets(self, *, updating: str | None) -> SimpleNamespace:
        """The networks as a phase that updates ``updating`` calls them (the shared pass updates both)."""
        pick = lambda name: (self.wrappers if updating in (None, name) else self.frozen_wrappers)[name]  # noqa: E731
        encoder = self.networks["encoder"]
        generated = ((lambda: running_normalised(encoder)) if self.generated_norm == "real" else
                     (lambda: kept_statistics(encoder)) if self.real_statistics else contextlib.nullcontext)
        posterior = lambda: posterior_statistics(self.networks["decoder"])  # noqa: E731
        return SimpleNamespace(encoder=pick("encoder"), decoder=pick("decoder"), generated=generated,
                               posterior=posterior)

    def _autocast(self):
        return self.precision.autocast() if self.precision else contextlib.nullcontext()

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        """Standard normal noise for this process: its slice of the draw for the global batch, so that the
        draws do not depend on how the batch is split over processes (every process draws them all)."""
        device = next(self.networks["encoder"].parameters()).device
        if not self.world.enabled:
            return torch.randn(shape, device=device)
        b = shape[0]
        whole = torch.randn((b * self.world.size, *shape[1:]), device=device)
        return whole[self.world.rank * b:(self.world.rank + 1) * b]


@contextlib.contextmanager
def kept_statistics(*modules: nn.Module) -> Iterator[None]:
    """Passes through ``modules`` normalise with their batch's statistics as usual, but leave the BatchNorm
    running statistics unchanged (momentum 0: running = 1 * running + 0 * batch)."""
    norms = batch_norms(*modules)
    momenta = [n.momentum for n in norms]
    for n in norms:
        n.momentum = 0.0
    try:
        yield
    finally:
        for n, mom in zip(norms, momenta):
            n.momentum = mom


@contextlib.contextmanager
def running_normalised(*modules: nn.Module) -> Iterator[None]:
    """Passes through ``modules`` normalise with the BatchNorm layers' running statistics, as in eval mode, and
    leave them unchanged; gradients flow through as usual (the statistics are constants). Only the BatchNorm
    layers switch mode: the rest of the network stays as it is."""
    norms = [n for n in batch_norms(*modules) if n.training]
    for n in norms:
        n.train(False)
    try:
        yield
    finally:
        for n in norms:
            n.train(True)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Let gradients flow *through* ``modules`` but into none of their parameters, and keep their BatchNorm
    running statistics unchanged: a phase must not change the networks it does not update."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with kept_statistics(*modules):
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


def finite(loss: Tensor | None, params: list[nn.Parameter]) -> Tensor:
    """A 0-d bool tensor: whether ``loss`` and every gradient of ``params`` are finite (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    values = [n.float().reshape(()) for n in (torch._foreach_norm(grads) if grads else [])]
    if loss is not None:
        values.append(loss.detach().float().reshape(()))
    return torch.isfinite(torch.stack(values)).all()


def make_optimizers(model: nn.Module, *, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """One Adam optimiser per network (Section 4.1); fused where the device has the fused kernel, so that the
    divergence guard can skip a step on the device (see :func:`step_if`)."""
    def adam(params):
        params = list(params)  # tried twice: an iterator would be empty the second time
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
            return torch.optim.Adam(params, lr=lr, betas=betas)

    return {"encoder": adam(model.encoder.parameters()), "decoder": adam(model.decoder.parameters())}


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


def step_if(opt: torch.optim.Optimizer, ok: Tensor) -> None:
    """``opt.step()`` if ``ok`` else nothing at all (weights, moments and step count unchanged): decided on
    the device by the fused optimisers' ``found_inf`` flag, else read on the host."""
    if not masks_steps(opt):
        if bool(ok):
            opt.step()
        return
    opt.grad_scale, opt.found_inf = None, (~ok).float().reshape(())
    try:
        opt.step()
    finally:
        del opt.grad_scale, opt.found_inf


def skip_in_scaler(scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer, skip: Tensor) -> None:
    """Make the scaler's next ``step(opt)`` skip when ``skip`` (a bool tensor) holds, on the device: ``skip`` joins
    the inf/NaN flags ``unscale_`` recorded, which the scaler passes to a fused optimiser as ``found_inf`` (and
    counts at ``update()``, which lowers the scale as for an overflow)."""
    for flag in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values():
        flag.copy_(torch.maximum(flag, skip.to(flag.device, flag.dtype)))


class DivergenceGuard:
    """Counts, on the device, the steps the guard skipped: in a row now, and the longest run since the
    last check. The host reads them only at checks (every ``max_bad_steps`` steps and at log lines)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.in_a_row = torch.zeros((), device=self.device)
        self.worst = torch.zeros((), device=self.device)

    def record(self, skipped: Tensor) -> None:
        self.in_a_row = (self.in_a_row + 1.0) * skipped
        self.worst = torch.maximum(self.worst, self.in_a_row)

    def longest_run(self) -> int:
        """The longest run of skipped steps since the last call (one host read)."""
        worst = int(self.worst.item())
        self.worst = self.in_a_row.clone()
        return worst
