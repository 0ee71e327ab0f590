"""The generator's BatchNorm statistics, one set per kind of code it decodes.

Algorithm 1 runs the generator G twice a step: on the encoder's codes of the batch (X_r = G(Z)) and on prior draws
(X_p = G(Z_p)). In training mode each pass is normalised by its own batch's statistics, as the paper's algorithm
does; but a BatchNorm layer keeps one set of running statistics, which both passes would update (about half each),
so that eval mode would normalise samples and reconstructions alike with a mix that neither pass saw. On
Fashion-MNIST that mix cost samples FID 31.99 against 18.02 with statistics of prior draws, and reconstructions
3 dB (docs/defaults-fashion-mnist.md, "The late drift is in the generator's BatchNorm statistics").

So the generator keeps two sets:

* the BatchNorm layers' own running statistics: the passes over **prior draws**, which eval mode, and so sampling,
  FID and every plain ``decoder(z)``, normalise with;
* ``Decoder.posterior_stats`` (one flat buffer): the passes over the **encoder's codes**, swapped into the layers
  around those passes in training (:func:`posterior_statistics`) and read by reconstructions, interpolations and
  edits of encoded images (:func:`posterior_generator`).

The VAE baseline trains on the encoder's codes only; it runs one more pass, over prior draws without gradients,
to track the statistics it samples with (objectives.VAELoss). The two-pass objectives' VAE warm-up has no pass over
prior draws and never swaps: its one set is the posterior codes'. ``posterior_steps`` counts the passes tracked into
the second set, and while it is 0 the running statistics serve both (so the game's first posterior pass starts from
the warm-up's statistics, and a VAE of 0.7.8 and before samples with its encoder codes' statistics, as it did).
Swapping copies values into the same buffer objects, so DistributedDataParallel, compiled networks and the EMA
generator (which averages every buffer) see nothing change but the values.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .blocks import batch_norms

_RUNNING = ("running_mean", "running_var")
POSTERIOR = "posterior_stats"
POSTERIOR_STEPS = "posterior_steps"


def _running(module: nn.Module) -> list[tuple[str, Tensor]]:
    """(name, buffer) of the running means and variances of every BatchNorm layer in ``module``, in module order."""
    return [(n, b) for n, b in module.named_buffers() if n.endswith(_RUNNING)]


def running_statistics(module: nn.Module) -> list[Tensor]:
    """The running means and variances of every BatchNorm layer in ``module``, in module order."""
    return [b for _, b in _running(module)]


def tracked_statistics(module: nn.Module) -> list[Tensor]:
    """Every statistic a training step changes (what the divergence guard puts back): the running ones, and a
    generator's second set with its count."""
    return running_statistics(module) + [b for n, b in module.named_buffers()
                                         if n.endswith((POSTERIOR, POSTERIOR_STEPS))]


def register(decoder: nn.Module) -> None:
    """Give ``decoder`` (built, with its BatchNorm layers) its second set, initialised as BatchNorm initialises."""
    live = running_statistics(decoder)
    decoder.register_buffer(POSTERIOR, torch.cat([b.detach().reshape(-1).clone() for b in live]))
    decoder.register_buffer(POSTERIOR_STEPS, torch.zeros((), dtype=torch.long))


def _copy_into(live: list[Tensor], flat: Tensor) -> None:
    # Through ``.data``, as BatchNorm's own kernel updates its running statistics: without a version bump, so that
    # the graphs of passes already made (which keep these tensors, and never read them in training mode) stay valid.
    torch._foreach_copy_([b.data for b in live], list(flat.split([b.numel() for b in live])))


@contextlib.contextmanager
def posterior_statistics(decoder: nn.Module) -> Iterator[None]:
    """Passes through ``decoder`` inside use and (in training mode) update its set for the encoder's codes; the
    running statistics of prior draws are as before afterwards. No host-device synchronisation. A network without
    the second set (the 2D benchmark's MLPs, a wrapper) is left alone."""
    flat = getattr(decoder, POSTERIOR, None)
    if not isinstance(flat, Tensor):
        yield
        return
    live = running_statistics(decoder)
    # a frozen pass (step.frozen: momentum 0) normalises with its batch as usual but tracks nothing
    updating = decoder.training and any(m.momentum != 0.0 for m in batch_norms(decoder))
    with torch.no_grad():
        prior = torch.cat([b.reshape(-1) for b in live])
        _copy_into(live, torch.where(getattr(decoder, POSTERIOR_STEPS) > 0, flat, prior))
    try:
        yield
    finally:
        with torch.no_grad():
            if updating:
                flat.data.copy_(torch.cat([b.reshape(-1) for b in live]))
                getattr(decoder, POSTERIOR_STEPS).data.add_(1)
            _copy_into(live, prior)


def posterior_generator(decoder: nn.Module) -> Callable[[Tensor], Tensor]:
    """``decoder`` as a function that normalises with its set for the encoder's codes (reconstructions,
    interpolations, edits of encoded images), for inference: through ``torch.func.functional_call``, so the
    network is not changed and concurrent callers (the explorer's) each see their own statistics. A network
    without the second set, or whose set was never tracked, is returned as it is."""
    flat = getattr(decoder, POSTERIOR, None)
    if not isinstance(flat, Tensor) or int(getattr(decoder, POSTERIOR_STEPS)) == 0:
        return decoder
    pairs = _running(decoder)
    # copies: a caller in training mode (evaluate --bn-protocol train) updates these, never the model's set
    own = {n: v.clone() for (n, _), v in zip(pairs, flat.split([b.numel() for _, b in pairs]))}
    return lambda z: torch.func.functional_call(decoder, own, (z,))


def posterior_copy(decoder: nn.Module) -> nn.Module:
    """A copy of ``decoder`` whose running statistics are its set for the encoder's codes, so that eval mode
    normalises every code, prior draws too, with them (``evaluate --bn-protocol posterior``). A network whose set was
    never tracked is copied as it is."""
    out = copy.deepcopy(decoder)
    flat = getattr(out, POSTERIOR, None)
    if isinstance(flat, Tensor) and int(getattr(out, POSTERIOR_STEPS)) > 0:
        with torch.no_grad():
            _copy_into(running_statistics(out), flat)
    return out


def kind(decoder: nn.Module) -> str:
    """``per-pass`` when ``decoder`` has tracked its second set (eval mode samples with the prior draws' statistics),
    else ``shared`` (one set: a VAE's of 0.7.8 and before, its encoder codes', or the mix of both passes in a
    two-pass model of 0.7.7 and before); evaluate stores it with the protocol."""
    steps = getattr(decoder, POSTERIOR_STEPS, None)
    return "per-pass" if isinstance(steps, Tensor) and int(steps) > 0 else "shared"


def fill_missing(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the second set of every generator in ``model`` that it lacks (checkpoints and exports of
    introvae 0.7.7 and before): a copy of its running statistics and a count of 0, so that such a model samples and
    reconstructs exactly as it did. Other keys are left for the strict check."""
    out = dict(state)
    for prefix, module in model.named_modules():
        if not isinstance(getattr(module, POSTERIOR, None), Tensor):
            continue
        p = f"{prefix}." if prefix else ""
        if p + POSTERIOR in out:
            continue
        names = [p + n for n, _ in _running(module)]
        if all(n in out for n in names):
            out[p + POSTERIOR] = torch.cat([out[n].reshape(-1).float() for n in names]).to(
                getattr(module, POSTERIOR).dtype)
            out[p + POSTERIOR_STEPS] = torch.zeros((), dtype=torch.long)
    return out
