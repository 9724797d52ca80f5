"""Model packages: exact round trip, atomic writes, and bad packages refused with a clear message."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from seqmodels import MambaClassifier, PackageError, load_package, save_package
from seqmodels.package import FORMAT_VERSION


@pytest.fixture
def package(tmp_path):
    torch.manual_seed(0)
    model = MambaClassifier(n_classes=2, class_names=("neg", "pos"), d_model=8, n_layer=1, d_state=4)
    path = tmp_path / "pkg"
    save_package(model, path, metrics={"accuracy": 0.9},
                 extra_config={"preprocessing": {"mean": [0.5], "scale": [2.0]},
                               "training_data": {"name": "toy", "licence": "CC-BY-4.0"}, "licence": "Apache-2.0"})
    return model, path


def test_config_json_records_everything_a_reader_needs(package):
    _, path = package
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION and config["task"] == "classification"
    assert config["architecture"]["name"] == "MambaClassifier"
    assert config["architecture"]["config"]["d_model"] == 8
    assert config["class_names"] == ["neg", "pos"]
    assert config["vocabulary"]["tokens"][:2] == ["<pad>", "<cls>"]
    assert config["preprocessing"] == {"mean": [0.5], "scale": [2.0]}
    assert config["training_data"]["licence"] == "CC-BY-4.0"
    assert sorted(os.listdir(path)) == ["config.json", "metrics.json", "model.safetensors"]
    assert sorted(os.listdir(path.parent)) == ["pkg"]  # no temporary folders left behind


def test_a_package_gets_the_modes_of_ordinary_files(tmp_path):
    # Not mkdtemp's 0700 folder nor a 0600 weights file: others can read a shared install's packages.
    model = MambaClassifier(n_classes=2, d_model=8, n_layer=1, d_state=4)
    old = os.umask(0o022)
    try:
        path = save_package(model, tmp_path / "pkg")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in path.iterdir()} == dict.fromkeys(
        ["config.json", "metrics.json", "model.safetensors"], 0o644)


def test_saving_over_a_package_replaces_it_and_refuses_other_folders(package, tmp_path):
    model, path = package
    save_package(model, path, metrics={"accuracy": 0.95})
    assert load_package(path)[2] == {"accuracy": 0.95}
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="refusing"):
        save_package(model, other)
    assert (other / "thesis.tex").read_text() == "precious"


def test_a_failed_save_leaves_the_old_package_intact(package, monkeypatch):
    model, path = package
    before = (path / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("seqmodels.package.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_package(model, path)
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["pkg"]


def test_extra_config_may_not_override_the_architecture(package, tmp_path):
    model, _ = package
    with pytest.raises(ValueError, match="architecture"):
        save_package(model, tmp_path / "x", extra_config={"architecture": {}})
    with pytest.raises(ValueError, match="plain JSON"):
        save_package(model, tmp_path / "x", extra_config={"preprocessing": {"mean": float("nan")}})


def edit_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


BAD_CONFIGS = [
    ("unknown class", lambda c: c["architecture"].update(name="os.system"), "unknown architecture"),
    ("newer format", lambda c: c.update(format_version=99), "newer"),
    ("no format", lambda c: c.pop("format_version"), "format_version"),
    ("wrong task", lambda c: c.update(task="forecasting"), "task"),
    ("unknown field", lambda c: c["architecture"]["config"].update(evil=1), "evil"),
    ("wrong type", lambda c: c["architecture"]["config"].update(d_model="8"), "d_model"),
    ("huge value", lambda c: c["architecture"]["config"].update(d_model=10 ** 12), "d_model"),
    ("huge depth", lambda c: c["architecture"]["config"].update(n_layer=60000), "n_layer"),
    ("mismatched shape", lambda c: c["architecture"]["config"].update(d_model=16), "shape"),
    ("architecture not an object", lambda c: c.update(architecture="MambaClassifier"), "architecture"),
]


@pytest.mark.parametrize("name, change, match", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_configs_fail_naming_the_problem(package, name, change, match):
    _, path = package
    edit_config(path, change)
    with pytest.raises(PackageError, match=match):
        load_package(path)


@pytest.mark.parametrize("text, match", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                         ('{"format_version": NaN}', "not acceptable"),
                                         ('{"format_version": 1e999}', "not acceptable"),
                                         ("[" * 100000 + "]" * 100000, "JSON")])
def test_non_json_config_fails(package, text, match):
    _, path = package
    (path / "config.json").write_text(text)
    with pytest.raises(PackageError, match=match):
        load_package(path)


def test_binary_and_oversized_configs_fail(package):
    _, path = package
    (path / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PackageError, match="UTF-8"):
        load_package(path)
    (path / "config.json").write_text(" " * (5 << 20))
    with pytest.raises(PackageError, match="limit"):
        load_package(path)


def test_truncated_and_corrupt_weights_fail(package):
    _, path = package
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(PackageError, match="truncated"):
        load_package(path)
    weights.write_bytes(b"\x80\x04\x95pickle? no thanks")
    with pytest.raises(PackageError, match="safetensors"):
        load_package(path)


def test_missing_unexpected_and_misshaped_tensors_fail(package):
    _, path = package
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    cases = [({k: v for k, v in tensors.items() if k != "head.weight"}, "missing head.weight"),
             ({**tensors, "extra": torch.zeros(1)}, "unexpected extra"),
             ({**tensors, "head.weight": torch.zeros(3, 8)}, "head.weight has shape"),
             ({**tensors, "head.bias": torch.tensor([float("nan"), 0.0])}, "NaN"),
             ({**tensors, "head.bias": torch.tensor([1, 2])}, "dtype")]
    for bad, match in cases:
        save_file(bad, weights)
        with pytest.raises(PackageError, match=match):
            load_package(path)


def test_missing_files_links_and_folders_fail(package, tmp_path):
    _, path = package
    with pytest.raises(PackageError, match="no such package"):
        load_package(tmp_path / "nowhere")
    (path / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(PackageError, match="missing model.safetensors"):
        load_package(path)
    (path / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(PackageError, match="symbolic link"):
        load_package(path)
    (path / "config.json").unlink()
    with pytest.raises(PackageError, match="missing config.json"):
        load_package(path)


def test_from_pretrained_checks_the_class(package):
    from seqmodels import MambaForecaster

    _, path = package
    with pytest.raises(PackageError, match="not a MambaForecaster"):
        MambaForecaster.from_pretrained(path)


def test_package_error_is_a_value_error():
    assert issubclass(PackageError, ValueError)
