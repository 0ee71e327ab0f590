import json

import pytest

from introvae import PRESETS, ConfigError, ModelConfig, TrainConfig, get_preset
from introvae.config import flat_fields
from introvae.model_config import PAPER_CHANNELS

from conftest import tiny_config


def test_paper_presets_hold_the_papers_values():
    c = PRESETS["celeba128"]
    assert (c.model.latent_dim, c.margin, c.alpha, c.beta) == (256, 110.0, 0.25, 0.5)
    for name in ("lsun256", "celebahq256"):
        c = PRESETS[name]
        assert (c.model.image_size, c.model.latent_dim, c.margin, c.alpha, c.beta) == (256, 512, 120.0, 0.25, 0.05)
    # 1024 px: the paper's text lost the margin; the authors' released script's values (EQUATIONS.md)
    c = PRESETS["celebahq1024"]
    assert (c.model.image_size, c.model.latent_dim, c.margin, c.alpha, c.beta, c.vae_epochs) == (1024, 512, 500.0,
                                                                                                0.5, 0.01, 4.0)
    assert c.model.stage_channels == PAPER_CHANNELS
    a = PRESETS["celebahq256-authors"]  # the authors' narrower 256 px network, batch 16
    assert a.model.stage_channels == (32, 64, 128, 256, 512, 512, 512) and (a.batch_size, a.margin) == (16, 120.0)
    assert PRESETS["celeba128"].model.stage_channels == (128, 256, 512, 512, 512, 512)


def test_every_preset_is_valid_names_its_data_or_none_and_adam_is_the_papers():
    # the built-in data sets' presets take lr 1e-3, measured for their short CPU runs (docs/defaults-*.md), and
    # fashion-mnist Adam's beta1 0.5 (its second screen); the others keep the paper's Adam
    measured = {"faces", "fashion-mnist", "fashion-mnist-vae", "fashion-mnist-soft"}
    for name, c in PRESETS.items():
        assert TrainConfig.from_dict(c.to_dict()) == c, name
        assert (c.lr, c.adam_beta1, c.adam_beta2) == (1e-3 if name in measured else 2e-4,
                                                      0.5 if name.startswith("fashion-mnist") else 0.9, 0.999), name
    f = PRESETS["fashion-mnist"]
    assert (f.margin, f.vae_steps, f.batch_size, f.alpha, f.beta, f.ema, f.mirror) == ("auto", 200, 16, 0.25, 10.0,
                                                                                     0.999, True)
    # the averaged generator is fashion-mnist's alone: the VAE baseline samples its trained decoder, as measured
    assert [n for n, c in PRESETS.items() if c.ema] == ["fashion-mnist"]
    assert (f.alpha_early, f.alpha_early_epochs) == (0.5, 1.0)  # alpha 0.5 for the first epoch, then 0.25
    # the rate is fixed for 8 epochs, then halves every 2, in the three Fashion-MNIST presets alone
    assert {n: (c.lr_decay_start, c.lr_half_life) for n, c in PRESETS.items() if c.lr_half_life} == {
        n: (8.0, 2.0) for n in ("fashion-mnist", "fashion-mnist-soft", "fashion-mnist-vae")}
    # the paper's alpha (the VAE baseline copies fashion-mnist's schedule, which a VAE does not read)
    assert all(c.alpha_early_epochs == 0 for n, c in PRESETS.items() if n not in ("fashion-mnist", "fashion-mnist-vae"))
    # presets for the user's own images name no data (training them asks for --data); the others name theirs
    assert [n for n, c in PRESETS.items() if c.data is None] == ["celeba128", "lsun256", "celebahq256",
                                                                 "celebahq256-authors", "celebahq1024", "rgb64"]
    assert (PRESETS["faces"].data, PRESETS["fashion-mnist"].data) == ("faces", "fashion-mnist")
    # the VAE baseline is the screen's command, `--preset fashion-mnist --objective vae --likelihood bernoulli
    # --beta 3` with `--ema 0`: only those fields differ from the IntroVAE preset
    assert PRESETS["fashion-mnist"].changes(PRESETS["fashion-mnist-vae"]) == [
        ("likelihood", "gaussian", "bernoulli"), ("objective", "introvae", "vae"), ("beta", 10.0, 3.0), ("ema", 0.999, 0.0)]


