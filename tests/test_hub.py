"""Models as the field shares them: export with a card, load by name, hf:// from a filled cache, bad folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import tiny_config
from introvae import hub
from introvae.cli import main
from introvae.errors import CheckpointError, UserError
from introvae.runs import load_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from introvae import train

    tmp = tmp_path_factory.mktemp("hub")
    train(tiny_config(steps=4), tmp / "run", show_progress=False, log=lambda s: None)
    return tmp / "run"


def test_export_writes_the_hub_layout_with_a_card(run, tmp_path, capsys):
    assert main(["export", str(run), "-o", str(tmp_path / "m"), "--name", "tiny-faces", "--commit", "abc1234"]) == 0
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "samples.png"]
    meta = hub.card_metadata(tmp_path / "m")
    assert meta["library_name"] == "introvae" and meta["license"] == "mit" and meta["datasets"] == ["faces"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert "# tiny-faces" in card and 'load_model("tiny-faces")' in card and "settings: objective introvae" in card
    assert "An IntroVAE model (16 px, 1 channel(s), latent size 8) trained with" in card
    assert ", commit `abc1234`" in card  # --commit: the training code's, not the exporting checkout's
    assert [hub._article(o) for o in ("vae", "soft-introvae")] == ["A VAE", "A Soft-IntroVAE"]
    bern = hub.write_card(tmp_path, name="b", config={"image_size": 32, "in_channels": 1, "latent_dim": 128,
                                                      "likelihood": "bernoulli"}, run_config={"objective": "vae"},
                          evaluation=None, source="RUN").read_text()
    assert "A VAE model (32 px, 1 channel(s), latent size 128, a Bernoulli decoder) trained with" in bern
    a, b = load_model(run, device="cpu"), load_model(tmp_path / "m", device="cpu")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_a_run_records_where_each_training_call_ran_and_the_card_says_it(run, tmp_path):
    from introvae.provenance import machine, machine_words, read_sessions, time_by_machine
    from introvae.trainer import resume

    here = machine_words(machine())
    first = read_sessions(run)
    assert [(s["step"], s["device"], s["processes"], s["precision"]) for s in first] == [(0, "cpu", 1, "fp32")]
    assert list(time_by_machine(run)) == [here] and "(" in here  # "CPU model (its speed flags)"
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    resume(copy, {"steps": 6}, show_progress=False, log=lambda s: None).train()
    assert [s["step"] for s in read_sessions(copy)] == [0, 4]
    assert main(["export", str(copy), "-o", str(tmp_path / "m")]) == 0
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"trained on: {here}: " in card, card


def test_a_card_carries_the_runs_evaluation_with_its_protocol(run, tmp_path, monkeypatch, capsys):
    from conftest import tiny_features
    from introvae.evaluate import evaluate_model
    from introvae.metrics import EvalSettings

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    shutil.copytree(run, tmp_path / "run")
    evaluate_model(tmp_path / "run", EvalSettings(num_samples=12, ref_images=12, pairs=4, neighbours=0,
                                                  batch_size=12), device="cpu", show_progress=False,
                   features=tiny_features)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "m")]) == 0
    results = hub.card_metadata(tmp_path / "m")["model-index"][0]["results"][0]["metrics"]
    assert results[0]["type"] == "fid" and results[0]["value"] > 0 and "vs 12 train images" in results[0]["name"]
    assert '"ref_split": "train"' in (tmp_path / "m" / "README.md").read_text()
    # introvae info on the folder: what the card records, not "None on None" (it was read as a run before 0.7.15)
    from introvae.info import summarize
    from introvae.provenance import machine, machine_words

    s = summarize(tmp_path / "m")
    assert (s["name"], s["objective"], s["data"], s["latent_dim"], s["training"]["step"]) == ("m", "introvae",
                                                                                          "faces", 8, "4")
    assert s["metrics"]["fid"] == results[0]["value"] and s["evaluated_at_step"] == 4
    assert s["protocol"]["num_samples"] == 12 and s["protocol"]["ref_split"] == "train"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"FID {results[0]['value']:.2f}, precision" in out
    assert "(12 samples vs 12 train images, custom features) at step 4" in out  # the tests' stand-in features
    assert f"trained      step 4, the trained generator, on {machine_words(machine())}: 0 min" in out
    assert "weights      model.safetensors, " in out and " KiB" in out
    (tmp_path / "m" / "README.md").write_text("---\nfoo: [unclosed\n---\n")  # a card broken by hand
    from introvae.errors import PlainWarning

    with pytest.warns(PlainWarning, match="metadata cannot be read"):
        s = summarize(tmp_path / "m")
    assert (s["objective"], s["metrics"], s["latent_dim"]) == (None, {}, 8)  # still its sizes, from config.json


def test_a_shipped_name_loads_and_is_listed(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INTROVAE_MODELS", str(tmp_path / "models"))
    assert main(["export", str(run), "-o", str(tmp_path / "models" / "tiny"), "--fp16"]) == 0
    size16 = (tmp_path / "models" / "tiny" / "model.safetensors").stat().st_size
    assert main(["export", str(run), "-o", str(tmp_path / "full")]) == 0
    assert size16 < 0.6 * (tmp_path / "full" / "model.safetensors").stat().st_size  # fp16: about half
    assert "* weights: stored in fp16, loaded as fp32" in (tmp_path / "models" / "tiny" / "README.md").read_text()
    assert "stored in fp16" not in (tmp_path / "full" / "README.md").read_text()
    model = load_model("tiny", device="cpu")  # by name
    assert next(model.parameters()).dtype == torch.float32
    ref = load_model(run, device="cpu")
    for v, w in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.allclose(v.float(), w.float(), rtol=1e-3, atol=1e-3)
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["sample", "tiny", "-n", "4", "-o", str(tmp_path / "s.png")]) == 0 and (tmp_path / "s.png").is_file()
    with pytest.raises(UserError, match="shipped models: tiny"):
        hub.resolve("no-such-model")
    capsys.readouterr()
    assert main(["info", "tiny"]) == 0  # by name: the card's facts, and commands that use the name
    out = capsys.readouterr().out
    assert "the exported model \"tiny\", IntroVAE on faces (16 px" in out and "metrics      not evaluated" in out
    assert "(stored in fp16, loaded as fp32" in out and "introvae sample tiny -n 16" in out
    assert main(["info", "no-such-model"]) == 2
    assert "no-such-model does not exist" in capsys.readouterr().err


def test_hf_names_load_from_a_cache_the_test_fills_itself_offline(run, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--someone--tiny-faces"
    snap = repo / "snapshots" / commit
    assert main(["export", str(run), "-o", str(snap)]) == 0
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model = load_model("hf://someone/tiny-faces", device="cpu")
    assert model.config.image_size == 16
    with pytest.raises(UserError, match="hf://someone/other"):
        load_model("hf://someone/other", device="cpu")  # offline, not in the cache: one line


def test_a_model_folder_whose_files_do_not_match_is_one_line(run, tmp_path, capsys):
    assert main(["export", str(run), "-o", str(tmp_path / "m")]) == 0
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "in_channels": 3}))
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model(tmp_path / "m", device="cpu")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    data = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["sample", str(tmp_path / "m"), "-n", "2", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot be read (truncated" in err


def test_exports_follow_the_umask(run, tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        for extra in ([], ["--fp16"]):
            out = tmp_path / f"m{len(extra)}"
            assert main(["export", str(run), "-o", str(out), *extra]) == 0
            assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
    finally:
        os.umask(mask)


def test_a_forks_training_time_adds_its_sources_time_up_to_the_forked_step(tmp_path, monkeypatch):
    from introvae.provenance import training_seconds

    def write_run(path, batch, rows, changes=()):
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({"batch_size": batch}))
        (path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (path / "changes.jsonl").write_text("".join(json.dumps(c) + "\n" for c in changes))

    monkeypatch.chdir(tmp_path)  # 0.7.6 and before: the source as it was given, here relative to the working folder
    # the source: 100 steps of 10 images at 10 img/s (100 s), then 100 more at 5 img/s (200 s), past the fork
    write_run(tmp_path / "src", 10, [{"step": 100, "images_per_s": 10.0}, {"step": 200, "images_per_s": 5.0}])
    assert training_seconds(tmp_path / "src") == 300.0
    # forked at step 100: its first row covers steps 100 to 150 (50 x 10 / 25 = 20 s), not 0 to 150
    fork = [{"step": 100, "field": "forked_from", "from": None, "to": "src/checkpoints/step-000000100.pt"}]
    write_run(tmp_path / "fork", 10, [{"step": 150, "images_per_s": 25.0}, {"step": 200, "images_per_s": 50.0}], fork)
    assert training_seconds(tmp_path / "fork") == 100.0 + 20.0 + 10.0
    assert training_seconds(tmp_path / "fork", until_step=150) == 120.0
    # a fork of 0.7.6 or before names its source relative to the folder it ran in: found from another folder too
    monkeypatch.chdir(tmp_path / "fork")
    assert training_seconds(tmp_path / "fork") == 130.0
    # as 0.7.7 writes it (absolute), from anywhere
    fork[0]["to"] = str(tmp_path / "src/checkpoints/step-000000100.pt")
    (tmp_path / "fork" / "changes.jsonl").write_text(json.dumps(fork[0]) + "\n")
    monkeypatch.chdir("/")
    assert training_seconds(tmp_path / "fork") == 130.0
    # with its source gone, only its own steps count
    shutil.rmtree(tmp_path / "src")
    assert training_seconds(tmp_path / "fork") == 30.0
