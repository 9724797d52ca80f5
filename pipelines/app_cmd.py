"""``seqmamba app``: start the Streamlit app as a subprocess, by the path of its entry file.

``pipelines`` never imports ``app``: the app is run by Streamlit from ``<repo>/app/Home.py``,
headless, bound to 127.0.0.1 and without usage statistics unless told otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

APP_FILE = Path(__file__).resolve().parents[1] / "app" / "Home.py"


def streamlit_command(port: int, address: str, extra: list[str]) -> list[str]:
    """The command line that starts the app (Streamlit's own options may follow in ``extra``)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.headless", "true",
        "--server.address", address,
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        *extra,
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqmamba app", description=__doc__.splitlines()[0],
                                     epilog="Other Streamlit options (e.g. --server.maxUploadSize 200) are passed on.")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    args, extra = parser.parse_known_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if not APP_FILE.is_file():
        print(f"seqmamba app: the app's entry file {APP_FILE} is missing (a source checkout is needed)",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("streamlit") is None:
        print("seqmamba app: Streamlit is not installed; install the app extra: pip install 'seqmamba[app]'",
              file=sys.stderr)
        return 2
    print(f"seqmamba app: http://{args.address}:{args.port}  (Ctrl+C stops it)", file=sys.stderr)
    try:
        return subprocess.call(streamlit_command(args.port, args.address, extra))
    except KeyboardInterrupt:
        return 0
