"""Foundation: the package works without Triton, ``kernels`` is ours, the console script runs.

Each check runs in a fresh interpreter (subprocess), because what it tests is import-time behaviour.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path = REPO, extra_path: list[str] | None = None, timeout: int = 180):
    """Run ``code`` in a fresh interpreter; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEQMAMBA_BACKEND", "TRITON_INTERPRET", "PYTHONPATH")}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(extra_path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


HIDE_TRITON = """
    import importlib.abc, sys

    class HideTriton(importlib.abc.MetaPathFinder):
        # As on macOS or Windows: any attempt to import triton fails.
        def find_spec(self, name, path=None, target=None):
            if name == "triton" or name.startswith("triton."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, HideTriton())
"""


def test_package_imports_and_every_operator_runs_on_cpu_without_triton():
    out = python(HIDE_TRITON + """
    import torch
    import kernels, seqmodels
    from kernels import (causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref,
                         selective_scan_fn, selective_scan_ref, selective_state_update, selective_state_update_ref)

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    u, delta, z, D = r(2, 8, 33), r(2, 8, 33), r(2, 8, 33), r(8)
    A, B, C = -torch.rand(8, 4, generator=g), r(2, 4, 33), r(2, 4, 33)
    close(selective_scan_fn(u, delta, A, B, C, D, z, delta_softplus=True),
          selective_scan_ref(u, delta, A, B, C, D, z, delta_softplus=True))
    w, bias = r(8, 4), r(8)
    close(causal_conv1d_fn(u, w, bias, activation="silu"), causal_conv1d_ref(u, w, bias, activation="silu"))
    conv_state = r(2, 8, 4)
    expected_state = conv_state.clone()
    close(causal_conv1d_update(u[..., 0], conv_state, w, bias, "silu"),
          causal_conv1d_update_ref(u[..., 0], expected_state, w, bias, "silu"))
    close(conv_state, expected_state)
    state, x, dt, Bs, Cs = r(2, 8, 4), r(2, 8), r(2, 8), r(2, 4), r(2, 4)
    expected_state = state.clone()
    close(selective_state_update(state, x, dt, A, Bs, Cs, D, dt_softplus=True),
          selective_state_update_ref(expected_state, x, dt, A, Bs, Cs, D, dt_softplus=True))
    close(state, expected_state)

    block = seqmodels.Mamba(d_model=8, d_state=4)
    y = block(r(2, 17, 8))
    y.sum().backward()
    assert y.shape == (2, 17, 8) and torch.isfinite(y).all()

    loaded = sorted(m for m in sys.modules if m == "triton" or m.startswith("triton."))
    assert not loaded, loaded
    print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.fixture
def foreign_kernels(tmp_path):
    """A site-packages folder holding another distribution's ``kernels`` package (HF's, say)."""
    site = tmp_path / "site-packages"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("FOREIGN = True\n")
    (site / "kernels-9.9.dist-info").mkdir()
    (site / "kernels-9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 9.9\n")
    return site


def test_import_kernels_is_ours_from_the_source_tree_with_another_kernels_installed(foreign_kernels):
    out = python(f"""
    import site
    site.addsitedir({str(foreign_kernels)!r})  # installed like any distribution
    import kernels, seqmodels
    print(kernels.__file__)
    """)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == REPO / "kernels" / "__init__.py"


def test_import_kernels_is_ours_outside_the_source_tree_with_another_kernels_installed(foreign_kernels, tmp_path):
    out = python(f"""
    import site
    site.addsitedir({str(foreign_kernels)!r})
    import kernels
    print(kernels.__file__)
    """, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == REPO / "kernels" / "__init__.py"


WITHOUT_IMPORT_GUARD = """
    import sys
    # As after a plain `pip install -e .` without scripts/install_import_guard.py.
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "SeqmambaSourceFinder"]
"""


def test_seqmodels_refuses_a_foreign_kernels_package_with_a_clear_message(foreign_kernels, tmp_path):
    out = python(WITHOUT_IMPORT_GUARD + "    import seqmodels\n", cwd=tmp_path,
                 extra_path=[str(foreign_kernels), str(REPO)])
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:")
    assert str(foreign_kernels / "kernels") in last and "not seqmamba's kernels package" in last
    assert "uninstall the other 'kernels' distribution" in last


def console_script() -> Path:
    script = Path(sys.executable).parent / "seqmamba"
    if not script.exists():
        found = shutil.which("seqmamba")
        if found is None:
            pytest.skip("the seqmamba console script is not installed (pip install -e .)")
        script = Path(found)
    return script


def test_console_script_prints_the_version():
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    out = subprocess.run([str(console_script()), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"seqmamba {version}"
