import contextlib
import copy
import math

import pytest
import torch
from torch.nn import functional as F

from introvae import IntroVAE
from introvae.objectives import (IntroVAELoss, Pass, SoftIntroVAELoss, VAELoss, hinge, kl_divergence,
                                 reconstruction_loss)
from introvae.step import TrainStep

from conftest import model_and_reference, tiny_config


def _model(**kw):
    return IntroVAE(tiny_config(**kw).model)


def train_step(model, opt_e, opt_g, x, *, margin, alpha, beta, objective=None, **kw):
    """One Algorithm 1 iteration of IntroVAE (or the plain VAE when alpha is 0, or ``objective``) through the
    generic machinery."""
    if objective is None:
        objective = IntroVAELoss(margin=margin, alpha=alpha, beta=beta) if alpha > 0 else VAELoss(beta=beta)
    return TrainStep(model, {"encoder": opt_e, "decoder": opt_g}, **kw)(objective, x)


def test_kl_against_hand_computed_values():
    # sigma^2 = 1 and 4: 1/2 * [(1 + 1 - 0 - 1) + (4 + 4 - log 4 - 1)] = 4 - log 2
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    kl = kl_divergence(mu, logvar)
    assert torch.allclose(kl, torch.tensor([4 - math.log(2), 0.0]))
    # the prior itself has KL 0; the formula is computed in fp32 even from bf16 inputs
    assert kl_divergence(mu.bfloat16(), logvar.bfloat16()).dtype == torch.float32


def test_reconstruction_is_half_the_summed_squared_error_averaged_over_images():
    x = torch.zeros(2, 1, 2, 2)
    x_r = torch.stack([torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), torch.ones(1, 2, 2)])
    assert reconstruction_loss(x_r, x).item() == (0.5 * 30 + 0.5 * 4) / 2


def test_hinge_is_per_sample():
    kl = torch.tensor([2.0, 7.0, 12.0])
    assert torch.equal(hinge(10.0, kl), torch.tensor([8.0, 3.0, 0.0]))
    # a per-sample hinge differs from a hinge of the batch mean: mean([8, 3, 0]) = 11/3, not [10 - 7]+ = 3
    assert math.isclose(hinge(10.0, kl).mean().item(), 11 / 3, rel_tol=1e-6)


def test_eq_11_and_12_combine_the_terms_with_alpha_and_beta():
    """The two phases on hand-made inputs. The stand-in encoder reads mu off the image's two pixels (logvar 0),
    so an image (a, b) has KL (a^2 + b^2) / 2: chosen to give KL_r = [4, 12] and KL_p = [9, 9]."""
    from types import SimpleNamespace

    encoder = lambda t: (t.flatten(1), torch.zeros_like(t.flatten(1)))  # noqa: E731
    nets = SimpleNamespace(encoder=encoder, decoder=None, generated=contextlib.nullcontext,
                           posterior=contextlib.nullcontext)
    img = lambda *kls: torch.tensor([[(2 * k) ** 0.5, 0.0] for k in kls]).view(-1, 1, 1, 2)  # noqa: E731
    x = torch.zeros(2, 1, 1, 2)
    x_r, x_p = img(4.0, 12.0), img(9.0, 9.0)
    mu_real = torch.tensor([[2 ** 0.5, 0.0], [6 ** 0.5, 0.0]])  # KL_real = [1, 3]
    f = Pass(x=x, mu=mu_real, logvar=torch.zeros(2, 2), x_r=x_r, x_p=x_p)
    l_ae = 0.5 * (8.0 + 24.0) / 2  # Eq. 10: 1/2 sum (x_r - x)^2, averaged over the images
    objective = IntroVAELoss(margin=10.0, alpha=0.5, beta=2.0)
    # L_E = mean KL_real + alpha * (mean [m - KL_r]+ + mean [m - KL_p]+) + beta * L_AE, m = 10
    le, logged = objective.encoder_phase(nets, f)
    assert math.isclose(le.item(), 2.0 + 0.5 * ((6 + 0) / 2 + 1.0) + 2.0 * l_ae, rel_tol=1e-6)
    assert math.isclose(logged["kl_rec"].item(), 8.0, rel_tol=1e-6) and logged["kl_fake"].item() == pytest.approx(9)
    # L_G = alpha * (mean KL_r + mean KL_p) + beta * L_AE
    lg, _ = objective.generator_phase(nets, f)
    assert math.isclose(lg.item(), 0.5 * (8.0 + 9.0) + 2.0 * l_ae, rel_tol=1e-6)
    # each phase says which one network it updates
    assert objective.phases == {"encoder": "encoder", "generator": "decoder"} == VAELoss.phases


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("objective", [None, SoftIntroVAELoss(beta_rec=0.7, beta_kl=1.3, beta_neg=2.0, gamma_r=0.3)],
                         ids=["introvae", "soft-introvae"])
