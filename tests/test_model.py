import math
import re

import pytest
import torch

from introvae import IntroVAE, ModelConfig
from introvae.model import Decoder, Encoder, ResBlock, count_parameters

from conftest import tiny_config


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256, 512, 1024])
def test_shapes_for_every_power_of_two(size):
    n = int(math.log2(size)) - 1
    c = ModelConfig(image_size=size, in_channels=3, latent_dim=6, channels=tuple([2] * 9))
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


def _stages(net: torch.nn.Module, size: int) -> list[tuple[int, int, int]]:
    """(resolution, in channels, out channels) of every residual block, in the order data flows."""
    out, res = [], size
    for m in net.modules():
        if isinstance(m, torch.nn.AvgPool2d):
            res //= 2
        elif isinstance(m, torch.nn.Upsample):
            res *= 2
        elif isinstance(m, ResBlock):
            out.append((res, m.conv1.in_channels, m.conv2.out_channels))
    return out


def test_paper_1024_architecture_matches_appendix_b():
    # Built on the meta device: shapes and parameter counts only, no memory, no compute.
    c = ModelConfig(image_size=1024, in_channels=3, latent_dim=512)
    with torch.device("meta"):
        e, g = Encoder(c), Decoder(c)
    assert e.stem[0].out_channels == 16 and e.stem[0].kernel_size == (5, 5)
    assert e.fc.in_features == 512 * 4 * 4 and e.fc.out_features == 1024  # FC-1024, split into 512, 512
    assert g.fc[0].out_features == 8192  # FC-8192 with ReLU, reshaped to 512x4x4
    assert g.to_image.in_channels == 16 and g.to_image.out_channels == 3 and g.to_image.kernel_size == (5, 5)
    # Every stage of the authors' networks (EQUATIONS.md, Architecture): the encoder changes channels in the
    # block after each pooling ...
    assert _stages(e, 1024) == [(512, 16, 32), (256, 32, 64), (128, 64, 128), (64, 128, 256), (32, 256, 512),
                                (16, 512, 512), (8, 512, 512), (4, 512, 512)]
    # ... the decoder in the block before each upsampling, so it is no mirror of the encoder: 256 channels at
    # 32 px and 16 at 512 px (a mirror would have 512 and 32), then a block at full size.
    assert _stages(g, 4) == [(4, 512, 512), (8, 512, 512), (16, 512, 512), (32, 512, 256), (64, 256, 128),
                           (128, 128, 64), (256, 64, 32), (512, 32, 16), (1024, 16, 16)]
    assert 20e6 < count_parameters(e) < 35e6 and 15e6 < count_parameters(g) < 25e6


def test_resblock_skip_is_1x1_only_when_channels_change():
    assert isinstance(ResBlock(4, 4).skip, torch.nn.Identity)
    assert ResBlock(4, 8).skip.kernel_size == (1, 1) and ResBlock(4, 8).skip.bias is None


def test_resblock_applies_its_second_batchnorm_after_the_addition():
    """out = LReLU(BN2(conv2(h) + skip(x))), h = LReLU(BN1(conv1(x))): the authors' order, against a hand-written
    forward pass (BN before the addition gives other values, so this pins the order)."""
    torch.manual_seed(0)
    block = ResBlock(3, 5).train()
    for bn in (block.bn1, block.bn2):  # non-trivial affine parameters
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 6, 6)

    def bn(t, m):
        mean, var = t.mean(dim=(0, 2, 3), keepdim=True), t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (t - mean) / torch.sqrt(var + m.eps) * m.weight[:, None, None] + m.bias[:, None, None]

    lrelu = lambda t: torch.where(t > 0, t, 0.2 * t)  # noqa: E731
    h = lrelu(bn(torch.nn.functional.conv2d(x, block.conv1.weight, padding=1), block.bn1))
    h2, skip = torch.nn.functional.conv2d(h, block.conv2.weight, padding=1), torch.nn.functional.conv2d(
        x, block.skip.weight)
    after = lrelu(bn(h2 + skip, block.bn2))
    before = lrelu(bn(h2, block.bn2) + skip)
    out = block(x)
    assert torch.allclose(out, after, atol=1e-5)
    assert not torch.allclose(out, before, atol=1e-2)


def test_sample_is_deterministic_per_seed_and_interpolation_hits_the_ends():
    model = IntroVAE(tiny_config().model).eval()
    a, b = model.sample(3, seed=7), model.sample(3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, model.sample(3, seed=8))
    x = torch.rand(2, 1, 16, 16)
    strip = model.interpolate(x[0], x[1], 5)
    mu, _ = model.encoder(x)
    assert strip.shape == (5, 1, 16, 16)
    assert torch.allclose(strip[0], model.decoder(mu[:1])[0], atol=1e-5)
    assert torch.allclose(strip[-1], model.decoder(mu[1:])[0], atol=1e-5)


