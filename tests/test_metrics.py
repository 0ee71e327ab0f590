import json

import numpy as np
import pytest
import torch

from introvae import devices
from introvae.errors import MetricError
from introvae.metrics import fid as fidlib
from introvae.metrics.msssim import ms_ssim, ms_ssim_settings, sample_diversity
from introvae.metrics.neighbours import nearest_feature, nearest_pixel
from introvae.metrics.reconstruction import reconstruction_metrics

from conftest import tiny_features


def test_frechet_distance_of_known_gaussians():
    mu, s = np.zeros(3), np.eye(3)
    assert fidlib.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    # 1-D per axis: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 1 + 1 + 4 - 4 = 2 on each of 3 axes
    assert fidlib.frechet_distance(mu, s, np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0)


def test_trace_sqrt_product_matches_sqrtm_on_non_commuting_covariances():
    import scipy.linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 12)), rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert not np.allclose(s1 @ s2, s2 @ s1)  # the product is not symmetric: the general case
    reference = np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert fidlib.trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-9)
    assert fidlib.trace_sqrt_product(s2, s1) == pytest.approx(reference, rel=1e-9)


def test_trace_sqrt_product_is_exact_for_singular_covariances():
    # S1 has rank 1 along a unit vector u: Tr (S1 S2)^(1/2) = sqrt(u' S2 u) * sqrt(4) exactly.
    rng = np.random.default_rng(1)
    u = rng.normal(size=6)
    u /= np.linalg.norm(u)
    s1 = 4 * np.outer(u, u)
    m = rng.normal(size=(6, 6))
    s2 = m @ m.T
    # the five zero eigenvalues come out of eigh at about 1e-16; their square roots add about 1e-8 each
    assert fidlib.trace_sqrt_product(s1, s2) == pytest.approx(2 * np.sqrt(u @ s2 @ u), rel=1e-7)
    # fewer samples than dimensions (the 2,000-image screens have 2,048-d features): finite and >= 0
    few = np.cov(rng.normal(size=(5, 30)), rowvar=False)
    assert 0.0 <= fidlib.frechet_distance(np.zeros(30), few, np.zeros(30), few) <= 1e-6
    # the square roots of the 26 zero eigenvalues are each off by up to about sqrt(eps * ||few||) (2.6e-6 in all
    # with the factor 2 * 30: -1.0e-6 came out on an AVX-512 CPU, which the floor at 0 hides only where FID is 0)
    rounding = 2 * 30 * np.sqrt(np.finfo(float).eps * np.linalg.norm(few, 2))
    assert fidlib.frechet_distance(np.zeros(30), few, np.ones(30), few) == pytest.approx(30.0, abs=rounding)
    # a diverged model's features: NaN, as before, not an error from the eigendecomposition
    broken = few.copy()
    broken[0, 0] = np.nan
    assert np.isnan(fidlib.frechet_distance(np.zeros(30), broken, np.zeros(30), few))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 3, 16, 16, generator=g)
    fx = tiny_features(x).double()
    assert fidlib.fid_from_features(fx, fx) == pytest.approx(0.0, abs=1e-6)
    fids = [fidlib.fid_from_features(fx, tiny_features((x + s * torch.randn(x.shape, generator=g)).clamp(0, 1)))
            for s in (0.05, 0.2, 0.5)]
    assert 0 < fids[0] < fids[1] < fids[2]


@pytest.mark.slow
def test_the_real_inception_network_loads_offline_and_is_deterministic():
    features = fidlib.load_inception()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = features(x), features(x)
    assert a.shape == (2, fidlib.FEATURE_DIM) and torch.equal(a, b)
    gray = features(x[:, :1])
    assert torch.equal(gray, features(x[:, :1].expand(-1, 3, -1, -1)))  # gray is R = G = B
    assert (a >= 0).all()  # pool features after ReLU


