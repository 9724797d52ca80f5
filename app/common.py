"""What the pages share: the upload limit, error messages, the model list and cached model loading.

Models come from two places: the bundled packages (found by ``pipelines.models``) and packages the
user uploads as a zip during the session (unpacked by ``app.package_upload`` into a folder named
by the zip's SHA-256, so the same upload is unpacked once). Loading goes through
``seqmodels.package.load_package`` (safetensors only) and is cached with ``st.cache_resource``.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app.package_upload import extract_package_zip
from pipelines.data.errors import InputError

# Decompressed-size cap for uploaded data files: a 50 MB gzip upload may not expand past this.
MAX_DECOMPRESSED_BYTES = 512 * 2**20

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"


@dataclass(frozen=True)
class ModelEntry:
    """A model package the pages can offer: its display name, folder and origin."""

    name: str
    path: Path
    source: str  # "bundled" or "uploaded"

    @property
    def label(self) -> str:
        return self.name if self.source == "bundled" else f"{self.name} (uploaded)"


@dataclass(frozen=True)
class LoadedModel:
    """A loaded package: the network in eval mode, its config.json and metrics.json as dicts."""

    model: Any
    config: dict
    metrics: dict


def upload_limit_mb() -> int:
    """The per-file upload limit in MB (``server.maxUploadSize``, set in app/.streamlit/config.toml)."""
    return int(st.get_option("server.maxUploadSize"))


def show_error(exc: Exception) -> None:
    """Show bad input (or a package that does not load) as one short message; the page goes on."""
    st.error(str(exc), icon=":material/error:")


def _fingerprint(path: Path) -> str:
    """Changes whenever a package's files change, so an edited package is loaded afresh."""
    parts = []
    for name in ("config.json", "model.safetensors", "metrics.json"):
        f = path / name
        if f.exists():
            s = f.stat()
            parts.append(f"{name}:{s.st_size}:{s.st_mtime_ns}")
    return "|".join(parts)


@st.cache_resource(max_entries=8, show_spinner="Loading the model...")
def _load(path: str, fingerprint: str) -> LoadedModel:
    from seqmodels.package import load_package

    model, config, metrics = load_package(path)
    model.eval()
    return LoadedModel(model, config, metrics or {})


def load_model(entry: ModelEntry) -> LoadedModel:
    """Load ``entry``'s package once per process (cached); raises the package's own error if broken."""
    return _load(str(entry.path), _fingerprint(entry.path))


def bundled_models() -> list[ModelEntry]:
    """The bundled packages in ``data/models/`` (or ``SEQMAMBA_MODELS``), by name."""
    from pipelines.models import list_models

    return [ModelEntry(name, Path(path), "bundled") for name, path in list_models()]


def uploaded_models() -> list[ModelEntry]:
    """Packages uploaded in this browser session."""
    return list(st.session_state.setdefault("uploaded_models", {}).values())


@st.cache_resource
def _upload_root() -> Path:
    """One temporary folder per app process for unpacked uploads, removed when the process ends."""
    root = Path(tempfile.mkdtemp(prefix="seqmamba-app-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def add_uploaded_package(name: str, data: bytes) -> ModelEntry:
    """Unpack and load an uploaded package zip; on success it joins this session's model list.

    Raises ``InputError`` (bad zip) or the loader's error (bad package), to be shown with
    :func:`show_error`.
    """
    digest = hashlib.sha256(data).hexdigest()[:16]
    dest = _upload_root() / digest
    if not dest.exists():
        extract_package_zip(data, dest, zip_name=name)
    entry = ModelEntry(Path(name).stem.removesuffix(".zip"), dest, "uploaded")
    try:
        load_model(entry)
    except Exception:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    st.session_state.setdefault("uploaded_models", {})[digest] = entry
    return entry


def package_uploader(key: str) -> None:
    """A zip uploader for a model package; errors are shown in place."""
    upload = st.file_uploader(
        f"Model package (a zip of a package folder; up to {upload_limit_mb()} MB)", type=["zip"], key=key,
        help="A folder with config.json, model.safetensors and metrics.json, as `seqmamba export` writes it. "
             "Weights load through safetensors only; pickled files are refused.")
    if upload is None:
        return
    data = upload.getvalue()
    known = hashlib.sha256(data).hexdigest()[:16] in st.session_state.get("uploaded_models", {})
    try:
        entry = add_uploaded_package(upload.name, data)
    except (InputError, ValueError, OSError) as exc:
        show_error(exc)
        return
    if not known:
        st.rerun()  # the model pickers above this uploader were drawn without the new package
    st.success(f"Added model {entry.name!r}.")


def model_picker(task: str, key: str, *, accept: Callable[[LoadedModel], bool] | None = None,
                 none_message: str | None = None) -> ModelEntry | None:
    """A select box of the models (bundled and uploaded) whose config has ``task`` (and that
    ``accept`` approves, when given); None, with ``none_message`` as a warning, if there are none."""
    entries = []
    for entry in bundled_models() + uploaded_models():
        try:
            loaded = load_model(entry)
        except (InputError, ValueError, OSError):
            continue  # broken packages are listed, with their error, on the Models page
        if loaded.config.get("task") == task and (accept is None or accept(loaded)):
            entries.append(entry)
    if not entries:
        st.warning(none_message or f"No {task} model found. Add a package below or on the Models page.")
        return None
    return st.selectbox("Model", entries, format_func=lambda e: e.label, key=key)
