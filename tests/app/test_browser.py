"""End to end in a real browser: `seqmamba app` on a free port, driven by Debian's headless chromium.

Uploads the sample FASTA and the sample CSV, waits for the results, checks the table and the charts,
downloads the CSV and checks its rows, uploads a broken file and checks the message, and saves a
screenshot of each page to the test's temporary folder (the tiny test models make poor pictures;
the README's screenshots come from ``scripts/app_screenshots.py`` with the bundled models, and a
test run must not change tracked files).
"""

import csv
import io
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 120_000  # per wait; generous because CI machines may be busy


def _require_chromium():
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI; scripts/setup.sh installs Debian's chromium when run as root")
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the browser test")


@pytest.fixture
def page(app_url, tmp_path):
    """A headless chromium tab (fresh profile) and the URL of a freshly started app."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            accept_downloads=True, viewport={"width": 1400, "height": 1800})
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        yield tab, app_url
        context.close()


def _open(tab, url: str, path: str) -> None:
    tab.goto(f"{url}/{path}")
    tab.get_by_role("heading").first.wait_for()


def _upload(tab, label: str, path_or_payload) -> None:
    """Give the uploader whose label starts with ``label`` a file (a path, or a dict with name,
    mimeType, buffer). By label, not position: while a page is still rendering, the model-package
    uploader beside it may be the only one on the page yet."""
    uploader = tab.get_by_test_id("stFileUploader").filter(has_text=label)
    uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(path_or_payload)


def _shot(tab, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_the_app_end_to_end_in_chromium(page, tmp_path):
    from pipelines.data.fasta import read_sequences

    tab, url = page
    shots = tmp_path / "screenshots"
    _open(tab, url, "")
    tab.get_by_text("Uploads up to 50 MB per file").wait_for()
    _shot(tab, shots, "home")

    # DNA: upload the sample FASTA, wait for the table and the histogram, download the CSV.
    fasta = SAMPLES / "gue_prom_core_notata_test200.fa"
    ids = [r.id for r in read_sequences(fasta)]
    _open(tab, url, "dna")
    _upload(tab, "FASTA or FASTQ", str(fasta))
    tab.get_by_text(f"{len(ids)} of {len(ids)} sequences shown").wait_for()
    tab.get_by_test_id("stDataFrame").wait_for()  # exactly one table (a strict locator)
    tab.get_by_test_id("stVegaLiteChart").first.wait_for()
    with tab.expect_download() as info:
        tab.get_by_role("button", name="Download all results (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert [r["id"] for r in rows] == ids
    assert all(abs(float(r["p_negative"]) + float(r["p_positive"]) - 1) < 1e-5 for r in rows)
    _shot(tab, shots, "dna")

    # A broken file: the data layer's message, and the page keeps working.
    _upload(tab, "FASTA or FASTQ", {"name": "protein.fa", "mimeType": "text/plain",
                           "buffer": b">p1\nMKVLLAEEFFPQWRRSTLLKPEEFFMKV\n"})
    alert = tab.get_by_test_id("stAlertContentError")
    alert.wait_for()
    assert "protein.fa, record 'p1'" in alert.inner_text() and "looks like protein" in alert.inner_text()
    assert tab.get_by_test_id("stDataFrame").count() == 0  # no stale results beside the message

    # Forecast: upload the sample CSV, wait for the chart and the back-test.
    _open(tab, url, "forecast")
    _upload(tab, "CSV, wide or long", str(SAMPLES / "exchange_rate_last1000.csv"))
    tab.get_by_text("Back-test on the end of the history").wait_for()
    tab.get_by_test_id("stVegaLiteChart").first.wait_for()
    with tab.expect_download() as info:
        tab.get_by_role("button", name="Download the forecast (CSV)").click()
    forecast = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert len(forecast) == 6 and {"date", "point", "q0.1", "q0.9"} <= set(forecast[0])
    _shot(tab, shots, "forecast")

    _open(tab, url, "models")
    tab.get_by_text("classes: negative, positive").wait_for()
    _shot(tab, shots, "models")
    assert sorted(p.name for p in shots.iterdir()) == ["dna.png", "forecast.png", "home.png", "models.png"]
