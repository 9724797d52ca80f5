"""The app's settings and its Home page: local-only, headless, no usage statistics, stated upload limit."""

from pathlib import Path

import tomllib
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "app" / "Home.py"


def test_config_keeps_the_app_local_headless_and_private():
    config = tomllib.loads((REPO / "app" / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["headless"] is True
    assert config["browser"]["gatherUsageStats"] is False
    assert 1 <= config["server"]["maxUploadSize"] <= 200


def test_home_links_every_page_and_states_the_upload_limit():
    at = AppTest.from_file(str(ENTRY), default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "seqmamba"
    assert [link.proto.page for link in at.get("page_link")] == ["dna", "genome", "forecast", "models"]
    limit = st_config.get_option("server.maxUploadSize")
    assert any(f"Uploads up to {limit} MB per file" in c.value for c in at.caption)