@pytest.mark.slow
def test_the_folded_inception_graph_keeps_the_features():
    """fold_batchnorm folds the 94 BatchNorms into their convolutions: the same features up to float rounding,
    and the same FID to 1e-5 of its value (6-image covariances are singular, so the matrix square root magnifies
    float rounding: 2e-6 relative on CI's CPU, below 1e-6 on others)."""
    folded, plain = fidlib.load_inception(), fidlib.load_inception(fold=False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    y = (x + 0.3 * torch.rand(6, 3, 32, 32, generator=g)).clamp(0, 1)
    fx, fy, px, py = folded(x), folded(y), plain(x), plain(y)
    assert not torch.equal(fx, px)  # another graph really ran ...
    assert (fx - px).abs().max() <= 1e-4 * px.abs().max()  # ... giving the same features
    kinds = {n.kind() for n in fidlib._CACHE["cpu:True:fp32"].graph.nodes()}
    assert "aten::batch_norm" not in kinds and "aten::conv2d" in kinds
    fid_folded, fid_plain = fidlib.fid_from_features(fx, fy), fidlib.fid_from_features(px, py)
    assert fid_folded == pytest.approx(fid_plain, rel=1e-5)


@pytest.mark.slow
def test_the_bf16_inception_graph_runs_in_bf16_near_the_fp32_features():
    """--feature-precision bf16: every weight of the folded graph is bf16, the features come back as fp32 and
    stay within bf16 rounding of the fp32 ones (about 3 % of their norm after 94 layers); FID's own bound is
    measured on real sets by benchmarks/fid_speed.py, not here."""
    bf16, fp32 = fidlib.load_inception(precision="bf16"), fidlib.load_inception()
    dtypes = {n.output().toIValue().dtype for n in fidlib._CACHE["cpu:True:bf16"].graph.nodes()
              if n.kind() == "prim::Constant" and n.output().type().kind() == "TensorType"}
    assert dtypes == {torch.bfloat16}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = fp32(x), bf16(x)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).norm() < 0.06 * a.norm()
    with pytest.raises(MetricError, match="feature-precision"):
        fidlib.load_inception(precision="fp8")


def test_the_cpu_flags_say_where_bf16_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert not devices.has_native_bf16(cpu)  # emulated: many times slower than fp32
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(devices, "cpu_flags", lambda flag=flag: {"avx2", flag})
        assert devices.has_native_bf16(cpu)
    assert not devices.has_native_bf16(torch.device("meta"))


def test_feature_precision_defaults_to_fp32_and_keys_the_cache():
    from introvae.cli import make_parser
    from introvae.metrics import EvalSettings
    from introvae.model_commands import eval_settings

    assert EvalSettings().feature_precision == "fp32"
    assert eval_settings(make_parser().parse_args(["evaluate", "run"])).feature_precision == "fp32"
    assert eval_settings(make_parser().parse_args(["evaluate", "run", "--no-ema", "--pairs", "9"])) == \
        EvalSettings(ema=False, pairs=9)
    # --screen: the docs' quick protocol, the flags given over it
    assert eval_settings(make_parser().parse_args(["evaluate", "run", "--screen", "--pairs", "9"])) == \
        EvalSettings(num_samples=2000, ref_images=2000, pairs=9, neighbours=0)
    # The real-feature cache keeps fp32 and bf16 features apart (and fp32 keys as they were).
    assert fidlib.stats_key(data="x", n=3) == fidlib.stats_key(data="x", n=3, precision="fp32")
    assert fidlib.stats_key(data="x", n=3, precision="bf16") != fidlib.stats_key(data="x", n=3)


@pytest.mark.parametrize("size, expected", [(16, (3, 3)), (28, (7, 3)), (32, (7, 3)), (64, (11, 3)),
                                            (128, (11, 4)), (256, (11, 5)), (1024, (11, 5))])
def test_ms_ssim_window_and_scales_fit_the_image(size, expected):
    assert ms_ssim_settings(size) == expected
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    if size <= 128:
        y = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))
        assert (ms_ssim(x, y) < 0.5).all()


