"""Soft-IntroVAE (SOFT_INTROVAE.md) as one more objective: its two phases on hand-made inputs, one step against
a plain-tensor reference, and short runs through the trainer. (Its gradient routing is tested beside
IntroVAE's, in test_objectives.py.)"""

import contextlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from introvae import IntroVAE, checkpoint
from introvae.config import TrainConfig
from introvae.errors import ConfigError
from introvae.objectives import Pass, SoftIntroVAELoss, VAELoss, make_objective, squared_error
from introvae.stats import read_stats
from introvae.step import TrainStep
from introvae.trainer import Trainer, resume

from conftest import model_and_reference, tiny_config


def _soft(**kw):
    return SoftIntroVAELoss(**{"beta_rec": 0.7, "beta_kl": 1.3, "beta_neg": 2.0, "gamma_r": 0.3, **kw})


def test_squared_error_is_the_plain_sum_per_image():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.stack([torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), torch.ones(1, 2, 2)])
    assert torch.equal(squared_error(y, x), torch.tensor([30.0, 4.0]))  # no 1/2, unlike Eq. 10


def test_both_phases_on_hand_made_inputs():
    """Stand-in networks: the encoder reads mu off the image's two pixels (logvar 0), the decoder doubles z, the
    noise is 0. An image y then has KL(y) = |y|^2 / 2, and going once through the VAE gives 2y, so
    rec(y, G(E(y))) = |y|^2 = 2 KL(y). x_r has KL [4, 12], x_p [9, 9], the real images KL [1, 3]; s = 1/2."""
    encoder = lambda t: (t.flatten(1), torch.zeros_like(t.flatten(1)))  # noqa: E731
    decoder = lambda z: 2 * z.view(-1, 1, 1, 2)  # noqa: E731
    nets = SimpleNamespace(encoder=encoder, decoder=decoder, generated=contextlib.nullcontext,
                           posterior=contextlib.nullcontext)
    img = lambda *kls: torch.tensor([[(2 * k) ** 0.5, 0.0] for k in kls]).view(-1, 1, 1, 2)  # noqa: E731
    f = Pass(x=torch.zeros(2, 1, 1, 2), mu=torch.tensor([[2 ** 0.5, 0.0], [6 ** 0.5, 0.0]]), logvar=torch.zeros(2, 2),
             x_r=img(4.0, 12.0), x_p=img(9.0, 9.0), noise=torch.zeros)
    b_rec, b_kl, b_neg, g_r, s = 0.7, 1.3, 2.0, 0.3, 0.5
    rec_real = (8.0 + 24.0) / 2  # rec(x, x_r) = |x_r|^2 = 2 KL(x_r), averaged
    elbo = lambda kl: b_rec * 2 * kl + b_neg * kl  # noqa: E731  # ELBO-loss of a generated image of that KL
    exp_r = (math.exp(-2 * s * elbo(4.0)) + math.exp(-2 * s * elbo(12.0))) / 2
    exp_p = math.exp(-2 * s * elbo(9.0))
    le, logged = _soft().encoder_phase(nets, f)
    assert le.item() == pytest.approx(s * (b_rec * rec_real + b_kl * 2.0) + 0.25 * (exp_r + exp_p), rel=1e-6)
    assert logged["kl_rec"].item() == pytest.approx(8.0) and logged["kl_fake"].item() == pytest.approx(9.0)
    assert logged["exp_elbo"].item() == pytest.approx((exp_r + exp_p) / 2, rel=1e-6)
    assert logged["reconstruction"].item() == pytest.approx(rec_real / 2)  # logged as Eq. 10, like the others
    lg, _ = _soft().generator_phase(nets, f)
    # s (beta_rec rec(x, x_r) + beta_kl/2 (KL_r + KL_p) + gamma_r beta_rec/2 (rec(x_r, .) + rec(x_p, .)))
    expected = s * (b_rec * rec_real + b_kl * 0.5 * (8.0 + 9.0) + g_r * b_rec * 0.5 * (16.0 + 18.0))
    assert lg.item() == pytest.approx(expected, rel=1e-6)
    assert SoftIntroVAELoss.phases == {"encoder": "encoder", "generator": "decoder"}


