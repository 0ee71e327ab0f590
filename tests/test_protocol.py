"""The evaluation protocol: the literature's by default, written beside every figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config, tiny_features, write_idx
from introvae.cli import main
from introvae.metrics import fid as fidlib
from introvae.metrics import protocol


def _idx_data(root, *, n_train=64, n_test=40, test=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy = np.linspace(0, 1, 28)[None, :, None]
    base = (rng.uniform(0.2, 1.0, (n_train + n_test, 1, 1)) * yy * np.ones((1, 1, 28)) * 255).astype(np.uint8)
    write_idx(root / "train-images-idx3-ubyte", base[:n_train])
    if test:
        write_idx(root / "t10k-images-idx3-ubyte", base[n_train:])
    return root


def test_auto_split_is_the_official_test_split_only_where_there_is_one():
    assert protocol.resolve_split("auto", True) == "test"
    assert protocol.resolve_split("auto", False) == "train"
    assert protocol.resolve_split("train", True) == "train" and protocol.resolve_split("test", False) == "test"


def test_evaluate_on_idx_data_records_the_literature_protocol(tmp_path, monkeypatch, capsys):
    """A tiny Fashion-MNIST-like run (IDX files with a t10k test file), scored by `introvae evaluate` with its
    defaults: compared with the test images, in fp32 features, the protocol in metrics.jsonl and on screen."""
    from introvae import train

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    seen = []

    def stand_in(device="cpu", **kw):  # the Inception network's interface, fast
        seen.append(kw.get("precision"))
        return tiny_features

    monkeypatch.setattr(fidlib, "load_inception", stand_in)
    data = _idx_data(tmp_path / "fmnist")
    train(tiny_config(data=str(data), steps=2, checkpoint_every=2), tmp_path / "run", show_progress=False,
          log=lambda s: None)
    assert main(["evaluate", str(tmp_path / "run"), "--num-samples", "20", "--ref-images", "30", "--pairs", "10",
                 "--bn-samples", "20", "--neighbours", "0", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    p = row["protocol"]
    assert (p["ref_split"], p["feature_precision"], p["num_samples"], p["ref_images"]) == ("test", "fp32", 20, 30)
    assert p["bn_protocol"] == "eval" and "bilinear" in p["resize"]
    # an IntroVAE run keeps a set of generator statistics per pass: eval mode samples with the prior draws'
    assert p["generator_stats"] == "per-pass" and "generator BatchNorm eval (per-pass statistics)" in out
    assert len(p["inception_sha256"]) == 64 and int(p["inception_sha256"], 16) > 0
    assert row["metrics"]["fid"]["reference"].endswith(":test") and seen == ["fp32"]
    assert "protocol: 20 samples vs 30 test images, fp32 Inception features" in out
    # the training split stays an option, and is recorded as such
    assert main(["evaluate", str(tmp_path / "run"), "--num-samples", "20", "--ref-images", "30", "--pairs", "10",
                 "--neighbours", "0", "--ref-split", "train", "--quiet", "--device", "cpu"]) == 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["protocol"]["ref_split"] == "train" and row["metrics"]["fid"]["reference"].endswith(":train")
    assert not protocol.same(row["protocol"], p)


def test_data_without_an_official_test_split_scores_against_training_images(tmp_path, faces16):
    from introvae.data import load
    from introvae.metrics import EvalSettings, MetricContext

    data = _idx_data(tmp_path / "idx", test=False)
    idx = load(str(data), image_size=16, in_channels=1)
    assert not faces16.official_test and not idx.official_test
    assert load(str(_idx_data(tmp_path / "idx2")), image_size=16, in_channels=1).official_test
    ctx = MetricContext(data=faces16, data_id="faces", image_size=16, in_channels=1, device="cpu",
                        settings=EvalSettings(), images=faces16.train[:10], features=tiny_features)
    assert ctx.ref_split == "train" and ctx.protocol["network"] == "custom feature function"
    assert ctx.protocol["inception_sha256"] is None and ctx.protocol["bn_protocol"] is None


def test_training_evaluations_use_the_same_protocol(tmp_path, monkeypatch):
    from introvae.metrics.store import read_metrics
    from introvae.trainer import Trainer

    data = _idx_data(tmp_path / "fmnist")
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    t = Trainer(tiny_config(data=str(data), steps=2, eval_every=2, eval_samples=20), tmp_path / "run",
                show_progress=False, log=lambda s: None)
    t.feature_fn = tiny_features
    t.train()
    (row,) = read_metrics(tmp_path / "run")
    assert row["during_training"] and row["protocol"]["ref_split"] == "test"
    assert row["protocol"]["num_samples"] == 20 and row["protocol"]["ref_images"] == 20


@pytest.mark.parametrize("field", ["eval_samples"])
def test_the_training_evaluation_default_is_the_literatures_count(field):
    from introvae import TrainConfig

    assert getattr(TrainConfig(), field) == 10_000


def test_progress_in_a_log_file_is_a_line_every_few_percent():
    """Not a terminal (a log file, CI): plain lines, one every few percent, no carriage returns."""
    import io

    from introvae.progress import LOG_EVERY_PERCENT, progress

    quick = io.StringIO()
    with progress(total=10, desc="quick", stream=quick) as bar:
        bar.update(10)
    assert quick.getvalue() == ""  # work of under two seconds leaves no lines in a log
    log = io.StringIO()
    with progress(total=2000, desc="work", unit="img", stream=log, delay=0) as bar:
        for _ in range(1000):
            bar.update(2)
            bar.set_postfix({"loss": "1.0"}, refresh=False)
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and lines[-1].startswith("work: 100%") and "2000/2000" in lines[-1]
    assert 100 // LOG_EVERY_PERCENT <= len(lines) <= 100 // LOG_EVERY_PERCENT + 2
    assert sum(list(progress(range(7), desc="it", stream=io.StringIO()))) == 21  # the iterable form
    # slow work too: tqdm's monitor thread drops miniters to 1 after maxinterval seconds without a line (every
    # update of an evaluation then wrote one); the log's bar never lets it
    with progress(total=2000, desc="slow", stream=io.StringIO()) as bar:
        assert (bar.miniters, bar.maxinterval) == (100, float("inf"))


def test_progress_on_a_terminal_stays_a_live_bar():
    import io

    from introvae.progress import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with progress(total=100, desc="work", stream=tty, mininterval=0) as bar:
        for _ in range(100):
            bar.update(1)
    assert "\r" in tty.getvalue()