def test_sample_diversity_is_one_for_copies_and_low_for_noise():
    same = torch.rand(1, 1, 32, 32).expand(10, -1, -1, -1)
    assert sample_diversity(same, pairs=50) == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(10, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert sample_diversity(noise, pairs=50) < 0.2


def test_reconstruction_metrics_of_a_perfect_and_a_noisy_model():
    class Identity:
        def __init__(self, noise=0.0):
            self.noise = noise

        def reconstruct(self, x, sample_z=False, generator=None):
            return x + self.noise * torch.randn(x.shape, generator=generator)

    x = torch.rand(8, 1, 16, 16)
    perfect = reconstruction_metrics(Identity(), x)
    assert perfect["mse"] == 0 and perfect["psnr"] == pytest.approx(100.0) and perfect["ssim"] == pytest.approx(1.0)
    noisy = reconstruction_metrics(Identity(0.1), x)
    assert 0.005 < noisy["mse"] < 0.012 and 19 < noisy["psnr"] < 24 and noisy["ssim"] < 0.95


def test_the_held_out_metrics_from_one_encoder_pass_equal_the_three_computed_apart():
    from conftest import tiny_config
    from introvae.metrics.reconstruction import held_out_metrics
    from introvae.model import IntroVAE

    torch.manual_seed(0)
    model = IntroVAE(tiny_config().model).eval()
    x = (torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    both = held_out_metrics(model, x, seed=3, batch=4)  # batches of 4, 4 and 2
    assert both["posterior_mean"] == reconstruction_metrics(model, x, batch=4)
    assert both["sampled_z"] == reconstruction_metrics(model, x, sample_z=True, seed=3, batch=4)
    assert both["sampled_z"] != reconstruction_metrics(model, x, sample_z=True, seed=4, batch=4)  # the draws count
    assert both["kl_real"] == float(torch.cat([model.kl(c.float() / 255) for c in x.split(4)]).mean())


def test_nearest_neighbours_find_the_copies():
    train = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    picks = torch.tensor([3, 17, 42])
    noisy = train[picks] + 0.01 * torch.randn(3, 1, 8, 8)
    assert torch.equal(nearest_pixel(noisy, train, chunk_bytes=4 * 64 * 7), picks)  # 7 images per chunk
    f = tiny_features(train)
    assert torch.equal(nearest_feature(f[picks] * 3.0, f), picks)  # cosine: the scale does not matter


def test_evaluate_writes_metrics_and_caches_real_features(tmp_path, monkeypatch):
    from conftest import tiny_config
    from introvae.data import load
    from introvae.evaluate import evaluate_model, format_table
    from introvae.metrics import EvalSettings
    from introvae.trainer import Trainer

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(steps=2)
    t = Trainer(cfg, tmp_path / "run", data=load("faces", image_size=16, in_channels=1, holdout_fraction=0.2),
                show_progress=False, log=lambda s: None)
    t.train()
    calls = []

    def counting(x):
        calls.append(len(x))
        return tiny_features(x)

    settings = EvalSettings(num_samples=40, pairs=30, ref_images=50, neighbours=4, batch_size=16)
    result = evaluate_model(tmp_path / "run", settings, show_progress=False, features=counting, device="cpu")
    saved = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["metrics"]
    assert saved["fid"]["samples"] == 40 and saved["fid"]["reference_images"] == 50
    assert saved["fid"]["value"] > 0 and 0 < saved["ms_ssim"]["value"] <= 1
    pr = saved["precision_recall"]
    assert all(0 <= pr[k] <= 1 for k in ("precision", "recall", "coverage")) and pr["k"] == 5 and pr["density"] >= 0
    assert saved["ms_ssim"]["window"] == 3 and saved["reconstruction"]["images"] == 20
    assert saved["reconstruction"]["kl_real"] > 0
    assert result["data"] == "faces" and result["resolution"] == 16 and result["version"] and result["step"] == 2
    assert (tmp_path / "run" / "nearest_neighbours.png").is_file()
    assert sum(calls) == 90  # 50 real + 40 generated, each computed once for FID, MS-SSIM and the neighbours
    assert max(calls) <= 16  # in chunks of --batch-size
    calls.clear()
    again = evaluate_model(tmp_path / "run", settings, show_progress=False, features=counting)
    assert sum(calls) == 90  # a custom feature function is not cached on disk (only the Inception network is)
    assert again["metrics"]["fid"]["value"] == pytest.approx(result["metrics"]["fid"]["value"])  # same samples
    assert "FID" in format_table(result) and "MS-SSIM" in format_table(result)
    other = evaluate_model(tmp_path / "run", EvalSettings(num_samples=40, pairs=30, ref_images=49, neighbours=0,
                                                          batch_size=16, bn_protocol="recalibrate",
                                                          encoder_stats="real", bn_samples=32),
                           show_progress=False, features=counting)
    assert other["metrics"]["neighbours"]["picture"] is None
    assert (other["bn_protocol"], other["encoder_stats"], result["bn_protocol"]) == ("recalibrate", "real", "eval")
    assert "generator BatchNorm: recalibrate (batch 16), encoder statistics: real" in format_table(other)
    assert other["metrics"]["fid"]["value"] != result["metrics"]["fid"]["value"]  # other statistics, other images
    # results are kept per evaluation, with the checkpoint's step: three lines now
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2] and rows[-1]["metrics"]["fid"]["reference_images"] == 49


def test_real_features_are_cached_under_a_key_of_what_they_depend_on(tmp_path, monkeypatch):
    """With the Inception network (here a stand-in with its interface), the real images' features are computed
    once per (data, split, count, size, channels) and read from the cache after that."""
    from introvae.data import load
    from introvae.metrics import EvalSettings, MetricContext

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(fidlib, "load_inception", lambda device="cpu", **_: (lambda x: calls.append(len(x)) or
                                                                         tiny_features(x)))
    data = load("faces", image_size=16, in_channels=1, holdout_fraction=0.2)

    def ctx(n):
        return MetricContext(data=data, data_id="faces", image_size=16, in_channels=1, device=torch.device("cpu"),
                             settings=EvalSettings(ref_images=n, batch_size=16), images=data.test[:],
                             show_progress=False)

    first = ctx(50).reference_features
    assert sum(calls) == 50
    assert torch.equal(ctx(50).reference_features, first) and sum(calls) == 50  # from the cache
    assert len(ctx(49).reference_features) == 49 and sum(calls) == 99  # another count, another key



def test_two_evaluations_at_once_compute_the_real_features_once(tmp_path, monkeypatch, capfd):
    """A second evaluation that needs the same real features while a first (another process) computes them waits
    for the first and reads its cache (one line says so), instead of computing them again or writing the same
    file."""
    import multiprocessing
    import time

    from introvae.data import load
    from introvae.metrics import EvalSettings, MetricContext

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    counted = tmp_path / "images-through-the-network.txt"

    def slow(x):  # the stand-in network, slow enough for the second to arrive while the first computes
        with open(counted, "a") as f:
            f.write(f"{len(x)}\n")
        time.sleep(0.3)
        return tiny_features(x)

    monkeypatch.setattr(fidlib, "load_inception", lambda device="cpu", **_: slow)
    data = load("faces", image_size=16, in_channels=1, holdout_fraction=0.2)

    def features(show_progress):
        ctx = MetricContext(data=data, data_id="faces", image_size=16, in_channels=1, device=torch.device("cpu"),
                            settings=EvalSettings(ref_images=48, batch_size=8), images=data.test[:],
                            show_progress=show_progress)
        return ctx.reference_features

    first = multiprocessing.get_context("fork").Process(target=features, args=(False,))
    first.start()
    while not counted.is_file():  # the first is computing
        time.sleep(0.02)
    second = features(True)
    first.join()
    assert first.exitcode == 0
    assert sum(map(int, counted.read_text().split())) == 48  # computed once, by the first
    assert torch.equal(second, features(False))
    assert "waiting for another process that is computing the features of the real" in capfd.readouterr().err
    assert [f.name for f in (tmp_path / "cache" / "fid-stats").iterdir() if f.suffix == ".tmp"] == []


def test_eval_every_records_fid_over_training_and_plots_it(tmp_path, monkeypatch):
    from conftest import tiny_config
    from introvae.data import load
    from introvae.metrics.store import read_metrics
    from introvae.trainer import Trainer

    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    t = Trainer(tiny_config(steps=4, eval_every=2, eval_samples=20), tmp_path / "run",
                data=load("faces", image_size=16, in_channels=1, holdout_fraction=0.2), show_progress=False,
                log=lambda s: None)
    t.feature_fn = tiny_features
    t.train()
    fids = read_metrics(tmp_path / "run", "fid")
    assert [step for step, _ in fids] == [2, 4] and all(v > 0 for _, v in fids)
    rows = read_metrics(tmp_path / "run")
    assert all(r["metrics"]["fid"]["samples"] == 20 and r["during_training"] for r in rows)
    assert (tmp_path / "run" / "kl.png").is_file()
    # an `evaluate` of the run (another sample count) joins metrics.jsonl, not the curve beside the KL
    from introvae.metrics.store import append_metrics

    append_metrics(tmp_path / "run", {"step": 4, "metrics": {"fid": {"value": 99.0, "samples": 40}}})
    assert read_metrics(tmp_path / "run", "fid")[-1] == (4, 99.0)
    assert read_metrics(tmp_path / "run", "fid", during_training=True) == fids


def test_precision_recall_density_coverage_on_known_inputs():
    from introvae.metrics.prdc import precision_recall

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    same = precision_recall(x, x.clone())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0 and same["density"] > 0.9
    far = precision_recall(x, x + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # By hand, k = 1: real points 0..9 on a line (each real ball has radius 1); samples at 0.5, 20 and 21
    # (balls of radius 19.5, 1 and 1).
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([[0.5], [20.0], [21.0]])
    out = precision_recall(real, fake, k=1)
    assert out["precision"] == pytest.approx(1 / 3)  # 0.5 lies in the balls of 0 and 1; 20 and 21 in none
    assert out["recall"] == 1.0  # the ball of 0.5 (radius 19.5) holds every real point
    assert out["density"] == pytest.approx(2 / 3)  # (2 + 0 + 0) real balls / 3 samples / k
    assert out["coverage"] == pytest.approx(0.2)  # only the balls of 0 and 1 hold a sample
    with pytest.raises(MetricError, match="at least k \\+ 2"):
        precision_recall(real, fake[:2], k=1)


def test_reestimated_statistics_are_the_average_over_the_batches_and_leave_the_model_alone():
    from introvae.metrics.batchnorm import reestimated

    bn = torch.nn.BatchNorm1d(3).eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 3, generator=g) * s + s for s in (1.0, 2.0, 3.0)]
    out = reestimated(bn, batches)
    assert not out.training and torch.equal(bn.running_mean, torch.zeros(3))  # the original is untouched
    assert torch.allclose(out.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-6)
    assert torch.allclose(out.running_var, torch.stack([b.var(0) for b in batches]).mean(0), atol=1e-5)


