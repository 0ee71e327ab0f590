import math

import pytest
import torch

from introvae import Config, IntroVAE
from introvae.model import Decoder, Encoder, ResBlock, count_parameters

from conftest import tiny_config


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256, 512, 1024])
def test_shapes_for_every_power_of_two(size):
    n = int(math.log2(size)) - 1
    c = Config(image_size=size, in_channels=3, latent_dim=6, channels=tuple([2] * 9))
    model = IntroVAE(c)
    pools = [m for m in model.encoder.modules() if isinstance(m, torch.nn.AvgPool2d)]
    ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(pools) == len(ups) == n - 1  # image_size -> 4 in factors of 2
    assert sum(isinstance(m, ResBlock) for m in model.encoder.modules()) == n - 1
    assert sum(isinstance(m, ResBlock) for m in model.decoder.modules()) == n
    x = torch.rand(1 if size >= 512 else 2, 3, size, size)
    mu, logvar = model.encoder(x)
    assert mu.shape == logvar.shape == (len(x), 6)
    assert model.decoder(mu).shape == x.shape


def test_paper_1024_architecture_matches_appendix_b():
    # Built on the meta device: shapes and parameter counts only, no memory, no compute.
    c = Config(image_size=1024, in_channels=3, latent_dim=512)
    with torch.device("meta"):
        e = Encoder(image_size=1024, in_channels=3, latent_dim=512, channels=c.stage_channels)
        g = Decoder(image_size=1024, in_channels=3, latent_dim=512, channels=c.stage_channels)
    assert e.stem[0].out_channels == 16 and e.stem[0].kernel_size == (5, 5)
    assert e.fc.in_features == 512 * 4 * 4 and e.fc.out_features == 1024  # FC-1024, split into 512, 512
    assert g.fc[0].out_features == 8192  # FC-8192 with ReLU, reshaped to 512x4x4
    assert g.to_image.in_channels == 16 and g.to_image.out_channels == 3 and g.to_image.kernel_size == (5, 5)
    blocks = [m for m in e.modules() if isinstance(m, ResBlock)]
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in blocks] == [
        (16, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    assert 20e6 < count_parameters(e) < 35e6 and 20e6 < count_parameters(g) < 35e6


def test_resblock_skip_is_1x1_only_when_channels_change():
    assert isinstance(ResBlock(4, 4).skip, torch.nn.Identity)
    assert ResBlock(4, 8).skip.kernel_size == (1, 1)


def test_sample_is_deterministic_per_seed_and_interpolation_hits_the_ends():
    model = IntroVAE(tiny_config()).eval()
    a, b = model.sample(3, seed=7), model.sample(3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, model.sample(3, seed=8))
    x = torch.rand(2, 1, 16, 16)
    strip = model.interpolate(x[0], x[1], 5)
    mu, _ = model.encoder(x)
    assert strip.shape == (5, 1, 16, 16)
    assert torch.allclose(strip[0], model.decoder(mu[:1])[0], atol=1e-5)
    assert torch.allclose(strip[-1], model.decoder(mu[1:])[0], atol=1e-5)


def test_export_and_load_round_trip(tmp_path):
    model = IntroVAE(tiny_config()).eval()
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    loaded = IntroVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(model.sample(2, seed=1), loaded.sample(2, seed=1))


def test_loading_weights_of_another_architecture_fails_clearly(tmp_path):
    IntroVAE(tiny_config(latent_dim=8)).save_pretrained(tmp_path / "m")
    tiny_config(latent_dim=9).save(tmp_path / "m" / "config.json")
    with pytest.raises(ValueError, match="do not fit this architecture.*another shape"):
        IntroVAE.from_pretrained(tmp_path / "m")