def test_encoder_step_reaches_only_the_encoder_and_generator_step_leaves_it_unchanged(objective):
    torch.manual_seed(0)
    model = _model()
    x = torch.rand(4, 1, 16, 16)
    seen = {}

    class Spy(torch.optim.SGD):
        def __init__(self, params, tag):
            super().__init__(params, lr=0.1)
            self.tag = tag

        def step(self, closure=None):
            seen[self.tag] = {
                "enc_grads": [p.grad is not None for p in model.encoder.parameters()],
                "dec_grads": [p.grad is not None for p in model.decoder.parameters()],
                "enc_state": _params(model.encoder),
            }
            return super().step(closure)

    opt_e, opt_g = Spy(model.encoder.parameters(), "E"), Spy(model.decoder.parameters(), "G")
    train_step(model, opt_e, opt_g, x, margin=5.0, alpha=0.25, beta=1.0, objective=objective)
    # Encoder phase: every encoder parameter has a gradient, no decoder parameter has one.
    assert all(seen["E"]["enc_grads"]) and not any(seen["E"]["dec_grads"])
    # Generator phase: every decoder parameter has a gradient (the encoder's: next test) ...
    assert all(seen["G"]["dec_grads"])
    # ... and the encoder (weights and BatchNorm statistics) is exactly as the encoder step left it.
    after = _params(model.encoder)
    for k, v in seen["G"]["enc_state"].items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, after[k]), k


@pytest.mark.parametrize("objective", [None, SoftIntroVAELoss(beta_rec=0.7, beta_kl=1.3, beta_neg=2.0, gamma_r=0.3)],
                         ids=["introvae", "soft-introvae"])
def test_generator_phase_puts_no_gradient_into_the_encoder(objective):
    torch.manual_seed(0)
    model = _model()
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=0.0)
    opt_g = torch.optim.SGD(model.decoder.parameters(), lr=0.1)
    enc_grads_after_e = {}
    orig_step = opt_e.step

    def record(*a, **k):
        enc_grads_after_e.update({n: p.grad.clone() for n, p in model.encoder.named_parameters()})
        return orig_step(*a, **k)

    opt_e.step = record
    train_step(model, opt_e, opt_g, torch.rand(4, 1, 16, 16), margin=5.0, alpha=0.25, beta=1.0,
               objective=objective)
    for n, p in model.encoder.named_parameters():
        assert torch.equal(p.grad, enc_grads_after_e[n]), n  # the G phase added nothing


def _kl(E, x):
    mu, logvar = E(x)
    return 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)