def test_bn_protocols_of_the_generator_and_the_encoder(tmp_path):
    from conftest import tiny_config
    from introvae import IntroVAE
    from introvae.data import load
    from introvae.errors import MetricError
    from introvae.metrics.batchnorm import encoder_with_stats, generator_with_protocol

    torch.manual_seed(0)
    model = IntroVAE(tiny_config().model)
    with torch.no_grad():  # a few training-mode passes give running statistics that differ from the defaults
        for _ in range(3):
            model.train().decoder(torch.randn(8, 8) * 3)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = model.latents(8, seed=1)
    base = model.sample(z=z)
    train = generator_with_protocol(model, "train", samples=16, batch_size=4, seed=0)
    # batch statistics: each half of z normalised by its own statistics, so not the eval-mode images
    halves = torch.cat([train.sample(z=c) for c in z.split(4)])
    assert not torch.allclose(halves, base, atol=1e-3) and not torch.allclose(halves, train.sample(z=z), atol=1e-4)
    recal = generator_with_protocol(model, "recalibrate", samples=64, batch_size=16, seed=0)
    assert not recal.decoder.training and not torch.allclose(recal.sample(z=z), base, atol=1e-3)
    faces = load("faces", image_size=16, in_channels=1, holdout_fraction=0.2).train
    real = encoder_with_stats(model, "real", faces, batch_size=20)
    assert not torch.allclose(real.encoder.stem[1].running_mean, model.encoder.stem[1].running_mean)
    assert real.decoder is model.decoder and encoder_with_stats(model, "running", faces, batch_size=20) is model
    for k, v in model.state_dict().items():  # none of it changed the model
        assert torch.equal(v, before[k]), k
    with pytest.raises(MetricError, match="bn-protocol"):
        generator_with_protocol(model, "mixed", samples=4, batch_size=2, seed=0)


