"""`introvae serve`: the page in a real browser (Debian's chromium, driven through its chromedriver by selenium),
and the operations behind it (introvae.explore) on values.

The browser test starts the server on a free local port, opens the page headless, and checks what a user sees:
samples appear and change with the button, uploaded images come back with their reconstructions and KL, a text
file gets a message (not a dead page), and the interpolation's picture changes when the slider moves. With
INTROVAE_SCREENSHOTS=DIR it also saves a screenshot of each tab there (the README's come from it)."""

import io
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from introvae.data import DataError
from introvae.explore import Explorer
from introvae.trainer import Trainer

from conftest import tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "run"
    # 30 steps at a high rate: enough for images that differ (after 6 steps they are nearly all black)
    Trainer(tiny_config(steps=30, vae_steps=5, lr=2e-3), run, show_progress=False, log=lambda s: None).train()
    return run


@pytest.fixture(scope="module")
def served(tiny_run):
    """The model the browser test serves: the tiny run, or INTROVAE_SERVE_MODEL (the README's screenshots show
    the demo's model, taken by this test)."""
    return Path(os.environ["INTROVAE_SERVE_MODEL"]) if os.environ.get("INTROVAE_SERVE_MODEL") else tiny_run


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two faces as uploads of another size and mode than the model's (RGB JPEG and PNG, 50x50), and a text file."""
    from skimage.data import lfw_subset

    d = tmp_path_factory.mktemp("uploads")
    faces = lfw_subset()
    for name, k, fmt in (("a", 95, "JPEG"), ("b", 97, "PNG")):
        face = Image.fromarray((faces[k] * 255).round().astype(np.uint8)).resize((50, 50)).convert("RGB")
        face.save(d / f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt)
    (d / "notes.txt").write_text("not an image\n")
    return d


# --- the operations, without a browser -----------------------------------------------------------
def test_explorer_operations_on_values(tiny_run, pictures):
    ex = Explorer(tiny_run, device="cpu")
    s = 16  # tiny_config's image size
    a, b = ex.samples(seed=3, temperature=1.0, n=4), ex.samples(seed=3, temperature=1.0, n=4)
    assert a.dtype == np.uint8 and a.shape[2] == 3 and np.array_equal(a, b)  # same seed, same images
    assert not np.array_equal(a, ex.samples(seed=4, n=4))
    assert not np.array_equal(a, ex.samples(seed=3, temperature=0.0, n=4))  # temperature 0: every z is 0
    zero = ex.samples(seed=3, temperature=0.0, n=4)
    cells = zero.reshape(-1)  # at temperature 0 the four images are the decoding of z = 0: identical cells
    assert cells.std() >= 0 and np.array_equal(ex.samples(seed=9, temperature=0.0, n=4), zero)
    out = ex.reconstruct([pictures / "a.jpg", pictures / "b.png"])
    assert len(out) == 2 and all(x.shape == r.shape for x, r, _ in out) and all(k >= 0 for _, _, k in out)
    x = ex.image(pictures / "a.jpg")
    assert x.shape == (1, s, s)  # an RGB upload for a grayscale model is converted
    kl = float(ex.model.kl(x[None])[0])
    assert out[0][2] == pytest.approx(kl, rel=1e-5)
    p0, p1 = ex.interpolate(pictures / "a.jpg", pictures / "b.png", 0.0), ex.interpolate(
        pictures / "a.jpg", pictures / "b.png", 1.0)
    mu = ex.model.encode(torch.stack([x, ex.image(pictures / "b.png")]))[0]
    from introvae.explore import as_array

    # t = 0 decodes A's code, with the generator's statistics for the encoder's codes (not the prior draws')
    assert np.array_equal(p0, as_array(ex.model.decode(mu[:1], encoded=True)[0]))
    assert np.array_equal(p1, as_array(ex.model.decode(mu[1:], encoded=True)[0]))
    assert not np.array_equal(p0, as_array(ex.model.decode(mu[:1])[0]))
    mean, dirs, std = ex.directions()
    assert dirs.shape[1] == ex.config.latent_dim and torch.allclose(dirs.norm(dim=1), torch.ones(len(dirs)), atol=1e-5)
    assert (std[:-1] >= std[1:]).all()  # largest first
    assert (tiny_run / "latent_directions.pt").is_file()  # cached with the model
    assert np.array_equal(ex.edit(pictures / "a.jpg", [0.0] * 3), p0)  # no move: A's code decoded
    assert not np.array_equal(ex.edit(pictures / "a.jpg", [2.0, 0.0, 0.0]), p0)
    assert ex.neighbours(seed=0, n=2, k=3).ndim == 3
    for bad, words in ((pictures / "notes.txt", "not an image"), (None, "no image")):
        with pytest.raises(DataError, match=words):
            ex.image(bad)
    assert "faces" in ex.card() and "step 30" in ex.card()