def test_one_step_matches_a_plain_tensor_reference_of_algorithm_1():
    """Algorithm 1 written out with autograd.grad and hand SGD updates, against train_step."""
    cfg, model, ref, x = model_and_reference()
    m, alpha, beta, lr = 3.0, 0.25, 0.7, 0.05

    torch.manual_seed(123)
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=lr)
    opt_g = torch.optim.SGD(model.decoder.parameters(), lr=lr)
    out = train_step(model, opt_e, opt_g, x, margin=m, alpha=alpha, beta=beta)

    torch.manual_seed(123)
    E, G = ref.encoder, ref.decoder
    mu, logvar = E(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    z_p = torch.randn_like(z)
    # G keeps one set of BatchNorm running statistics per pass: x_r's in posterior_stats, x_p's in the layers
    running = [b for n, b in G.named_buffers() if n.endswith(("running_mean", "running_var"))]
    before = [b.clone() for b in running]
    x_r = G(z)
    with torch.no_grad():
        G.posterior_stats.copy_(torch.cat([b.reshape(-1) for b in running]))
        G.posterior_steps += 1
        for b, v in zip(running, before):
            b.data.copy_(v)
    x_p = G(z_p)
    l_ae = 0.5 * ((x_r - x) ** 2).sum(dim=(1, 2, 3)).mean()
    kl_real = (0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)).mean()
    kl_r1, kl_p1 = _kl(E, x_r.detach()), _kl(E, x_p.detach())
    l_e = kl_real + alpha * (F.relu(m - kl_r1).mean() + F.relu(m - kl_p1).mean()) + beta * l_ae
    g_e = torch.autograd.grad(l_e, list(E.parameters()), retain_graph=True)
    with torch.no_grad():
        for p, g in zip(E.parameters(), g_e):
            p -= lr * g
    for mod in E.modules():  # the generator step must not move the encoder's BatchNorm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.0
    l_g = alpha * (_kl(E, x_r).mean() + _kl(E, x_p).mean()) + beta * l_ae
    g_g = torch.autograd.grad(l_g, list(G.parameters()))
    with torch.no_grad():
        for p, g in zip(G.parameters(), g_g):
            p -= lr * g

    assert math.isclose(out["loss_encoder"].item(), l_e.item(), rel_tol=1e-5)
    assert math.isclose(out["loss_generator"].item(), l_g.item(), rel_tol=1e-5)
    assert math.isclose(out["kl_rec"].item(), kl_r1.mean().item(), rel_tol=1e-5)
    ours, theirs = model.state_dict(), ref.state_dict()
    changed = 0
    for k in ours:
        assert torch.allclose(ours[k].float(), theirs[k].float(), rtol=1e-4, atol=1e-6), k
        changed += not torch.equal(ours[k], IntroVAE(cfg.model).state_dict()[k])
    assert changed > 0


def test_alpha_zero_is_a_plain_vae_step():
    torch.manual_seed(0)
    model = _model()
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=0.01)
    opt_g = torch.optim.SGD(model.decoder.parameters(), lr=0.01)
    out = train_step(model, opt_e, opt_g, torch.rand(4, 1, 16, 16), margin=5.0, alpha=0.0, beta=2.0)
    # L_E = KL + beta * L_AE (the ELBO), L_G = beta * L_AE; nothing is fed back through the encoder.
    assert math.isclose(out["loss_encoder"].item(), out["kl_real"].item() + 2.0 * out["reconstruction"].item(),
                        rel_tol=1e-6)
    assert math.isclose(out["loss_generator"].item(), 2.0 * out["reconstruction"].item(), rel_tol=1e-6)
    assert "kl_fake" not in out


def test_checkpointed_activations_give_the_same_step_and_count_each_batch_once():
    """--checkpoint-activations recomputes the residual blocks in backward: the same weights, gradients
    and BatchNorm statistics after two Algorithm 1 steps (the recomputation must not update them again)."""
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = _model().checkpoint_activations(on).train()
        assert all(b.checkpointed == on for b in model.modules() if hasattr(b, "checkpointed"))
        opt_e = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
        opt_g = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
        x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        for _ in range(2):
            out = train_step(model, opt_e, opt_g, x, margin=5.0, alpha=0.25, beta=1.0)
        results.append((model.state_dict(), out))
    (a, out_a), (b, out_b) = results
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=1e-5, atol=1e-6), name
    assert int(b["encoder.stem.1.num_batches_tracked"]) == int(a["encoder.stem.1.num_batches_tracked"]) > 0
    assert int(b["encoder.stages.1.bn1.num_batches_tracked"]) == int(a["encoder.stages.1.bn1.num_batches_tracked"])
    assert torch.allclose(out_a["loss_generator"], out_b["loss_generator"], rtol=1e-5)