def _kl(mu, logvar):
    return 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)


def _sq(a, b):
    return ((a - b) ** 2).sum(dim=(1, 2, 3))


@pytest.mark.parametrize("target_grad", [False, True])
def test_one_step_matches_a_plain_tensor_reference(target_grad):
    """SOFT_INTROVAE.md's two phases written out with autograd.grad and hand SGD updates, against TrainStep; with
    ``target_grad`` the re-reconstruction of x_r is compared with x_r undetached, as in the authors' code."""
    cfg, model, ref, x = model_and_reference()
    b_rec, b_kl, b_neg, g_r, lr = 0.7, 1.3, 2.0, 0.3, 0.05
    s = 1.0 / (16 * 16)

    torch.manual_seed(123)
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=lr)
    opt_g = torch.optim.SGD(model.decoder.parameters(), lr=lr)
    out = TrainStep(model, {"encoder": opt_e, "decoder": opt_g})(_soft(target_grad=target_grad), x)

    torch.manual_seed(123)  # the same draws in the same order: z, z_p, then one per re-encoded batch
    E, G = ref.encoder, ref.decoder
    mu, logvar = E(x)
    x_r = G(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
    x_p = G(torch.randn_like(mu))

    def through(y, detach):
        m, lv = E(y)
        z = m + torch.exp(0.5 * lv) * torch.randn_like(m)
        return _kl(m, lv), G(z.detach() if detach else z)

    rec = _sq(x_r, x).mean()
    kl_r, x_rr = through(x_r.detach(), False)
    kl_p, x_pr = through(x_p.detach(), False)

    def encoder_loss(target_r):
        exp_term = (torch.exp(-2 * s * (b_rec * _sq(x_rr, target_r) + b_neg * kl_r)).mean()
                    + torch.exp(-2 * s * (b_rec * _sq(x_pr, x_p.detach()) + b_neg * kl_p)).mean())
        return s * (b_rec * rec + b_kl * _kl(mu, logvar).mean()) + 0.25 * exp_term

    l_e = encoder_loss(x_r if target_grad else x_r.detach())
    if target_grad:  # the same value, but the gradient also reaches E through the target x_r = G(reparam(E(x)))
        paper = torch.autograd.grad(encoder_loss(x_r.detach()), list(E.parameters()), retain_graph=True)
        authors = torch.autograd.grad(l_e, list(E.parameters()), retain_graph=True)
        assert not all(torch.allclose(a, b) for a, b in zip(paper, authors))
    g_e = torch.autograd.grad(l_e, list(E.parameters()), retain_graph=True)
    with torch.no_grad():
        for p, g in zip(E.parameters(), g_e):
            p -= lr * g
    kl_r2, x_rr2 = through(x_r, True)
    kl_p2, x_pr2 = through(x_p, True)
    rec_r2, rec_p2 = _sq(x_rr2, x_r.detach()), _sq(x_pr2, x_p.detach())
    l_g = s * (b_rec * rec + b_kl * 0.5 * (kl_r2.mean() + kl_p2.mean()) + g_r * b_rec * 0.5 * (rec_r2.mean()
                                                                                              + rec_p2.mean()))
    g_g = torch.autograd.grad(l_g, list(G.parameters()))
    with torch.no_grad():
        for p, g in zip(G.parameters(), g_g):
            p -= lr * g

    assert out["loss_encoder"].item() == pytest.approx(l_e.item(), rel=1e-5)
    assert out["loss_generator"].item() == pytest.approx(l_g.item(), rel=1e-5)
    ours, theirs, initial = model.state_dict(), ref.state_dict(), IntroVAE(cfg.model).state_dict()
    for k in ours:
        if k.endswith(("running_mean", "running_var", "num_batches_tracked", "posterior_stats", "posterior_steps")):
            continue  # the reference makes more passes in train mode (statistics are the step's own business)
        assert torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-6), k
    assert sum(not torch.equal(ours[k], initial[k]) for k in ours) > 0