def test_a_huge_image_is_refused_before_it_is_decoded(tiny_run, tmp_path, monkeypatch):
    from introvae import explore

    monkeypatch.setattr(explore, "MAX_PIXELS", 1000)
    Image.new("L", (50, 50)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="too large"):
        Explorer(tiny_run, device="cpu").image(tmp_path / "big.png")


def test_serve_without_a_model_or_without_gradio_is_one_line(tmp_path, monkeypatch, capsys):
    from introvae.cli import main

    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    import builtins

    real_import = builtins.__import__

    def no_gradio(name, *a, **k):
        if name == "gradio":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'introvae[app]'" in capsys.readouterr().err


# --- the page, in a browser ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_or_out_of_range_is_one_line(tiny_run, capsys):
    """A taken port was gradio's traceback, and the command then hung; now one line, status 2, nothing left open."""
    from introvae.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"serve: cannot listen on 127.0.0.1:{port}" in err and "another --port" in err
    assert main(["serve", str(tiny_run), "--port", "70000"]) == 2
    assert "must be a port from 1 to 65535, got '70000'" in capsys.readouterr().err


def pixels(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not "
                    "installed (.ci/run installs them: apt-get install chromium chromium-driver)")
def test_the_page_in_a_real_browser(served, pictures, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from introvae.serve import serve

    shots = Path(os.environ.get("INTROVAE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    app = serve(served, port=port, device="cpu", block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 60, poll_frequency=0.2)

    def src(selector: str) -> str | None:
        found = driver.find_elements(By.CSS_SELECTOR, f"{selector} img")
        return found[0].get_attribute("src") if found else None

    def tab(name: str) -> None:
        next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == name).click()

    def upload(selector: str, *files: Path) -> None:
        driver.find_element(By.CSS_SELECTOR, f"{selector} input[type=file]").send_keys("\n".join(map(str, files)))

    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: "objective: introvae" in d.find_element(By.ID, "model-card").text)  # the model card
        first = wait.until(lambda d: src("#samples-out"))  # samples appear at load
        driver.find_element(By.ID, "samples-new").click()
        second = wait.until(lambda d: (s := src("#samples-out")) != first and s)
        assert not np.array_equal(pixels(first), pixels(second))  # new samples, new pixels
        driver.save_screenshot(str(shots / "serve-samples.png"))

        tab("Reconstruct")
        upload("#reconstruct-files", pictures / "a.jpg", pictures / "b.png")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#reconstruct-out img")) >= 4)
        wait.until(lambda d: "KL of the encoder" in d.find_element(By.ID, "reconstruct-kl").text)
        driver.save_screenshot(str(shots / "serve-reconstruct.png"))
        driver.find_element(By.CSS_SELECTOR, "#reconstruct-files button[aria-label='Clear']").click() \
            if driver.find_elements(By.CSS_SELECTOR, "#reconstruct-files button[aria-label='Clear']") else None
        upload("#reconstruct-files", pictures / "notes.txt")
        wait.until(lambda d: "not an image" in d.find_element(By.TAG_NAME, "body").text)  # a message, not a crash
        driver.save_screenshot(str(shots / "serve-error.png"))
        for close in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):  # dismiss it, as a user would
            close.click()

        tab("Interpolate")
        upload("#interp-a", pictures / "a.jpg")
        upload("#interp-b", pictures / "b.png")
        before = wait.until(lambda d: src("#interp-point"))
        wait.until(lambda d: src("#interp-strip"))
        driver.save_screenshot(str(shots / "serve-interpolate.png"))
        driver.find_element(By.CSS_SELECTOR, "#interp-t input[type=range]").send_keys(Keys.END)  # to B
        after = wait.until(lambda d: (s := src("#interp-point")) != before and s)
        assert not np.array_equal(pixels(before), pixels(after))  # the slider moved the picture

        tab("Edit")
        upload("#edit-image", pictures / "a.jpg")
        wait.until(lambda d: src("#edit-out"))
        driver.save_screenshot(str(shots / "serve-edit.png"))

        tab("Neighbours")
        driver.find_element(By.ID, "neighbours-go").click()
        wait.until(lambda d: src("#neighbours-out"))
        driver.save_screenshot(str(shots / "serve-neighbours.png"))
        time.sleep(0.2)
    finally:
        driver.quit()
        app.close()


def test_a_grayscale_upload_for_an_rgb_model_is_converted(tmp_path, pictures):
    run = tmp_path / "rgb"
    Trainer(tiny_config(steps=2, vae_steps=1, in_channels=3), run, show_progress=False, log=lambda s: None).train()
    ex = Explorer(run, device="cpu")
    Image.open(pictures / "b.png").convert("L").save(tmp_path / "gray.png")
    x = ex.image(tmp_path / "gray.png")
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # gray in R, G and B
    (inp, rec, kl), = ex.reconstruct([tmp_path / "gray.png"])
    assert inp.shape == rec.shape and inp.shape[2] == 3 and kl >= 0
