"""The results registry: the README's tables are renderings of results/records.jsonl, checked in CI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _registry():
    spec = importlib.util.spec_from_file_location("registry", ROOT / "results" / "registry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_repo(tmp_path: Path) -> tuple[Path, Path, Path]:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png", "*.json"))
    (tmp_path / "results").mkdir()
    shutil.copy(ROOT / "results" / "records.jsonl", tmp_path / "results" / "records.jsonl")
    return tmp_path / "README.md", tmp_path / "docs" / "results.md", tmp_path / "results" / "records.jsonl"


def _check(reg, readme, page, records) -> int:
    return reg.render(check=True, readme=readme, page=page, records_path=records)


def test_the_repositorys_tables_match_the_records():
    reg = _registry()
    assert reg.render(check=True) == 0
    readme, scaling = (ROOT / "README.md").read_text(), (ROOT / "docs" / "scaling.md").read_text()
    for text, name in ((readme, "fashion-mnist"), (readme, "densities"), (readme, "models"), (scaling, "speed")):
        assert f"<!-- results:{name} -->" in text and f"<!-- /results:{name} -->" in text


def test_a_table_cell_edited_by_hand_fails_the_check(tmp_path, capsys):
    reg = _registry()
    readme, page, records = _copy_repo(tmp_path)
    assert _check(reg, readme, page, records) == 0
    text = readme.read_text()
    cell = "| 21.5 ± 1.6 |"  # WGAN's published FID
    assert cell in text
    readme.write_text(text.replace(cell, "| 19.5 ± 1.6 |", 1))
    assert _check(reg, readme, page, records) == 1
    assert "README.md differ from results/records.jsonl" in capsys.readouterr().err
    reg.render(check=False, readme=readme, page=page, records_path=records)  # rendering puts it back
    assert readme.read_text() == text


def test_a_new_record_changes_the_rendered_table(tmp_path):
    reg = _registry()
    readme, page, records = _copy_repo(tmp_path)
    proto = {"ref_split": "test", "num_samples": 10000, "ref_images": 10000, "feature_precision": "fp32",
             "bn_protocol": "eval"}
    new = [{"data": "fashion-mnist", "objective": "introvae", "preset": "fashion-mnist", "epochs": 7, "seed": s,
            "metric": "fid", "value": v, "protocol": proto, "wall_time": {"train_s": 7200}} for s, v in
           ((0, 30.0), (1, 34.0))]
    reg.append_records(new, records)
    assert _check(reg, readme, page, records) == 1
    reg.render(check=False, readme=readme, page=page, records_path=records)
    row = next(ln for ln in readme.read_text().splitlines() if "| 7 |" in ln)
    assert "**32.0 ± 2.8**" in row and "| 0, 1 |" in row and "2.0 h" in row and row.startswith("| IntroVAE (ours)")
    # the fastest seed's time says the machine that took it where the run recorded it
    reg.append_records([dict(new[0], epochs=8, wall_time={"train_s": 3000, "train_machines": {"AMD EPYC (avx2)": 3000}}),
                        dict(new[1], epochs=8, wall_time={"train_s": 2000, "train_machines": {"A (avx2)": 1000,
                                                                                              "B (avx2)": 1000}})],
                       records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    row = next(ln for ln in readme.read_text().splitlines() if "| 8 | **" in ln)
    assert row.endswith("| 33 min, 2 machines |"), row
    reg.append_records([dict(new[0], epochs=8, seed=5, wall_time={"train_s": 60, "train_machines": {"C (avx2)": 60}})],
                       records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    row = next(ln for ln in readme.read_text().splitlines() if "| 8 | **" in ln)
    assert row.endswith("| 1 min, C (avx2) |"), row
    records.write_text("".join(ln + "\n" for ln in records.read_text().splitlines() if '"epochs": 8,' not in ln))
    # the same models scored with the generator's BatchNorm statistics re-estimated: a row of their own, said so
    reg.append_records([dict(new[0], value=25.0, protocol=dict(proto, bn_protocol="recalibrate"))], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    rows = [ln for ln in readme.read_text().splitlines() if "| 7 |" in ln]
    # records without generator_stats are of models with one set of statistics for both passes: labelled so
    assert len(rows) == 2 and "**32.0 ± 2.8**" in rows[0] and "BN: one set for both passes (≤ 0.7.7) | 7 |" in rows[0]
    assert "generator's BN: re-estimated on prior draws | 7 | **25.0** |" in rows[1]
    # a model that kept a set per pass (0.7.8), plain eval mode: the preset's own row, unlabelled, and in the README
    # the only one of its objective and epochs; docs/history.md keeps every version's, the current one first
    reg.append_records([dict(new[1], value=20.0, protocol=dict(proto, generator_stats="per-pass"))], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    rows = [ln for ln in readme.read_text().splitlines() if "| 7 |" in ln]
    assert len(rows) == 1 and "| `fashion-mnist` | 7 | **20.0** |" in rows[0]
    rows = [ln for ln in (readme.parent / "docs" / "history.md").read_text().splitlines() if "| 7 |" in ln]
    assert len(rows) == 3 and "| `fashion-mnist` | 7 | **20.0** |" in rows[0] and "**32.0 ± 2.8**" in rows[1]
    # the repository's own: IntroVAE's 5-epoch rows of earlier versions are in docs/history.md only
    assert not [ln for ln in readme.read_text().splitlines() if ln.startswith("| IntroVAE (ours)") and "| 5 |" in ln
                and "one set for both passes" in ln]
    # a VAE of 0.7.8 and before sampled with its one set, its encoder codes' statistics: labelled so
    reg.append_records([dict(new[0], objective="vae", preset="fashion-mnist-vae", value=60.0)], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    assert ("| VAE (ours) | `fashion-mnist-vae`, generator's BN: the encoder codes' (≤ 0.7.8) | 7 | **60.0** |"
            in readme.read_text())
    # one that tracks its prior draws' statistics too (0.7.9) is the preset's plain row
    reg.append_records([dict(new[0], objective="vae", preset="fashion-mnist-vae", value=50.0,
                             protocol=dict(proto, generator_stats="per-pass"))], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    assert "| VAE (ours) | `fashion-mnist-vae` | 7 | **50.0** |" in readme.read_text()
    # a preset with changed settings is a screen: docs/results.md lists it, the README's table does not
    reg.append_records([dict(new[0], preset="fashion-mnist --ema 0", value=44.0)], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    assert "**44.0**" not in readme.read_text() and "fashion-mnist --ema 0" in page.read_text()
    # a figure under another protocol never joins the literature's table
    reg.append_records([dict(new[0], epochs=9, protocol=dict(proto, ref_split="train"))], records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    assert "| 9 |" not in readme.read_text() and "ref_split train" in page.read_text()


def test_records_from_a_run_carry_protocol_command_commit_and_machine(tmp_path):
    reg = _registry()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": "fashion-mnist", "objective": "vae", "seed": 3,
                                                 "batch_size": 16, "lr": 1e-3}))
    (run / "stats.jsonl").write_text("\n".join(json.dumps({"step": s, "images_per_s": 80.0}) for s in (50, 100)))
    proto = {"ref_split": "test", "num_samples": 10000}
    rows = [{"step": 100, "during_training": True, "metrics": {"fid": {"value": 9.0}}, "protocol": proto},
            {"step": 100, "seconds": 12.5, "protocol": proto,
             "metrics": {"fid": {"value": 88.123}, "precision_recall": {"precision": 0.5, "recall": 0.25}}}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    recs = reg.records_from_run(run, preset="p", train_command="T", eval_command="E", num_train=800)
    assert [(r["metric"], r["value"]) for r in recs] == [("fid", 88.12), ("precision", 0.5), ("recall", 0.25)]
    r = recs[0]
    assert (r["epochs"], r["seed"], r["objective"], r["protocol"]) == (2.0, 3, "vae", proto)
    assert r["command"] == "T; E" and r["wall_time"] == {"train_s": 20.0, "evaluate_s": 12.5}
    assert "torch" in r["machine"] and r["config_sha"] == reg.config_sha({"data": "fashion-mnist", "objective": "vae",
                                                                          "seed": 0, "batch_size": 16, "lr": 1e-3})
    with pytest.raises(SystemExit):
        reg.records_from_run(run, preset="p", train_command="T", eval_command="E", num_train=800, step=5)
    # epochs as the trainer counts them: whole batches (810 images of 16 are 50 steps, so 100 steps are 2 epochs)
    assert reg.records_from_run(run, preset="p", train_command="T", eval_command="E", num_train=810)[0]["epochs"] == 2.0
    # a run that recorded its sessions (0.7.14 on): the training time split by the machine that took it
    epyc = {"cpu": "AMD EPYC", "cpu_flags": ["avx2"]}
    (run / "sessions.jsonl").write_text(json.dumps({"step": 0, "machine": epyc}) + "\n")
    r = reg.records_from_run(run, preset="p", train_command="T", eval_command="E", num_train=800)[0]
    assert r["wall_time"] == {"train_s": 20.0, "evaluate_s": 12.5, "train_machines": {"AMD EPYC (avx2)": 20.0}}


def test_pipeline_rows_are_recorded_and_rendered_beside_the_projected_gpu_rate():
    reg = _registry()
    rows = [{"source": "png", "size": 256, "workers": w, "images_per_s": v, "setup_s": 0.1, "images": 128}
            for w, v in ((0, 40.0), (2, 75.5))] + \
           [{"source": "prepared store", "size": 256, "workers": 0, "images_per_s": 9000.0, "setup_s": 0.0,
             "images": 128}]
    records = reg.records_from_pipeline(rows, command="python benchmarks/data_pipeline.py")
    assert [r["value"] for r in records] == [40.0, 75.5, 9000.0]
    assert all(r["command"] == "python benchmarks/data_pipeline.py" and "machine" in r for r in records)
    projection = {"metric": "projected_img_s_h100", "preset": "celebahq256", "value": 574.2}
    table = reg.table_pipeline(records + [projection]).splitlines()
    assert table[0] == "| source | 256 px, 0 / 2 workers |"
    assert table[2] == "| png | 40 / 76 |" and table[3] == "| prepared store | 9000 / - |"
    assert table[4] == "| *one H100 consumes* | 574 *projected* |"


def test_throughput_rows_are_recorded_with_their_objective_and_threads_and_an_epochs_minutes():
    reg = _registry()
    row = {"preset": "fashion-mnist-soft", "objective": "soft-introvae", "image_size": 32, "batch_size": 16,
           "precision": "fp32", "channels_last": False, "threads": 1, "images_per_s": 12.5, "gflop_per_image": 2.6,
           "achieved_tflops": 0.0325, "peak_tflops": 0.065, "emulated": False}
    records = reg.records_from_throughput([row, dict(row, emulated=True)], command="B")  # no peak: not recorded
    assert len(records) == 1 and records[0]["extra"]["threads"] == 1 and records[0]["command"] == "B"
    line = reg.table_speed(records).splitlines()[2]
    # 60,000 images at 12.5 img/s: 80 min; the share of the peak, 50 %
    assert line.startswith("| `fashion-mnist-soft` | Soft-IntroVAE | 16 | fp32 | no | 1 | 12.5 | 80 | 2.60 |"), line
    assert "| 50.0 |" in line


def test_2d_runs_are_recorded_with_their_networks_and_replace_the_earlier_networks_cells(tmp_path):
    """A finished 2D run's four scores become records naming its networks; the README's cell for that density and
    objective then shows them, and the cells still from the earlier, shallower networks keep their dagger."""
    from introvae.toy2d import ToyConfig, train

    reg = _registry()
    readme, page, records = _copy_repo(tmp_path)
    earlier = [r for r in reg.read_records(records) if "networks" not in r.get("extra", {})]
    records.write_text("".join(json.dumps(r) + "\n" for r in earlier))  # the repository's later 2D runs left out
    run = tmp_path / "runs" / "8g-soft"
    train(ToyConfig(objective="soft-introvae", steps=30, vae_steps=10, eval_points=200, seed=3, score_draws=4), run,
          progress=False)
    new = reg.records_from_2d_run(run, command="c")
    assert {r["metric"] for r in new} == {"kl", "jsd", "kl_textbook", "jsd_textbook", "kl_draws", "jsd_draws"}
    draws = json.loads((run / "scores.json").read_text())["draws"]
    kl_draws = next(r for r in new if r["metric"] == "kl_draws")
    assert (kl_draws["value"], kl_draws["std"], kl_draws["extra"]["draws"]) == (
        round(draws["kl"][0], 4), round(draws["kl"][1], 4), 4)
    assert all(r["extra"]["networks"].startswith("MLPs with 4 ReLU layers of 256") and r["precision"] == "fp32"
               and r["seed"] == 3 and r["protocol"]["kind"] == "2d-histogram" for r in new)
    reg.append_records(new, records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    row = next(ln for ln in readme.read_text().splitlines() if ln.startswith("| 8gaussians |"))
    jsd = next(r["value"] for r in new if r["metric"] == "jsd")
    cells = [c.strip() for c in row.split("|")]
    assert cells[4].strip("*") == f"{jsd:.2f}" and "†" in cells[2] and "†" in cells[3]
    assert cells[6] == "3/3/1"  # seeds per objective differ now
    # a run with the authors' undetached target goes to the docs' table, not the README's
    variant = tmp_path / "runs" / "8g-soft-tgrad"
    train(ToyConfig(objective="soft-introvae", steps=30, vae_steps=10, eval_points=200, seed=4, target_grad=True),
          variant, progress=False)
    reg.append_records(reg.records_from_2d_run(variant, command="c"), records)
    reg.render(check=False, readme=readme, page=page, records_path=records)
    assert next(ln for ln in readme.read_text().splitlines() if ln.startswith("| 8gaussians |")) == row
    assert "x_r's target with its gradient" in (tmp_path / "docs" / "soft-introvae-2d.md").read_text()
    # Soft-IntroVAE's warm-up scale (introvae 0.7.2): said by the run, else placed by the commit that measured it
    assert all(r["extra"]["warmup"] == "the authors' warm-up scale (beta_rec rec + beta_kl KL)" for r in new)
    assert "; the authors' warm-up scale" in (tmp_path / "docs" / "soft-introvae-2d.md").read_text()
    scores = json.loads((run / "scores.json").read_text())
    (run / "scores.json").write_text(json.dumps({k: v for k, v in scores.items() if k != "warmup"}))
    known = subprocess.run(["git", "cat-file", "-e", "d1540e4^{commit}"], cwd=reg.ROOT, capture_output=True)
    if known.returncode != 0:
        return  # a copy without the repository's history (the placing by commit needs it)
    try:
        reg.MEASURED_AT = "d1540e4"  # the last commit before the authors' scale
        assert reg.records_from_2d_run(run, command="c")[0]["extra"]["warmup"] is None
        reg.MEASURED_AT = reg.SOFT_WARMUP_SINCE
        assert reg.records_from_2d_run(run, command="c")[0]["extra"]["warmup"].startswith("the authors'")
    finally:
        reg.MEASURED_AT = "HEAD"
    # a run from before 2D runs scored several draws gets them scored from its saved model when recorded
    scores = json.loads((run / "scores.json").read_text())
    (run / "scores.json").write_text(json.dumps({k: v for k, v in scores.items() if k != "draws"}))
    again = next(r for r in reg.records_from_2d_run(run, command="c") if r["metric"] == "kl_draws")
    assert (again["value"], again["std"]) == (kl_draws["value"], kl_draws["std"])
    # a run from before 2D runs named their networks is refused with one line
    scores = json.loads((run / "scores.json").read_text())
    del scores["networks"]
    (run / "scores.json").write_text(json.dumps(scores))
    with pytest.raises(SystemExit, match="before 2D runs named their networks"):
        reg.records_from_2d_run(run, command="c")


def test_the_samples_picture_has_a_labelled_row_per_model(tmp_path):
    import importlib.util

    import torch
    from PIL import Image

    from introvae import IntroVAE

    from conftest import tiny_config

    spec = importlib.util.spec_from_file_location("samples_picture", ROOT / "results" / "samples_picture.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)  # two different models
        IntroVAE(tiny_config().model).save_pretrained(tmp_path / name)
    one = tool.main([f"{tmp_path / 'a'}=A", "-o", str(tmp_path / "one.png"), "-n", "4"])
    two = tool.main([f"{tmp_path / 'a'}=A", f"{tmp_path / 'b'}=B\\nsecond line", "-o", str(tmp_path / "two.png"),
                     "-n", "4"])
    assert one == two == 0
    h1, h2 = Image.open(tmp_path / "one.png").height, Image.open(tmp_path / "two.png").height
    assert h2 > 1.6 * h1  # a row more
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "a"), "-o", str(tmp_path / "x.png")])  # no label


def test_a_compare_folder_is_recorded_and_rendered_apart_from_the_literature_table(tmp_path):
    reg = _registry()
    proto = {"ref_split": "test", "num_samples": 10000, "ref_images": 10000, "feature_precision": "fp32",
             "bn_protocol": "eval"}
    rows = [{"objective": o, "seed": s, "steps": n, "batch_size": b, "fid": f, "precision": 0.5, "recall": r,
             "psnr": 20.0 + s, "train_s": 600.0 + 60 * s, "protocol": proto, "run": f"/x/{o}-s{s}"}
            for o, s, n, b, f, r in (("introvae", 0, 2000, 16, 60.0, 0.2), ("introvae", 1, 2200, 16, 64.0, 0.4),
                                     ("vae", 0, 6000, 16, 140.123, None))]
    (tmp_path / "compare.json").write_text(json.dumps(rows))
    command = "introvae compare --data fashion-mnist --budget=10min --seeds 2 --out OUT"
    recs = reg.records_from_compare(tmp_path, command=command)
    assert len(recs) == 4 + 4 + 3  # the VAE row has no recall
    assert {r["preset"] for r in recs} == {"introvae compare, 10 min of training"}
    assert next(r for r in recs if r["objective"] == "vae" and r["metric"] == "fid")["value"] == 140.12
    table = reg.table_compare(recs).splitlines()
    assert table[2] == "| IntroVAE | 33,600 | **62.0 ± 2.8** | 0.500 ± 0.000 | 0.300 ± 0.141 | 20.50 ± 0.71 | 10.5 min | 2 |"
    assert table[3] == "| VAE | 96,000 | **140.1** | 0.500 | - | 20.00 | 10.0 min | 1 |"
    assert table[5].startswith(f"`{command}` (commit ") and "10,000 samples against 10,000 test images" in table[5]
    # under the literature's protocol too, a comparison's short runs never join the literature's table
    assert "compare" not in reg.table_fashion_mnist(recs) and "62.0" not in reg.table_fashion_mnist(recs)
    with pytest.raises(SystemExit, match="names no --budget"):
        reg.records_from_compare(tmp_path, command="introvae compare --data fashion-mnist")


def test_a_record_names_the_commit_whose_code_measured_it():
    """--commit REV: a run made from a snapshot of an earlier commit is recorded with that commit, resolved and
    checked by git; HEAD by default."""
    import subprocess

    reg = _registry()
    if reg.git_commit() is None:
        pytest.fail("the repository's tests run in a git checkout")
    full = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    reg.MEASURED_AT = full
    assert full.startswith(reg.git_commit()) and len(reg.git_commit()) < len(full)
    reg.MEASURED_AT = "no-such-commit"
    with pytest.raises(SystemExit, match="--commit no-such-commit is not a commit of this repository"):
        reg.git_commit()


def test_the_fid_curve_counts_a_forks_epochs_on_from_its_sources_in_its_own_batch():
    spec = importlib.util.spec_from_file_location("fid_curve", ROOT / "results" / "fid_curve.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.line_epochs([3750, 7500], 3750) == [1.0, 2.0]
    # batch 16 to epoch 5 (3,750 steps an epoch), then forked with a batch of 64 (937 steps an epoch)
    assert tool.line_epochs([18750, 19687, 21561], 937, (18750, 3750)) == [5.0, 6.0, 8.0]
    assert tool.line_epochs([30000, 33750], 3750, (30000, 3750)) == [8.0, 9.0]  # same batch: as without a fork
