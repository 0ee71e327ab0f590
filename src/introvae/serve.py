"""``introvae serve``: a local web page over :class:`introvae.explore.Explorer`, built with Gradio.

Gradio is the field's convention for such pages (Hugging Face Spaces): its components (image upload, gallery,
slider) are what the page needs, it serves its own front end from the wheel (nothing is fetched from the
network), and it is an optional extra (``pip install 'introvae[app]'``), so the core package stays light.
Each callback turns a :class:`UserError` (a file that is not an image, a huge image, no training data) into a
message on the page; nothing reaches the user as a stack trace.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import UserError

DIRECTIONS = 6  # sliders on the Edit tab


def require_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports, no version checks
    try:
        import gradio
    except ImportError:
        raise UserError("serve needs the optional web extra: pip install 'introvae[app]'") from None
    return gradio


def build_app(explorer):
    """The page: the model card, then the Samples, Reconstruct, Interpolate, Edit and Neighbours tabs."""
    gr = require_gradio()

    def shown(fn):
        """A callback whose user errors become a message on the page (and whose other errors one line)."""
        @functools.wraps(fn)
        def run(*args):
            try:
                return fn(*args)
            except UserError as e:
                raise gr.Error(str(e)) from None
            except Exception as e:  # noqa: BLE001 - never a traceback on the page; the server log keeps it
                import traceback

                traceback.print_exc()
                raise gr.Error(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'failed'}") from None
        return run

    def path_of(value):
        return getattr(value, "name", value)  # gr.File gives paths (or objects with .name in older versions)

    @shown
    def reconstruct(files):
        if not files:
            return [], ""
        files = files if isinstance(files, list) else [files]
        results = explorer.reconstruct([path_of(f) for f in files])
        gallery, lines = [], ["| image | KL of the encoder (nats) |", "|---|---|"]
        for f, (x, r, kl) in zip(files, results):
            name = Path(path_of(f)).name
            gallery += [(x, f"{name}: input"), (r, f"{name}: reconstruction")]
            lines.append(f"| {name} | {kl:.1f} |")
        lines.append("\nA real image of the kind the model was trained on gets a small KL; an unusual one a large "
                     "KL (the encoder's score of Eq. 11: an anomaly score).")
        return gallery, "\n".join(lines)

    @shown
    def interpolate(a, b, t):
        if a is None or b is None:
            return None, None
        return explorer.interpolate(a, b, t), explorer.strip(a, b, 8)

    @shown
    def edit(image, *amounts):
        if image is None:
            return None
        return explorer.edit(image, list(amounts))

    with gr.Blocks(title="introvae: explore a model") as app:
        gr.Markdown("## IntroVAE: explore a model\n" + explorer.card(), elem_id="model-card")
        with gr.Tab("Samples", elem_id="tab-samples"):
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="seed (same seed, same images)", elem_id="samples-seed")
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature (scale of z_p)",
                                        elem_id="samples-temperature")
                new = gr.Button("New samples", elem_id="samples-new")
            samples = gr.Image(label="samples", type="numpy", interactive=False, height=420, elem_id="samples-out")
        with gr.Tab("Reconstruct", elem_id="tab-reconstruct"):
            files = gr.File(file_count="multiple", type="filepath", label="images (any size and format)",
                            elem_id="reconstruct-files")
            pairs = gr.Gallery(label="each input (as the model sees it) and its reconstruction", columns=4,
                               height=320, elem_id="reconstruct-out")
            scores = gr.Markdown(elem_id="reconstruct-kl")
        with gr.Tab("Interpolate", elem_id="tab-interpolate"):
            with gr.Row():
                image_a = gr.Image(type="filepath", label="image A", height=200, elem_id="interp-a")
                image_b = gr.Image(type="filepath", label="image B", height=200, elem_id="interp-b")
            with gr.Row():
                sample_a = gr.Button("A: a sample", elem_id="interp-sample-a")
                sample_b = gr.Button("B: a sample", elem_id="interp-sample-b")
            position = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="position between A and B",
                                 elem_id="interp-t")
            with gr.Row():
                point = gr.Image(label="the decoded point", type="numpy", interactive=False, height=260,
                                 elem_id="interp-point", scale=1)
                strip = gr.Image(label="the whole path (Fig. 6)", type="numpy", interactive=False, height=260,
                                 elem_id="interp-strip", scale=3)
        with gr.Tab("Edit", elem_id="tab-edit"):
            with gr.Row():
                to_edit = gr.Image(type="filepath", label="image", height=260, elem_id="edit-image")
                edited = gr.Image(label="edited", type="numpy", interactive=False, height=260, elem_id="edit-out")
            gr.Markdown("Each slider moves the image's code along one principal direction of the encoded training "
                        "images (in standard deviations), largest first.")
            amounts = [gr.Slider(-3.0, 3.0, value=0.0, step=0.25, label=f"direction {i + 1}",
                                 elem_id=f"edit-direction-{i + 1}") for i in range(DIRECTIONS)]
        with gr.Tab("Neighbours", elem_id="tab-neighbours"):
            gr.Markdown("Each row: a sample, then its 5 nearest training images in pixels (L2), as in App. E: "
                        "a model that copies its training images shows near-duplicates here.")
            with gr.Row():
                nb_seed = gr.Number(value=0, precision=0, label="seed", elem_id="neighbours-seed")
                nb_go = gr.Button("Find neighbours", elem_id="neighbours-go")
            nb_out = gr.Image(label="samples and their nearest training images", type="numpy", interactive=False,
                              height=520, elem_id="neighbours-out")

        draw = shown(explorer.samples)
        app.load(draw, [seed, temperature], samples)
        new.click(lambda s: int(s or 0) + 1, seed, seed).then(draw, [seed, temperature], samples)
        temperature.release(draw, [seed, temperature], samples)
        seed.submit(draw, [seed, temperature], samples)
        files.change(reconstruct, files, [pairs, scores])
        for trigger in (image_a.change, image_b.change, position.change):  # change: the picture follows the drag
            trigger(interpolate, [image_a, image_b, position], [point, strip])
        one_sample = shown(lambda s: explorer.samples(int(s or 0), 1.0, 1))
        sample_a.click(one_sample, nb_seed, image_a)
        sample_b.click(lambda s: one_sample(int(s or 0) + 1), nb_seed, image_b)
        for trigger in [to_edit.change] + [s.release for s in amounts]:
            trigger(edit, [to_edit, *amounts], edited)
        nb_go.click(shown(explorer.neighbours), nb_seed, nb_out)
    return app


def serve(source: str | Path, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          data: str | None = None, block: bool = True):
    """Load the model, build the page and serve it; prints the address. ``block`` False returns the running app
    (tests close it with ``app.close()``)."""
    require_gradio()
    from .explore import Explorer

    explorer = Explorer(source, device=device, data=data)
    app = build_app(explorer)
    app.queue(default_concurrency_limit=1)  # one model, one computation at a time
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True, quiet=True,
                   ssr_mode=False)
    except OSError as e:  # the port is taken (gradio: "Cannot find empty port"), or the host is not this machine's
        app.close()
        raise UserError(f"serve: cannot listen on {host}:{port} ({str(e).splitlines()[0].split('. ')[0]}); give "
                        f"another --port or --host") from None
    print(f"serving {source} at http://{host}:{port} (Ctrl-C to stop)", flush=True)
    if not block:
        return app
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return app