def test_checkpointed_activations_keep_fewer_tensors_for_backward():
    from torch.autograd.graph import saved_tensors_hooks

    sizes = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = _model(image_size=32, channels=(8, 8, 8, 8)).checkpoint_activations(on).train()
        saved = []
        with saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            model.decoder(torch.randn(4, 8)).square().sum()
        sizes[on] = sum(saved)
    assert sizes[True] < 0.5 * sizes[False], sizes


def test_the_guard_skips_on_the_device_without_a_host_sync_when_the_optimisers_allow_it(monkeypatch):
    """With fused Adam (what make_optimizers builds) the guard decides with flags on the device:
    train_step reads no tensor on the host (bool(), item(), float() all raise here), and a NaN batch
    leaves weights, Adam state and BatchNorm statistics exactly as they were."""
    import pytest

    from introvae.step import make_optimizers, masks_steps

    torch.manual_seed(0)
    model = _model().train()
    opts = make_optimizers(model, lr=1e-3, betas=(0.9, 0.999))
    opt_e, opt_g = opts["encoder"], opts["decoder"]
    assert masks_steps(opt_e) and masks_steps(opt_g)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    train_step(model, opt_e, opt_g, x, margin=5.0, alpha=0.25, beta=1.0)  # Adam state exists from here on
    before = copy.deepcopy(model.state_dict())
    moments = copy.deepcopy([opt_e.state_dict()["state"], opt_g.state_dict()["state"]])

    def no_sync(*a, **k):
        raise AssertionError("host-device synchronisation in train_step")

    for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    out = train_step(model, opt_e, opt_g, torch.full_like(x, float("nan")), margin=5.0, alpha=0.25, beta=1.0)
    after_nan = copy.deepcopy(model.state_dict())
    moments_after_nan = copy.deepcopy([opt_e.state_dict()["state"], opt_g.state_dict()["state"]])
    good = train_step(model, opt_e, opt_g, x, margin=5.0, alpha=0.25, beta=1.0)
    monkeypatch.undo()
    with pytest.raises(AssertionError):  # the check above can fail: the sync path does read on the host
        monkeypatch.setattr(torch.Tensor, "__bool__", no_sync)
        train_step(model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                   torch.optim.SGD(model.decoder.parameters(), lr=0.1), x, margin=5.0, alpha=0.25, beta=1.0)
    monkeypatch.undo()

    assert float(out["skipped"]) == 1.0 and float(good["skipped"]) == 0.0
    for k, v in before.items():  # the NaN step changed nothing, BatchNorm statistics included
        if not k.endswith("num_batches_tracked"):  # a count of batches seen (used only with momentum=None)
            assert torch.equal(v, after_nan[k]), k
    for a, b in zip(moments, moments_after_nan):
        for sa, sb in zip(a.values(), b.values()):
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[key], sb[key]), key
    assert not torch.equal(before["decoder.to_image.weight"], model.state_dict()["decoder.to_image.weight"])


def test_real_statistics_leave_the_encoders_running_statistics_to_the_real_images():
    """With real_statistics (config encoder_stats = "real") the encoder's passes over generated images use their
    batch's statistics as before (same weights after the step) but do not move the running ones: those are
    exactly what one pass over the real batch gives."""
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    base = _model()
    states = {}
    for real in (False, True):
        model = copy.deepcopy(base).train()
        opts = {"encoder": torch.optim.SGD(model.encoder.parameters(), lr=0.05),
                "decoder": torch.optim.SGD(model.decoder.parameters(), lr=0.05)}
        torch.manual_seed(3)
        TrainStep(model, opts, real_statistics=real)(IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0), x)
        states[real] = model.state_dict()
    one_real_pass = copy.deepcopy(base.encoder).train()
    with torch.no_grad():
        one_real_pass(x)
    for name, v in one_real_pass.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            assert torch.allclose(states[True]["encoder." + name], v, atol=1e-6), name
            assert not torch.allclose(states[False]["encoder." + name], v, atol=1e-6), name
    for name, v in states[False].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.allclose(v, states[True][name], atol=1e-6), name


