"""Screenshots of the app's pages with the bundled models, for the README (docs/screenshots/).

    .venv/bin/python scripts/app_screenshots.py [--out docs/screenshots] [--models data/models]

Starts the app the way users do (``seqmamba app`` on a free local port) on the bundled packages and
drives Debian's headless chromium through Playwright: Home; DNA after scoring the sample FASTA with
``gue_prom_core_notata-mamba`` (with one sequence's attribution track); Forecast of the sample
exchange-rate CSV with ``exchange_rate-mamba-h96``; Models; Genome after annotating the phage lambda
sample with the first bundled gene caller (or, while none is bundled, the page saying so). Each wait
checks that real results are on the page, so a screenshot of an error or an empty page fails the run.
Takes a few minutes on a CPU, most of it the gene caller (about 1 kb/s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "app"))
from live_app import free_port, start_app, stop_app  # noqa: E402

SAMPLES = REPO / "data" / "samples"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
DNA_MODEL, DNA_SAMPLE = "gue_prom_core_notata-mamba", SAMPLES / "gue_prom_core_notata_test200.fa"
FORECAST_MODEL, FORECAST_SAMPLE = "exchange_rate-mamba-h96", SAMPLES / "exchange_rate_last1000.csv"
WAIT_MS = 300_000  # the gene caller on lambda takes about a minute on 2 busy cores
SETTLE_MS = 2_000  # for Vega to draw the charts after their element appears
WIDTH, HEIGHT = 1400, 1000


def _choose(tab, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit select box labelled ``label``."""
    tab.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    tab.get_by_role("option", name=option, exact=True).click()


def _open(tab, url: str, path: str) -> None:
    tab.goto(f"{url}/{path}")
    tab.get_by_role("heading").first.wait_for()


def _idle(tab) -> None:
    """Wait until the script has finished its run, then for the charts to be drawn."""
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)
    tab.wait_for_timeout(SETTLE_MS)


def _no_errors(tab, page: str) -> None:
    errors = tab.get_by_test_id("stAlertContentError")
    if errors.count():
        raise RuntimeError(f"{page} page shows an error: {errors.first.inner_text()}")
    if tab.get_by_test_id("stException").count():
        raise RuntimeError(f"{page} page shows an exception: {tab.get_by_test_id('stException').first.inner_text()}")


def capture(url: str, out: Path, profile: Path) -> list[Path]:
    """Drive the pages and save one full-page PNG each into ``out``; returns the files."""
    from playwright.sync_api import sync_playwright

    shots = []

    def shot(tab, name: str) -> None:
        _idle(tab)
        _no_errors(tab, name)
        # Streamlit scrolls its main block inside the window, so a full-page shot would show one screen:
        # make the window as tall as the page's content instead.
        height = tab.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        tab.set_viewport_size({"width": WIDTH, "height": max(HEIGHT, int(height))})
        tab.wait_for_timeout(SETTLE_MS)
        path = out / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        shots.append(path)
        tab.set_viewport_size({"width": WIDTH, "height": HEIGHT})

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": WIDTH, "height": HEIGHT})
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)

        _open(tab, url, "")
        tab.get_by_text("Uploads up to").wait_for()
        shot(tab, "home")

        _open(tab, url, "dna")
        _choose(tab, "Model", DNA_MODEL)
        tab.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(DNA_SAMPLE))
        tab.get_by_text("200 of 200 sequences shown").wait_for()
        tab.get_by_role("button", name="Compute the attribution").click()
        tab.get_by_text("In-silico mutagenesis for class").wait_for()
        shot(tab, "dna")

        _open(tab, url, "forecast")
        _choose(tab, "Model", FORECAST_MODEL)
        tab.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(FORECAST_SAMPLE))
        tab.get_by_text("Back-test on the end of the history").wait_for()
        shot(tab, "forecast")

        _open(tab, url, "models")
        tab.get_by_text(FORECAST_MODEL).first.wait_for()
        shot(tab, "models")

        _open(tab, url, "genome")
        tab.get_by_text("Genetic code").wait_for()
        if tab.get_by_text("No gene caller is bundled").count() == 0:
            tab.get_by_text("Use the sample").click()
            tab.get_by_role("button", name="Call genes").click()
            tab.get_by_role("button", name="Download the genes (GFF3)").wait_for()
        shot(tab, "genome")
        context.close()
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="folder for the PNGs")
    parser.add_argument("--models", type=Path, default=REPO / "data" / "models", help="the bundled packages")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        parser.error(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEQMAMBA_MODELS": str(args.models.resolve())}
    with tempfile.TemporaryDirectory(prefix="seqmamba-shots-") as tmp:
        port = free_port()
        proc = start_app(port, env, Path(tmp) / "app.log")
        try:
            shots = capture(f"http://127.0.0.1:{port}", args.out, Path(tmp) / "profile")
        finally:
            stop_app(proc)
    for path in shots:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
