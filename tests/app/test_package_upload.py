"""Unpacking an uploaded model-package zip: only the package files, only inside the target folder."""

import io
import os
import stat
import zipfile

import pytest

from app.package_upload import extract_package_zip
from pipelines.data.errors import InputError


def _zip(members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.fixture
def files():
    rnd = os.urandom
    return {"config.json": b'{"task": "classification"}', "model.safetensors": rnd(3000),
            "metrics.json": b'{"test_mcc": 0.7}'}


def test_package_at_the_zip_root_is_unpacked_byte_for_byte(tmp_path, files):
    dest = extract_package_zip(_zip(files), tmp_path / "pkg", "pkg.zip")
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)
    assert all((dest / name).read_bytes() == data for name, data in files.items())


def test_package_in_one_folder_keeps_only_the_package_files(tmp_path, files):
    members = {f"my_model/{k}": v for k, v in files.items() if k != "metrics.json"}
    members |= {"my_model/README.md": b"hi", "__MACOSX/my_model/config.json": b"junk"}
    dest = extract_package_zip(_zip(members), tmp_path / "pkg", "pkg.zip")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert (dest / "config.json").read_bytes() == files["config.json"]


@pytest.mark.parametrize("name", ["../evil.txt", "my_model/../../evil.txt", "/etc/evil.txt", "C:/evil.txt",
                                  "my_model\\..\\evil.txt"])
def test_unsafe_member_names_are_refused_and_nothing_is_written(tmp_path, files, name):
    data = _zip({**files, name: b"x"})
    with pytest.raises(InputError, match="unsafe path") as err:
        extract_package_zip(data, tmp_path / "pkg", "bad.zip")
    assert err.value.file == "bad.zip" and str(err.value).startswith("bad.zip: ")
    assert list(tmp_path.iterdir()) == []


def test_symbolic_links_are_refused(tmp_path, files):
    data = _zip({**files, "link": b"/etc/passwd"}, symlinks=("link",))
    with pytest.raises(InputError, match="symbolic link"):
        extract_package_zip(data, tmp_path / "pkg")


def test_pickled_weights_are_refused_with_the_reason(tmp_path, files):
    data = _zip({"config.json": files["config.json"], "pytorch_model.bin": b"\x80\x04pickle"})
    with pytest.raises(InputError, match="lacks model.safetensors; packages load through safetensors only"):
        extract_package_zip(data, tmp_path / "pkg")
    with pytest.raises(InputError, match="pickled weights 'model.ckpt'"):
        extract_package_zip(_zip({"model.ckpt": b"\x80\x04"}), tmp_path / "pkg2")


def test_not_a_zip_and_several_packages_are_refused(tmp_path, files):
    with pytest.raises(InputError, match="not a zip file"):
        extract_package_zip(b">seq1\nACGT\n", tmp_path / "pkg")
    two = {f"{d}/{k}": v for d in ("a", "b") for k, v in files.items()}
    with pytest.raises(InputError, match="2 folders with a config.json"):
        extract_package_zip(_zip(two), tmp_path / "pkg")


def test_a_zip_bomb_stops_at_the_byte_limit_and_leaves_nothing(tmp_path, files):
    bomb = _zip({**files, "model.safetensors": bytes(4 * 2**20)})  # 4 MiB of zeros: a few KB zipped
    assert len(bomb) < 64 * 2**10
    with pytest.raises(InputError, match="unpacks to more than 1 MB"):
        extract_package_zip(bomb, tmp_path / "pkg", max_bytes=2**20)
    assert not (tmp_path / "pkg").exists()