def test_the_python_api_names_a_wrong_input_and_scales_uint8_images():
    from introvae.errors import InputError

    model = IntroVAE(tiny_config().model).eval()  # 16 px, 1 channel, latent size 8
    x = torch.rand(3, 1, 16, 16)
    # uint8 images (0-255) are scaled to [0, 1]: the same codes as the float images they round to
    as_bytes = (x * 255).round().to(torch.uint8)
    as_bytes[0, 0, 0, 0] = 255
    assert torch.equal(model.encode(as_bytes)[0], model.encode(as_bytes.float() / 255)[0])
    assert torch.equal(model.kl(as_bytes.numpy()), model.kl(as_bytes))  # numpy arrays too
    cases = [(lambda: model.kl(torch.rand(3, 3, 16, 16)), "takes (N, 1, 16, 16) images, got shape (3, 3, 16, 16)"),
             (lambda: model.encode(x[0]), "for one image, give x[None]"),
             (lambda: model.reconstruct(torch.ones(2, 1, 16, 16, dtype=torch.int64)), "floating-point values"),
             (lambda: model.kl("faces.png"), "expected a tensor of images, got str"),
             (lambda: model.decode(torch.randn(2, 64)), "latent codes of shape (N, 8), got (2, 64)"),
             (lambda: model.sample(z=torch.randn(8)), "got (8,)"),
             (lambda: model.sample(-1), "integer >= 0, got -1"),
             (lambda: model.sample(), "give n (with an optional seed) or z"),
             (lambda: model.interpolate(x[0], x[1], 1), "steps must be an integer >= 2"),
             (lambda: model.interpolate(x, x[1], 3), "one image each, got 3 and 1")]
    for call, words in cases:
        with pytest.raises(InputError, match=re.escape(words)):
            call()
    assert issubclass(InputError, ValueError)
    with pytest.warns(UserWarning, match=re.escape("values up to 255; the model takes images in [0, 1]")):
        model.kl(as_bytes.float())
    assert model.interpolate(x[:1], x[1], 2).shape == (2, 1, 16, 16)  # (1, C, H, W) ends work too


def test_export_and_load_round_trip(tmp_path):
    model = IntroVAE(tiny_config().model).eval()
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    loaded = IntroVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(model.sample(2, seed=1), loaded.sample(2, seed=1))


def test_loading_weights_of_another_architecture_fails_clearly(tmp_path):
    import json

    from introvae.errors import CheckpointError

    IntroVAE(tiny_config(latent_dim=8).model).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(tiny_config(latent_dim=9).model.to_dict()))
    with pytest.raises(CheckpointError, match="do not fit this architecture.*another shape"):
        IntroVAE.from_pretrained(tmp_path / "m")


def test_an_export_of_the_earlier_networks_is_refused_with_one_clear_line(tmp_path):
    from safetensors.torch import save_file

    from introvae.errors import CheckpointError

    model = IntroVAE(tiny_config().model)
    model.save_pretrained(tmp_path / "m")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m" / "model.safetensors"),
              metadata={"introvae_version": "0.1.0"})  # as introvae 0.1 wrote them: no architecture number
    with pytest.raises(CheckpointError, match="exported by introvae 0.1.0, whose networks differ"):
        IntroVAE.from_pretrained(tmp_path / "m")


def test_a_bernoulli_decoder_gives_its_means_in_0_1_in_fp32_everywhere(tmp_path):
    from introvae.model import describe

    model = IntroVAE(tiny_config(likelihood="bernoulli").model).eval()
    assert "Bernoulli decoder" in describe(model.config) and "Bernoulli" not in describe(tiny_config().model)
    with torch.no_grad():
        model.decoder.to_image.bias.fill_(50.0)  # logits far past what fp32 sigmoid resolves from 1
    x = model.sample(4, seed=0)
    assert x.dtype == torch.float32 and x.min() > 0.99 and x.max() <= 1.0
    with torch.no_grad():
        model.decoder.to_image.bias.fill_(0.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model.decoder(torch.zeros(2, model.config.latent_dim))
    assert y.dtype == torch.float32 and 0 < y.min() and y.max() < 1
    # the likelihood travels with an export; an export from before it existed is a Gaussian one
    model.save_pretrained(tmp_path / "m")
    assert IntroVAE.from_pretrained(tmp_path / "m").config.likelihood == "bernoulli"
    import json

    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["likelihood"]
    IntroVAE(tiny_config().model).save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = IntroVAE.from_pretrained(tmp_path / "old")
    assert old.config.likelihood == "gaussian" and old.sample(2, seed=0).min() < 0  # the linear output
