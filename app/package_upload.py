"""Unpack a model package that a user uploads as a zip, without trusting anything inside it.

A package is a folder with ``config.json``, ``model.safetensors`` and (optionally) ``metrics.json``.
Only those three files are ever written, under names we choose, into a folder we choose, so a
crafted member name cannot escape it; members with unsafe names are refused anyway, because a zip
that tries is not a package we want to load. Sizes are checked against the bytes actually
decompressed (a zip's declared sizes can lie), which stops zip bombs early. Weights are loaded
later through safetensors only; pickled weights (``.bin``, ``.pt``, ``.ckpt``, ``.pkl``) are
refused with a message saying so.
"""

from __future__ import annotations

import io
import posixpath
import shutil
import stat
import zipfile
from pathlib import Path

from pipelines.data.errors import InputError

PACKAGE_FILES = ("config.json", "model.safetensors", "metrics.json")
REQUIRED_FILES = ("config.json", "model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_MEMBERS = 64
MAX_UNPACKED_BYTES = 512 * 2**20
_CHUNK = 2**20


def _check_member_name(name: str, zip_name: str) -> None:
    """Refuse absolute paths, drive letters, backslashes and '..' components."""
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":") or ".." in name.split("/"):
        raise InputError(f"unsafe path {name!r} in the zip; refusing the upload", file=zip_name)


def _package_folder(names: list[str], zip_name: str) -> str:
    """The folder inside the zip that holds config.json: the root or exactly one sub-folder."""
    folders = sorted({posixpath.dirname(n) for n in names if posixpath.basename(n) == "config.json"
                      and not n.startswith("__MACOSX/")})
    if not folders:
        pickled = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
        hint = (f" (found pickled weights {pickled[0]!r}: packages load through safetensors only)"
                if pickled else "")
        raise InputError(f"no config.json in the zip; expected a model package folder{hint}", file=zip_name)
    if len(folders) > 1:
        raise InputError(f"{len(folders)} folders with a config.json ({', '.join(folders)}); "
                         "zip one package at a time", file=zip_name)
    return folders[0]


def extract_package_zip(data: bytes, dest: Path, zip_name: str = "upload.zip",
                        max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Unpack the package in the zip ``data`` into the new folder ``dest`` and return ``dest``.

    Raises ``InputError`` naming ``zip_name`` when the bytes are not a zip, a member name is
    unsafe or a link, the package files are missing (or only pickled weights are present), or the
    unpacked files would exceed ``max_bytes`` in total.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a zip file ({exc})", file=zip_name) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"{len(infos)} entries in the zip; a model package has at most "
                             f"{MAX_MEMBERS}", file=zip_name)
        for info in infos:
            _check_member_name(info.filename, zip_name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InputError(f"{info.filename!r} is a symbolic link; refusing the upload", file=zip_name)
        names = [i.filename for i in infos if not i.is_dir()]
        folder = _package_folder(names, zip_name)
        wanted = {posixpath.join(folder, f) if folder else f: f for f in PACKAGE_FILES}
        present = {wanted[n] for n in names if n in wanted}
        missing = [f for f in REQUIRED_FILES if f not in present]
        if missing:
            pickled = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
            hint = "; packages load through safetensors only" if pickled else ""
            raise InputError(f"the package in {folder or 'the zip root'!r} lacks "
                             f"{', '.join(missing)}{hint}", file=zip_name)
        dest.mkdir(parents=True, exist_ok=False)
        budget = max_bytes
        try:
            for member, target in wanted.items():
                if target not in present:
                    continue
                with archive.open(member) as src, open(dest / target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:
                            raise InputError(f"unpacks to more than {max_bytes // 2**20} MB; "
                                             "refusing the upload", file=zip_name)
                        out.write(chunk)
        except (InputError, zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, InputError):
                raise
            raise InputError(f"corrupt zip ({exc})", file=zip_name) from exc
    return dest
