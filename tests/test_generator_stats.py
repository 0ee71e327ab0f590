"""The generator's BatchNorm statistics per kind of code (introvae.generator_stats): each pass of Algorithm 1 updates
its own set, eval mode samples with the prior draws' and reconstructs with the encoder codes' one."""

import copy

import torch

from introvae import IntroVAE
from introvae.ema import make_ema, update_ema
from introvae.generator_stats import POSTERIOR, POSTERIOR_STEPS, running_statistics
from introvae.model import load_state_strict
from introvae.objectives import IntroVAELoss, SoftIntroVAELoss, VAELoss
from introvae.posterior import reparameterize
from introvae.step import TrainStep

from conftest import tiny_config


def _model(seed=0):
    torch.manual_seed(seed)
    return IntroVAE(tiny_config().model).train()


def _flat(module):
    return torch.cat([b.reshape(-1) for b in running_statistics(module)])


def _sgd(model, lr=0.05):
    return {"encoder": torch.optim.SGD(model.encoder.parameters(), lr=lr),
            "decoder": torch.optim.SGD(model.decoder.parameters(), lr=lr)}


def _x():
    return torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _replay(base, x, seed):
    """What one IntroVAE step's two generator passes do to fresh copies: (posterior pass's, prior pass's) statistics."""
    enc, post, prior = (copy.deepcopy(m).train() for m in (base.encoder, base.decoder, base.decoder))
    torch.manual_seed(seed)  # TrainStep draws the reparameterisation noise, then the prior draws, from this RNG
    with torch.no_grad():
        mu, logvar = enc(x)
        post(reparameterize(mu, logvar, torch.randn(mu.shape)))
        prior(torch.randn(mu.shape))
    return _flat(post), _flat(prior)


def test_each_pass_of_algorithm_1_updates_its_own_set_of_the_generators_statistics():
    base, x = _model(), _x()
    model = copy.deepcopy(base)
    torch.manual_seed(3)
    TrainStep(model, _sgd(model))(IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0), x)
    want_posterior, want_prior = _replay(base, x, 3)
    assert torch.allclose(_flat(model.decoder), want_prior, atol=1e-6)  # what eval mode samples with
    assert torch.allclose(getattr(model.decoder, POSTERIOR), want_posterior, atol=1e-6)
    assert int(getattr(model.decoder, POSTERIOR_STEPS)) == 1
    assert not torch.allclose(want_posterior, want_prior, atol=1e-3)  # the check above can tell them apart


def test_soft_introvae_tracks_its_reencoding_passes_in_the_posterior_set_and_the_warm_up_keeps_one_set():
    x = _x()
    soft = _model()
    torch.manual_seed(3)
    TrainStep(soft, _sgd(soft))(SoftIntroVAELoss(beta_rec=1.0, beta_kl=1.0, beta_neg=1.0, gamma_r=1e-8), x)
    # the shared pass, then the generator phase's two re-encodings (the encoder phase runs G frozen: no update)
    assert int(getattr(soft.decoder, POSTERIOR_STEPS)) == 3
    assert not torch.allclose(getattr(soft.decoder, POSTERIOR), _flat(soft.decoder), atol=1e-3)

    base = _model()
    vae = copy.deepcopy(base)
    torch.manual_seed(3)
    TrainStep(vae, _sgd(vae))(VAELoss(beta=1.0), x)
    want_posterior, _ = _replay(base, x, 3)
    assert int(getattr(vae.decoder, POSTERIOR_STEPS)) == 0  # the warm-up has no prior pass: its one set is the posterior's
    assert torch.allclose(_flat(vae.decoder), want_posterior, atol=1e-6)