def test_a_feature_pass_over_a_minute_says_how_long_first(capsys):
    import time

    def slow(x):
        time.sleep(0.05)
        return x.flatten(1)[:, :4]

    batches = (torch.rand(4, 1, 8, 8) for _ in range(2))
    f = fidlib.inception_features(batches, slow, total=10_000, desc="sample features")  # 2,500 batches of 0.05 s
    assert f.shape == (8, 4)
    out = capsys.readouterr()
    assert "sample features: 10000 images through the Inception network, about 2 min" in out.out + out.err
    fidlib.inception_features((torch.rand(4, 1, 8, 8) for _ in range(2)), slow, total=8, desc="few")
    assert "about" not in "".join(capsys.readouterr())  # short jobs start without a word


def test_nearest_neighbours_stream_references_in_bounded_chunks():
    """The search converts at most chunk_bytes of references at a time, and finds the same neighbours as a
    search over everything at once (k nearest, nearest first)."""
    from introvae.metrics.neighbours import nearest_k, nearest_pixel

    g = torch.Generator().manual_seed(0)
    refs = torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8, generator=g)
    samples = refs[[5, 77, 250]].float() / 255 + 0.001
    whole = torch.cdist(samples.flatten(1), refs.flatten(1).float() / 255).topk(4, largest=False).indices
    small = nearest_k(samples, refs, 4, chunk_bytes=4 * 64 * 7)  # 7 images per chunk
    assert torch.equal(small, whole) and small[:, 0].tolist() == [5, 77, 250]
    assert nearest_pixel(samples, refs, chunk_bytes=4 * 64).tolist() == [5, 77, 250]


def test_generation_chunks_are_bounded_by_bytes():
    from introvae.model import generation_chunk

    assert generation_chunk(32) == 256 and generation_chunk(64) == 256
    assert generation_chunk(256) == 64 and generation_chunk(1024) == 4
    assert 64 * 4 * 1024 * 1024 * generation_chunk(1024) <= 2**30


def test_ms_ssim_batches_are_bounded_in_bytes():
    from introvae.metrics.msssim import pairs_per_batch

    assert pairs_per_batch(torch.zeros(1, 32, 32)) == 500
    assert pairs_per_batch(torch.zeros(3, 1024, 1024)) == 1  # 1 GiB of working memory at 1024 px RGB
    assert pairs_per_batch(torch.zeros(3, 256, 256)) == 28


