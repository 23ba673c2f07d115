"""The demo Space (hub/space/app.py): its helpers, and the whole app driven in a real browser.

The browser test starts the app on 127.0.0.1 with a tiny random-weight model, opens it in headless Debian
Chromium through Playwright, uploads a real video, submits queries and checks that the table shows the
pipeline's own answer and that the timeline image loads; an empty query must show the error message.
Needs ``apt-get install chromium`` and the ``playwright`` package (the browser build Playwright would
download is not used). Set ``SGDETR_UPDATE_DOCS=1`` to refresh ``docs/space_screenshot.png``.
"""

import importlib.util
import os
import shutil
import socket

import pytest
from release_scripts import publishing

from pipeline_testing import edit_weights
from sgdetr_hf.loading_sgdetr import CheckpointError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = publishing.SOURCE_ROOT / "docs" / "space_screenshot.png"


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location(
        "space_app", publishing.SOURCE_ROOT / "hub" / "space" / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_queries(app):
    assert app.parse_queries(" a man rides a bike \n\n  the road\n") == ["a man rides a bike", "the road"]
    with pytest.raises(ValueError, match="at least one query"):
        app.parse_queries("  \n ")
    with pytest.raises(ValueError, match="At most 8 queries"):
        app.parse_queries("\n".join(f"q{i}" for i in range(9)))


def test_moments_table_rounds_and_ranks(app):
    results = [
        {"query": "a", "pred_relevant_windows": [[1.234, 5.678, 0.91234], [0.0, 2.0, 0.5]]},
        {"query": "b", "pred_relevant_windows": [[3.0, 4.0, 0.25]]},
    ]
    assert app.moments_table(results) == [
        ["a", 1, 1.23, 5.68, 0.9123],
        ["a", 2, 0.0, 2.0, 0.5],
        ["b", 1, 3.0, 4.0, 0.25],
    ]


def test_a_model_with_a_missing_weight_is_not_served(app, tiny_model_dir, tmp_path):
    repo = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (dropped,) = edit_weights(repo, drop=1)
    with pytest.raises(CheckpointError, match=f"1 missing, randomly initialised \\({dropped}\\)"):
        app.build_demo(str(repo))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _table_rows(page) -> list[list[str]]:
    rows = page.get_by_role("grid", name="Moments").get_by_role("row")
    texts = [rows.nth(i).get_by_role("gridcell").all_inner_texts() for i in range(rows.count())]
    return [row for row in texts if row]  # the header row has column headers, not grid cells


@pytest.mark.slow
def test_space_in_a_real_browser(app, tiny_model_dir, shared_data, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    video = shared_data / "videos" / "bikes.mp4"
    queries = ["a man rides a bike", "the road"]
    demo = app.build_demo(model=str(tiny_model_dir))
    expected = app.moments_table(
        app.pipeline(
            "video-moment-retrieval",
            pipeline_class=app.VideoMomentRetrievalPipeline,
            model=str(tiny_model_dir),
        )(str(video), queries=queries, top_k=3)
    )
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(demo.local_url)
            page.locator("input[type=file]").first.set_input_files(str(video))
            # the upload is asynchronous: wait for the player before submitting, or the app sees no video
            page.locator("video").first.wait_for(timeout=60_000)
            find = page.get_by_role("button", name="Find moments")

            page.get_by_label("Queries (one per line)").fill("\n".join(queries))
            find.click()
            page.locator("#timeline img").wait_for(timeout=120_000)
            page.locator("#moments").get_by_text(queries[1]).first.wait_for(state="attached", timeout=60_000)
            shown = [[q, int(r), float(s), float(e), float(p)] for q, r, s, e, p in _table_rows(page)]
            assert shown == expected  # the table shows the pipeline's own answer
            for query, _rank, start, end, score in expected:
                assert query in queries and 0 <= start < end <= 10.0 and 0 <= score <= 1
            assert page.locator("#timeline img").evaluate("image => image.naturalWidth") > 500
            screenshot = tmp_path / "space.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # no query: the error message is shown and the app keeps working
            page.get_by_label("Queries (one per line)").fill("  ")
            find.click()
            sync_api.expect(page.get_by_text("Type at least one query").first).to_be_visible(timeout=60_000)
            browser.close()
    finally:
        demo.close()
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("SGDETR_UPDATE_DOCS") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)


def test_the_plot_folder_keeps_only_the_newest_plots(app):
    plots = app.PlotFolder(keep=2)
    written = []
    for _ in range(5):
        path = plots.new_path()
        path.write_bytes(b"png")
        written.append(path)
    assert sorted(plots.path.iterdir()) == sorted(written[-2:])  # before: one file per request, forever
    assert app.MAX_KEPT_PLOTS >= 8