def test_config_fields_warm_up_and_validation():
    cfg = tiny_config(objective="soft-introvae", beta_neg=64.0, gamma_r=0.0)
    soft = make_objective(cfg)
    assert isinstance(soft, SoftIntroVAELoss) and soft.beta_neg == 64.0 and soft.gamma_r == 0.0
    # the warm-up is the same VAE in Soft-IntroVAE's weights: s beta_kl (KL + (2 beta_rec / beta_kl) L_AE)
    warm = make_objective(tiny_config(objective="soft-introvae", beta_rec=0.5, beta_kl=2.0), warmup=True)
    assert isinstance(warm, VAELoss) and warm.beta == 0.5
    # ... on the authors' scale: beta_rec rec + beta_kl KL, batch means (Adam carries this scale into the game)
    g = torch.Generator().manual_seed(0)
    x, x_r = torch.rand(4, 1, 3, 3, generator=g), torch.rand(4, 1, 3, 3, generator=g)
    mu, logvar = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    f = Pass(x, mu, logvar, x_r)
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
    rec = (x_r - x).pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(warm.encoder_phase(None, f)[0], 0.5 * rec + 2.0 * kl, rtol=1e-6)
    assert torch.allclose(warm.generator_phase(None, f)[0], 0.5 * rec, rtol=1e-6)
    for field, value in (("beta_neg", -1.0), ("beta_kl", 0.0), ("beta_rec", float("nan")), ("objective", "soft")):
        with pytest.raises(ConfigError, match=f"^{field}"):
            tiny_config(**{field: value})


def _run(path, data, **kw):
    return Trainer(tiny_config(objective="soft-introvae", beta_neg=8.0, **kw), path, data=data,
                   show_progress=False, log=lambda s: None)


def test_a_short_run_logs_the_soft_terms_plots_without_a_margin_and_resumes_exactly(tmp_path, faces16):
    straight = _run(tmp_path / "a", faces16, steps=8, vae_steps=2, checkpoint_every=100)
    straight.train()
    rows = read_stats(tmp_path / "a")
    assert rows[0]["kl_fake"] is None and rows[-1]["kl_fake"] > 0 and 0 < rows[-1]["exp_elbo"] <= 1
    assert rows[0]["alpha"] == 0.0 and rows[-1]["alpha"] is None  # IntroVAE's alpha means nothing here
    assert (tmp_path / "a" / "kl.png").is_file()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["objective"] == "soft-introvae"
    first = _run(tmp_path / "b", faces16, steps=8, vae_steps=2, checkpoint_every=100)
    first.train(stop_after=5)
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    second.train()
    a, b = straight.run.model.state_dict(), second.run.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert checkpoint.latest(tmp_path / "b").name == "step-000000008.pt"


def test_the_fashion_preset_carries_the_authors_objective_with_our_batch_and_rate():
    from introvae import get_preset

    p = get_preset("fashion-mnist-soft")
    assert isinstance(p, TrainConfig) and p.objective == "soft-introvae" and p.data == "fashion-mnist"
    # the authors' objective and latent size, no warm-up
    assert (p.beta_kl, p.beta_rec, p.beta_neg, p.model.latent_dim, p.vae_steps) == (1.0, 1.0, 256.0, 32, 0)
    # the IntroVAE preset's batch, rate and Adam (measured against the authors' 128, 2e-4, 0.9)
    intro = get_preset("fashion-mnist")
    assert (p.batch_size, p.lr, p.adam_beta1, p.adam_beta2) == (16, 1e-3, 0.5, 0.999) == \
        (intro.batch_size, intro.lr, intro.adam_beta1, intro.adam_beta2)