def test_evaluation_memory_is_bounded_whatever_the_sample_count(tmp_path, monkeypatch, faces16):
    """Samples past HOST_SAMPLE_BYTES go to a file mapped from disk (deleted at once), the reference subset is a
    view that copies no image, and every metric comes out the same as with everything in host memory."""
    from conftest import tiny_config, tiny_features
    from introvae.metrics import EvalSettings, MetricContext, context, measure
    from introvae.model import IntroVAE

    torch.manual_seed(0)
    model = IntroVAE(tiny_config().model).eval()
    settings = EvalSettings(num_samples=40, pairs=30, ref_images=25, neighbours=3, batch_size=16)

    def scores(out):
        out.mkdir()
        ctx = MetricContext(data=faces16, data_id="faces", image_size=16, in_channels=1, device="cpu",
                            settings=settings, model=model, features=tiny_features, out_dir=out,
                            show_progress=False)
        result = measure(["fid", "precision_recall", "ms_ssim", "neighbours"], ctx)
        result["neighbours"].pop("picture")
        return ctx, result

    in_memory, expected = scores(tmp_path / "a")
    monkeypatch.setattr(context, "HOST_SAMPLE_BYTES", 0)
    spilled, got = scores(tmp_path / "b")
    assert got == expected
    assert torch.equal(spilled.samples, in_memory.samples)
    assert spilled.samples.data_ptr() == spilled.mapped.ctypes.data  # mapped from disk, not in host memory
    assert not list((tmp_path / "b").glob(".samples-*"))  # and nothing left behind
    ref = spilled.reference
    assert isinstance(ref, context.Rows) and len(ref) == 25 and ref.base is faces16.train  # holds no image
    assert torch.equal(ref[3:5], faces16.train[ref.index[3:5]]) and torch.equal(ref[2], faces16.train[ref.index[2]])


def _resumable_context(out, images, monkeypatch, network, batch_size=10):
    """A context that takes the Inception network's path (features kept on disk), with ``network`` standing in."""
    from introvae.metrics import EvalSettings, MetricContext

    monkeypatch.setattr(fidlib, "load_inception", lambda device, precision="fp32": network)
    return MetricContext(data=None, data_id="x", image_size=16, in_channels=1, device="cpu",
                         settings=EvalSettings(batch_size=batch_size), images=images, out_dir=out,
                         show_progress=False)