def test_the_vae_baseline_tracks_prior_draws_statistics_without_changing_its_training():
    base, x = _model(), _x()
    plain, tracked = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(3)
    TrainStep(plain, _sgd(plain))(VAELoss(beta=1.0), x)
    torch.manual_seed(3)
    TrainStep(tracked, _sgd(tracked))(VAELoss(beta=1.0, prior_statistics=True), x)
    want_posterior, want_prior = _replay(base, x, 3)  # its loss's pass, then one no-grad pass over prior draws
    assert torch.allclose(_flat(tracked.decoder), want_prior, atol=1e-6)
    assert torch.allclose(getattr(tracked.decoder, POSTERIOR), want_posterior, atol=1e-6)
    assert int(getattr(tracked.decoder, POSTERIOR_STEPS)) == 1
    # the prior pass is outside the loss: the same step of every weight as without it
    for (name, a), b in zip(plain.named_parameters(), tracked.parameters()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), base.parameters()))  # it did step
    assert not torch.allclose(want_posterior, want_prior, atol=1e-3)


def test_make_objective_gives_the_prior_pass_to_the_vae_baseline_only():
    from introvae.config import TrainConfig
    from introvae.objectives import make_objective
    vae = make_objective(TrainConfig(objective="vae"))
    assert isinstance(vae, VAELoss) and vae.prior_statistics
    assert make_objective(TrainConfig(objective="vae"), warmup=True).prior_statistics  # a VAE run is VAE throughout
    warmup = make_objective(TrainConfig(objective="introvae"), warmup=True, margin=5.0)
    assert isinstance(warmup, VAELoss) and not warmup.prior_statistics
    soft_warmup = make_objective(TrainConfig(objective="soft-introvae"), warmup=True)
    assert not soft_warmup.prior_statistics


def test_the_game_starts_its_posterior_set_from_the_warm_ups_statistics():
    x = _x()
    model = _model()
    torch.manual_seed(3)
    TrainStep(model, _sgd(model, 1e-3))(VAELoss(beta=1.0), x)
    after_warmup = _flat(model.decoder).clone()
    post = copy.deepcopy(model.decoder).train()
    enc = copy.deepcopy(model.encoder).train()
    torch.manual_seed(4)
    out = TrainStep(model, _sgd(model, 1e-3))(IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0), x)
    assert float(out["skipped"]) == 0.0
    torch.manual_seed(4)
    with torch.no_grad():
        mu, logvar = enc(x)
        post(reparameterize(mu, logvar, torch.randn(mu.shape)))  # from the warm-up's statistics, not from (0, 1)
    assert torch.allclose(getattr(model.decoder, POSTERIOR), _flat(post), atol=1e-6)
    assert not torch.allclose(getattr(model.decoder, POSTERIOR), after_warmup, atol=1e-4)


def test_eval_mode_samples_with_the_prior_set_and_reconstructs_with_the_posterior_set():
    model = _model()
    with torch.no_grad():
        for i, b in enumerate(running_statistics(model.decoder)):
            b.copy_(torch.rand(b.shape, generator=torch.Generator().manual_seed(i)) + 0.5)
    model.eval()
    x, z = _x(), torch.randn(3, 8)
    mu, _ = model.encode(x)
    untracked = model.reconstruct(x)
    assert torch.equal(untracked, model.decoder(mu))  # never tracked (a VAE, an old checkpoint): one set for both

    own = torch.rand(getattr(model.decoder, POSTERIOR).shape, generator=torch.Generator().manual_seed(9)) + 0.5
    getattr(model.decoder, POSTERIOR).copy_(own)
    getattr(model.decoder, POSTERIOR_STEPS).fill_(7)
    reference = copy.deepcopy(model.decoder)
    live = running_statistics(reference)
    torch._foreach_copy_(live, list(own.split([b.numel() for b in live])))
    before = copy.deepcopy(model.state_dict())
    assert torch.allclose(model.reconstruct(x), reference(mu), atol=1e-6)
    assert torch.allclose(model.decode(mu, encoded=True), reference(mu), atol=1e-6)
    assert torch.allclose(model.interpolate(x[0], x[1], 3)[[0, -1]], reference(mu[:2]), atol=1e-5)
    assert torch.equal(model.sample(z=z), model.decoder(z))  # prior draws: the layers' own statistics
    assert not torch.allclose(model.sample(z=z), reference(z), atol=1e-3)
    for k, v in model.state_dict().items():  # inference changed nothing
        assert torch.equal(v, before[k]), k