@pytest.mark.parametrize("objective", ["introvae", "soft-introvae"])
def test_generated_norm_real_judges_generated_images_with_the_real_images_running_statistics(objective):
    """With generated_norm "real" the encoder's passes over x_p (and x_r) are normalised as eval mode normalises:
    by the running statistics, which the shared pass has just updated with the real batch, not by x_p's own batch.
    The logged kl_fake is then what an eval-mode copy of the encoder gives x_p, image by image; with "batch" (the
    default) it is the train-mode batch's, which differs. The running statistics stay the real images'."""
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    base = _model().train()
    loss = (IntroVAELoss(margin=50.0, alpha=0.25, beta=1.0) if objective == "introvae" else
            SoftIntroVAELoss(beta_rec=1.0, beta_kl=1.0, beta_neg=256.0, gamma_r=1e-8))
    logged, states = {}, {}
    for norm in ("batch", "real"):
        model = copy.deepcopy(base)
        opts = {"encoder": torch.optim.Adam(model.encoder.parameters(), lr=1e-3),
                "decoder": torch.optim.Adam(model.decoder.parameters(), lr=1e-3)}
        torch.manual_seed(3)
        logged[norm] = TrainStep(model, opts, real_statistics=True, generated_norm=norm)(loss, x)
        states[norm] = model.encoder.state_dict()
    # by hand: the same draws (x_r's noise, then x_p's), the real pass first, then each kind of normalisation
    torch.manual_seed(3)
    torch.randn(6, base.config.latent_dim)
    z_p = torch.randn(6, base.config.latent_dim)
    encoder, decoder = copy.deepcopy(base.encoder).train(), copy.deepcopy(base.decoder).train()
    with torch.no_grad():
        x_p = decoder(z_p)
        encoder(x)                                       # the real pass: running statistics move to the real batch
        by_running = kl_divergence(*encoder.eval()(x_p)).mean()
        by_batch = kl_divergence(*encoder.train()(x_p)).mean()  # train mode: x_p's own batch (moves the statistics)
    assert torch.allclose(logged["real"]["kl_fake"], by_running, rtol=1e-5)
    assert torch.allclose(logged["batch"]["kl_fake"], by_batch, rtol=1e-5)
    assert not torch.allclose(by_batch, by_running, rtol=1e-2)
    one_real_pass = copy.deepcopy(base.encoder).train()
    with torch.no_grad():
        one_real_pass(x)
    for name, v in one_real_pass.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            assert torch.allclose(states["real"][name], v, atol=1e-6), name
    assert all(n.training for n in model.encoder.modules())  # every layer back in training mode


@pytest.mark.parametrize("objective", ["introvae", "soft-introvae"])
def test_both_phases_judge_generated_images_inside_nets_generated(objective, monkeypatch):
    """The encoder phase and the generator phase each run their encoder passes over generated images inside
    nets.generated(), so that --generated-norm acts on both (the encoder phase's values are checked above)."""
    import introvae.step as step_mod

    entered, inner = [], step_mod.running_normalised

    def counted(*modules):
        entered.append(len(entered))
        return inner(*modules)

    monkeypatch.setattr(step_mod, "running_normalised", counted)
    loss = (IntroVAELoss(margin=50.0, alpha=0.25, beta=1.0) if objective == "introvae" else
            SoftIntroVAELoss(beta_rec=1.0, beta_kl=1.0, beta_neg=256.0, gamma_r=1e-8))
    model = _model().train()
    opts = {"encoder": torch.optim.Adam(model.encoder.parameters()),
            "decoder": torch.optim.Adam(model.decoder.parameters())}
    TrainStep(model, opts, real_statistics=True, generated_norm="real")(loss, torch.rand(4, 1, 16, 16))
    assert len(entered) == 2