def test_interrupted_sample_features_resume_where_they_stopped_and_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    """Ctrl-C in the third batch keeps the two batches done; the same evaluation computes only the other three
    and gets the uninterrupted features to the bit; the kept file goes once they are complete."""
    images = torch.randint(0, 256, (50, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = _resumable_context(tmp_path / "whole", images, monkeypatch, tiny_features).sample_features

    calls = []

    def stopped_in_third_batch(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return tiny_features(x)

    with pytest.raises(KeyboardInterrupt):
        _resumable_context(tmp_path / "run", images, monkeypatch, stopped_in_third_batch).sample_features
    kept = list((tmp_path / "run").glob("sample-features-partial-*.pt"))
    assert len(kept) == 1 and len(torch.load(kept[0], weights_only=True)["features"]) == 20

    calls.clear()
    resumed = _resumable_context(tmp_path / "run", images, monkeypatch,
                                 lambda x: calls.append(len(x)) or tiny_features(x)).sample_features
    assert calls == [10, 10, 10]  # images 20 to 49 only
    assert torch.equal(resumed, whole)
    assert not list((tmp_path / "run").glob("sample-features-partial-*"))


def test_kept_sample_features_are_used_only_for_the_same_images_and_settings(tmp_path, monkeypatch):
    """Another image, another batch size or an unreadable file: the features are computed from the first image."""
    from introvae.metrics import partial

    gen = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (30, 1, 16, 16), dtype=torch.uint8, generator=gen)
    other = images.clone()
    other[29, 0, 5, 5] ^= 1  # one bit of the last image

    def stop_after_two(x, seen=[]):
        seen.append(1)
        if len(seen) == 3:
            raise RuntimeError("out of memory")
        return tiny_features(x)

    with pytest.raises(RuntimeError):
        _resumable_context(tmp_path, images, monkeypatch, stop_after_two).sample_features
    assert len(list(tmp_path.glob("sample-features-partial-*.pt"))) == 1

    for imgs, batch in ((other, 10), (images, 5)):
        calls = []
        _resumable_context(tmp_path, imgs, monkeypatch, lambda x: calls.append(len(x)) or tiny_features(x),
                           batch_size=batch).sample_features
        assert sum(calls) == 30

    (path,) = tmp_path.glob("sample-features-partial-*.pt")  # the first images' file is still there
    path.write_bytes(b"torn")
    calls = []
    _resumable_context(tmp_path, images, monkeypatch, lambda x: calls.append(len(x)) or tiny_features(x)).sample_features
    assert sum(calls) == 30 and not path.exists()
    assert partial.digest(images, a=1) != partial.digest(other, a=1) != partial.digest(other, a=2)


def test_sample_features_are_kept_every_interval_while_computed(tmp_path, monkeypatch):
    """A kill gives no chance to write: the features are also written every KEEP_EVERY_S seconds (here every
    batch), each time all of them so far, and once more complete (kept until the evaluation is recorded)."""
    from introvae.metrics import partial

    monkeypatch.setattr(partial, "KEEP_EVERY_S", -1.0)
    sizes = []
    monkeypatch.setattr(partial.PartialFeatures, "keep", lambda self, f: sizes.append(len(f)))
    images = torch.randint(0, 256, (35, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    _resumable_context(tmp_path, images, monkeypatch, tiny_features).sample_features
    assert sizes == [10, 20, 30, 35, 35]


def test_evaluate_stopped_by_sigterm_keeps_its_features_and_the_same_command_finishes_alike(tmp_path, monkeypatch,
                                                                                          faces16, capsys):
    """`kill` (SIGTERM) in the middle of the sample features: exit 130 with the kept file named; the same command
    then computes only the rest and appends the FID of an uninterrupted evaluation."""
    import os
    import signal

    from conftest import tiny_config
    from introvae.cli import main
    from introvae.trainer import Trainer

    Trainer(tiny_config(steps=2), tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None).train()
    argv = ["evaluate", str(tmp_path / "run"), "--num-samples", "40", "--batch-size", "10", "--pairs", "4",
            "--neighbours", "0", "--ref-images", "20", "--quiet"]
    calls = []

    def killed_in_third_sample_batch(x):  # the samples come first, then the 20 real images
        calls.append(len(x))
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return tiny_features(x)

    monkeypatch.setattr(fidlib, "load_inception", lambda device, precision="fp32": killed_in_third_sample_batch)
    monkeypatch.setattr(fidlib, "cache_dir", lambda: tmp_path / "cache")
    old = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 130
    assert signal.getsignal(signal.SIGTERM) == old  # the handler is the command's only
    err = capsys.readouterr().err
    assert "the same command resumes there" in err and "introvae: interrupted" in err
    (kept,) = (tmp_path / "run").glob("sample-features-partial-*.pt")
    assert len(torch.load(kept, weights_only=True)["features"]) == 20

    resumed_calls = []
    monkeypatch.setattr(fidlib, "load_inception",
                        lambda device, precision="fp32": lambda x: resumed_calls.append(len(x)) or tiny_features(x))
    assert main(argv) == 0
    assert "resuming the sample features at 20 of 40" in capsys.readouterr().err and not kept.exists()
    monkeypatch.setattr(fidlib, "load_inception", lambda device, precision="fp32": tiny_features)
    assert main(argv[:2] + ["-o", str(tmp_path / "clean")] + argv[2:]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    clean = json.loads((tmp_path / "clean" / "metrics.jsonl").read_text())
    assert rows[-1]["metrics"]["fid"]["value"] == clean["metrics"]["fid"]["value"]
    assert len(resumed_calls) == 2 + 2  # the last 20 samples, then the 20 real images (uninterrupted: 4 + 2)


def test_evaluate_stopped_in_the_real_features_loses_neither_the_samples_nor_the_real_images_done(
        tmp_path, monkeypatch, faces16, capsys):
    """SIGTERM while the real images' features are computed, after the samples': both are kept (the samples'
    complete), the same command computes only the real images' rest, records the FID of an uninterrupted
    evaluation and leaves no kept file behind."""
    import os
    import signal

    from conftest import tiny_config
    from introvae.cli import main
    from introvae.metrics import partial
    from introvae.trainer import Trainer

    Trainer(tiny_config(steps=2), tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None).train()
    monkeypatch.setattr(partial, "KEEP_EVERY_S", -1.0)  # every computation counts as long: kept at every batch
    monkeypatch.setattr(fidlib, "cache_dir", lambda: tmp_path / "cache")
    argv = ["evaluate", str(tmp_path / "run"), "--num-samples", "40", "--batch-size", "10", "--pairs", "4",
            "--neighbours", "0", "--ref-images", "30", "--quiet"]
    calls = []

    def killed_in_the_second_real_batch(x):  # four batches of samples, then three of real images
        calls.append(len(x))
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return tiny_features(x)

    monkeypatch.setattr(fidlib, "load_inception", lambda device, precision="fp32": killed_in_the_second_real_batch)
    assert main(argv) == 130
    assert "real-features-partial-" in capsys.readouterr().err
    (samples,) = (tmp_path / "run").glob("sample-features-partial-*.pt")
    (real,) = (tmp_path / "cache").glob("real-features-partial-*.pt")
    assert len(torch.load(samples, weights_only=True)["features"]) == 40
    assert len(torch.load(real, weights_only=True)["features"]) == 10

    resumed = []
    monkeypatch.setattr(fidlib, "load_inception",
                        lambda device, precision="fp32": lambda x: resumed.append(len(x)) or tiny_features(x))
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "resuming the sample features at 40 of 40" in err and "features at 10 of 30" in err
    assert resumed == [10, 10]  # the real images' last two batches, nothing else
    assert not list((tmp_path / "run").glob("*-partial-*")) and not list((tmp_path / "cache").glob("*-partial-*"))

    monkeypatch.setattr(fidlib, "load_inception", lambda device, precision="fp32": tiny_features)
    monkeypatch.setattr(fidlib, "cache_dir", lambda: tmp_path / "clean-cache")
    assert main(argv[:2] + ["-o", str(tmp_path / "clean")] + argv[2:]) == 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    clean = json.loads((tmp_path / "clean" / "metrics.jsonl").read_text())
    assert row["metrics"]["fid"]["value"] == clean["metrics"]["fid"]["value"]
    assert not list((tmp_path / "clean").glob("*-partial-*"))  # kept while long, gone once recorded


def test_evaluate_every_checkpoint_scores_each_once_draws_the_curve_and_resumes(tmp_path, monkeypatch, faces16,
                                                                              capsys):
    """`evaluate RUN --every-checkpoint`: one row per checkpoint, each as `evaluate CHECKPOINT` would score it, a
    curve, the lowest FID marked; the same command again scores nothing, a new checkpoint only itself, and other
    settings every checkpoint anew."""
    from conftest import tiny_config
    from introvae.cli import main
    from introvae.trainer import Trainer, resume

    Trainer(tiny_config(steps=6, checkpoint_every=3), tmp_path / "run", data=faces16, show_progress=False,
            log=lambda s: None).train()
    calls = []
    monkeypatch.setattr(fidlib, "load_inception",
                        lambda device, precision="fp32": lambda x: calls.append(len(x)) or tiny_features(x))
    monkeypatch.setattr(fidlib, "cache_dir", lambda: tmp_path / "cache")
    argv = ["evaluate", str(tmp_path / "run"), "--num-samples", "20", "--batch-size", "10", "--pairs", "4",
            "--neighbours", "0", "--ref-images", "20", "--quiet"]
    from introvae.checkpoint import list_checkpoints, step_of

    found = [step_of(p) for p in list_checkpoints(tmp_path / "run")]
    assert found[-2:] == [3, 6]
    assert main(argv + ["--every-checkpoint"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == found
    assert (tmp_path / "run" / "fid-curve.png").stat().st_size > 10_000
    fids = {r["step"]: r["metrics"]["fid"]["value"] for r in rows}
    best = min(fids, key=fids.get)
    (marked,) = [line for line in out.splitlines() if "<- lowest FID" in line]
    assert marked.split()[0] == str(best) and f"{fids[best]:.2f}" in marked
    # the same as scoring the step-3 checkpoint alone
    assert main(argv[:1] + [str(tmp_path / "run" / "checkpoints" / "step-000000003.pt"), "-o",
                            str(tmp_path / "alone")] + argv[2:]) == 0
    alone = json.loads((tmp_path / "alone" / "metrics.jsonl").read_text())
    assert alone["metrics"]["fid"]["value"] == fids[3]
    # --every-steps leaves out the untrained network of step 0 (scored into another folder: the run's rows stay)
    assert main(argv + ["--every-checkpoint", "--every-steps", "3", "-o", str(tmp_path / "by3")]) == 0
    by3 = [json.loads(line)["step"] for line in (tmp_path / "by3" / "metrics.jsonl").read_text().splitlines()]
    assert found[0] == 0 and by3 == [3, 6]

    calls.clear()
    assert main(argv + ["--every-checkpoint"]) == 0  # nothing new to score
    assert calls == [] and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == len(found)
    resume(tmp_path / "run", {"steps": 9}, data=faces16, show_progress=False, log=lambda s: None).train()
    assert main(argv + ["--every-checkpoint"]) == 0  # only the new checkpoint
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    now = [step_of(p) for p in list_checkpoints(tmp_path / "run")]
    assert now[-1] == 9 and steps == found + [9]
    assert main(argv + ["--every-checkpoint", "--seed", "1"]) == 0  # other settings: every checkpoint again
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == found + [9] + now
    # a corrupt checkpoint is named and skipped; the others are scored
    (tmp_path / "run" / "checkpoints" / f"step-{now[0]:09d}.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(argv + ["--every-checkpoint", "--seed", "2"]) == 0
    assert f"warning: skipped step-{now[0]:09d}.pt" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == found + [9] + now + now[1:]
    # --every-steps: only the checkpoints at its multiples (not those a stop wrote in between)
    assert now == [3, 6, 9]  # (step 0 pruned by keep_checkpoints; step 3 is the corrupt one)
    assert main(argv + ["--every-checkpoint", "--every-steps", "2", "--seed", "3"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[len(found) + 2 * len(now):] == [6]
    capsys.readouterr()
    assert main(argv + ["--every-checkpoint", "--every-steps", "4"]) == 2
    assert "no checkpoint of" in capsys.readouterr().err
    assert main(argv + ["--every-steps", "3"]) == 2
    assert "give both" in capsys.readouterr().err


def test_evaluate_every_checkpoint_refuses_what_is_not_a_run(tmp_path, capsys):
    from introvae.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    assert main(["evaluate", str(folder), "--every-checkpoint", "--data", "faces", "--image-size", "16"]) == 2
    assert "--every-checkpoint takes an image model's run directory" in capsys.readouterr().err