def test_checkpoints_without_the_second_set_load_and_behave_as_before():
    model = _model()
    TrainStep(model, _sgd(model))(IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0), _x())
    old = {k: v for k, v in model.state_dict().items() if not k.endswith((POSTERIOR, POSTERIOR_STEPS))}
    loaded = IntroVAE(tiny_config().model)
    load_state_strict(loaded, old, source="old")
    assert int(getattr(loaded.decoder, POSTERIOR_STEPS)) == 0
    assert torch.equal(getattr(loaded.decoder, POSTERIOR), _flat(model.decoder))
    ema = make_ema(loaded.decoder)
    load_state_strict(ema, {k[len("decoder."):]: v for k, v in old.items() if k.startswith("decoder.")}, source="ema")
    loaded.eval()
    x = _x()
    assert torch.equal(loaded.reconstruct(x), loaded.decoder(loaded.encode(x)[0]))


def test_the_guard_puts_back_the_posterior_set_and_the_ema_averages_it():
    model = _model()
    opts = _sgd(model, 1e-3)
    objective = IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0)
    TrainStep(model, opts)(objective, _x())
    before = {k: v.clone() for k, v in model.decoder.state_dict().items() if k.startswith("posterior")}
    out = TrainStep(model, opts)(objective, torch.full_like(_x(), float("nan")))
    assert float(out["skipped"]) == 1.0
    for k, v in before.items():
        assert torch.equal(model.decoder.state_dict()[k], v), k

    ema = make_ema(model.decoder)
    assert float(TrainStep(model, opts)(objective, _x())["skipped"]) == 0.0
    old = getattr(ema, POSTERIOR).clone()
    update_ema(ema, model.decoder, 0.75)
    want = 0.75 * old + 0.25 * getattr(model.decoder, POSTERIOR)
    assert torch.allclose(getattr(ema, POSTERIOR), want, atol=1e-6)
    assert int(getattr(ema, POSTERIOR_STEPS)) == int(getattr(model.decoder, POSTERIOR_STEPS)) == 2


def test_an_export_keeps_both_sets(tmp_path):
    model = _model()
    TrainStep(model, _sgd(model, 1e-3))(IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0), _x())
    model.save_pretrained(tmp_path / "m")
    loaded = IntroVAE.from_pretrained(tmp_path / "m")
    assert int(getattr(loaded.decoder, POSTERIOR_STEPS)) == 1
    assert torch.equal(getattr(loaded.decoder, POSTERIOR), getattr(model.decoder, POSTERIOR))
    assert torch.equal(_flat(loaded.decoder), _flat(model.decoder))
    x = _x()
    assert torch.equal(loaded.reconstruct(x), model.eval().reconstruct(x))


def test_the_posterior_protocol_samples_with_the_encoder_codes_statistics_and_changes_nothing():
    from introvae.metrics.batchnorm import generator_with_protocol

    model = _model()
    opt = _sgd(model, 1e-3)
    torch.manual_seed(3)
    for _ in range(3):
        TrainStep(model, opt)(VAELoss(beta=1.0, prior_statistics=True), _x())
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = model.latents(8, seed=1)
    scored = generator_with_protocol(model, "posterior", samples=8, batch_size=4, seed=0)
    by_hand = copy.deepcopy(model.decoder)
    flat = getattr(model.decoder, POSTERIOR)
    with torch.no_grad():
        for b, v in zip(running_statistics(by_hand), flat.split([b.numel() for b in running_statistics(by_hand)])):
            b.copy_(v.reshape(b.shape))
        want = by_hand(z)
    assert torch.allclose(scored.sample(z=z), want, atol=1e-6)
    assert not torch.allclose(model.sample(z=z), want, atol=1e-3)  # eval mode: the prior draws' statistics
    for k, v in model.state_dict().items():  # the model is untouched
        assert torch.equal(v, before[k]), k
    # a model that never tracked the second set samples as in eval mode
    fresh = _model().eval()
    assert torch.equal(generator_with_protocol(fresh, "posterior", samples=8, batch_size=4, seed=0).sample(z=z),
                       fresh.sample(z=z))