def test_running_normalised_lets_gradients_through_and_changes_no_statistics():
    from introvae.step import running_normalised

    encoder = _model().encoder.train()
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    before = copy.deepcopy(encoder.state_dict())
    with running_normalised(encoder):
        mu, _ = encoder(x)
        mu.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():  # per image: the same as one image at a time in eval mode
        with running_normalised(encoder):
            together = encoder(x)[0]
        alone = torch.cat([copy.deepcopy(encoder).eval()(x[i:i + 1])[0] for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert all(n.training for n in encoder.modules())


def test_the_encoder_phases_graph_is_released_before_the_generator_phase():
    """Only what the shared forward pass references stays alive into the generator phase (memory at 1024 px)."""
    import weakref

    from conftest import model_and_reference
    from introvae.objectives import make_objective
    from introvae.step import TrainStep, make_optimizers

    cfg, model, _, x = model_and_reference()
    objective = make_objective(cfg, margin=5.0)
    seen = {}
    encoder_phase, generator_phase = objective.encoder_phase, objective.generator_phase

    def watched_encoder(nets, f):
        loss, values = encoder_phase(nets, f)
        seen["loss"], seen["kl_fake"] = weakref.ref(loss), weakref.ref(values["kl_fake"])
        return loss, values

    def watched_generator(nets, f):
        seen["alive"] = (seen["loss"]() is not None, seen["kl_fake"]() is not None)
        return generator_phase(nets, f)

    objective.encoder_phase, objective.generator_phase = watched_encoder, watched_generator
    TrainStep(model, make_optimizers(model, lr=1e-3, betas=(0.9, 0.999)))(objective, x)
    assert seen["alive"] == (False, False)


def test_the_bernoulli_reconstruction_is_the_cross_entropy_on_pixels_in_0_1():
    x = torch.tensor([1.0, 0.0, 0.5]).view(1, 1, 1, 3)
    p = torch.tensor([0.8, 0.1, 0.5]).view(1, 1, 1, 3)
    expected = -(math.log(0.8) + math.log(0.9) + math.log(0.5))  # the grey pixel: -(0.5 log 0.5 + 0.5 log 0.5)
    assert math.isclose(reconstruction_loss(p, x, "bernoulli").item(), expected, rel_tol=1e-6)
    # a mean of exactly 0 or 1 is held 1e-6 away: a finite cost of -log(1e-6) per wrong pixel, never inf
    worst = reconstruction_loss(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2), torch.tensor([1.0, 0.0]).view(1, 1, 1, 2),
                                "bernoulli")
    assert math.isclose(worst.item(), -2 * math.log(1e-6), rel_tol=2e-3)  # 1 - 1e-6 rounds in fp32
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_loss(p, x, "laplace")


def test_the_objectives_take_the_decoders_likelihood():
    from introvae.errors import ConfigError
    from introvae.objectives import make_objective

    vae = make_objective(tiny_config(objective="vae", likelihood="bernoulli"))
    assert isinstance(vae, VAELoss) and vae.likelihood == "bernoulli"
    intro = make_objective(tiny_config(likelihood="bernoulli"))
    assert isinstance(intro, IntroVAELoss) and intro.likelihood == "bernoulli"
    assert make_objective(tiny_config(objective="vae")).likelihood == "gaussian"
    with pytest.raises(ConfigError, match="^likelihood: soft-introvae"):
        tiny_config(objective="soft-introvae", likelihood="bernoulli")
    with pytest.raises(ConfigError, match="^likelihood: must be one of gaussian, bernoulli"):
        tiny_config(likelihood="poisson")