def test_the_model_config_is_apart_from_the_run_config():
    c = tiny_config()
    assert isinstance(c.model, ModelConfig)
    assert set(c.model.to_dict()) == {"image_size", "in_channels", "latent_dim", "channels", "likelihood"}
    assert "loader_workers" not in c.model.to_dict() and "eval_every" not in c.model.to_dict()
    # nested (as config.json is written) and flat (as in a config file or on the command line) read the same
    assert TrainConfig.from_dict(c.to_dict()) == c
    flat = {**c.to_dict().pop("model"), **{k: v for k, v in c.to_dict().items() if k != "model"}}
    assert TrainConfig.from_dict(flat) == c
    assert c.replace(latent_dim=9).model.latent_dim == 9 and c.replace(margin=2).margin == 2.0
    assert c.replace(model={"latent_dim": 9}).model.latent_dim == 9  # a nested override wins over the config
    assert c.replace(epochs=2.0).steps is None and c.replace(epochs=2.0).replace(steps=3).epochs is None
    # every setting is one flat field with help text and a group
    names = [f.name for f in flat_fields()]
    assert len(names) == len(set(names)) == len(c.to_dict()) - 1 + len(c.model.to_dict())
    assert all(f.metadata["help"] and f.metadata["group"] for f in flat_fields())
    assert {"holdout_fraction", "adam_beta1", "adam_beta2", "keep_checkpoints", "max_bad_steps",
            "grid_size"} <= set(names)


def test_json_and_yaml_round_trip(tmp_path):
    c = tiny_config(channels=(4, 8, 16, 16))
    c.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == c
    (tmp_path / "c.yaml").write_text("image_size: 32\nchannels: [4, 8, 16, 16]\nmargin: 7\nsteps: 3\n")
    y = TrainConfig.load(tmp_path / "c.yaml")
    assert (y.model.image_size, y.model.channels, y.margin, y.steps) == (32, (4, 8, 16, 16), 7.0, 3)


@pytest.mark.parametrize("field, value, words", [
    ("image_size", 48, "power of two"),
    ("image_size", 2048, "power of two"),
    ("in_channels", 2, "1 (grayscale) or 3"),
    ("margin", -1.0, ">= 0"),
    ("alpha", float("nan"), "finite"),
    ("alpha_early", -0.5, ">= 0"),
    ("alpha_early_epochs", float("inf"), ">= 0"),
    ("beta", 0.0, "> 0"),
    ("batch_size", 1, ">= 2"),
    ("lr", 0.0, "> 0"),
    ("adam_beta2", 1.0, "[0, 1)"),
    ("channels", (8, 8), "needs 3 entries"),
    ("objective", "gan", "one of"),
    ("steps", 0, ">= 1"),
    ("holdout_fraction", 1.0, "[0, 1)"),
    ("generated_norm", "eval", "one of"),
])
def test_invalid_values_fail_naming_the_field(field, value, words):
    with pytest.raises(ConfigError) as e:
        tiny_config(**{field: value})
    assert str(e.value).startswith(field + ":")
    assert words in str(e.value)


def test_generated_images_normalised_by_real_statistics_need_statistics_kept_to_the_real_images():
    assert tiny_config(generated_norm="real").generated_norm == "real"  # encoder_stats real: the default
    with pytest.raises(ConfigError, match="^generated_norm: .*needs encoder_stats real"):
        tiny_config(generated_norm="real", encoder_stats="running")


def test_unknown_and_mistyped_fields_are_named():
    with pytest.raises(ConfigError, match="unknown config field.*marg"):
        TrainConfig.from_dict({"marg": 3})
    # a flag's spelling in a config file, a typo: the field meant; nothing like any field: no guess
    with pytest.raises(ConfigError, match=r"did you mean batch-size -> batch_size, latent_dm -> latent_dim\? known"):
        TrainConfig.from_dict({"batch-size": 8, "latent_dm": 3, "qqqqqq": 1})
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"qqqqqq": 1})
    assert "did you mean" not in str(e.value)
    with pytest.raises(ConfigError, match="^latent_dim: expected int"):
        TrainConfig.from_dict({"latent_dim": "many"})
    with pytest.raises(ConfigError, match="^latent_dim: expected int"):
        TrainConfig.from_dict({"model": {"latent_dim": 3.5}})
    with pytest.raises(ConfigError, match="^steps: give either steps or epochs"):
        tiny_config(epochs=2.0)
    with pytest.raises(ConfigError, match="^preset: unknown preset 'nope'"):
        get_preset("nope")


def test_bad_config_file_is_named(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        TrainConfig.load(p)
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.load(p)


def test_longer_channel_lists_drop_the_high_resolution_end():
    c = ModelConfig(image_size=32, channels=PAPER_CHANNELS)
    assert c.stage_channels == (512, 512, 512, 512)
    c = ModelConfig(image_size=64, channels=(16, 32, 64, 128, 256, 256))
    assert c.stage_channels == (32, 64, 128, 256, 256)


def test_steps_epochs_and_warmup():
    c = tiny_config(steps=None, epochs=2.5, batch_size=4, vae_epochs=1.0, vae_steps=2)
    assert c.total_steps(10) == 5  # 2 full batches per epoch (the last, partial one is dropped) x 2.5
    assert c.warmup_steps(10) == 2
    assert c.warmup_steps(100) == 25
    with pytest.raises(ConfigError, match="^steps: give the training length"):
        tiny_config(steps=None).total_steps(10)
