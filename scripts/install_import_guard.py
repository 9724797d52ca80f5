"""Make this checkout's packages win ``import kernels`` (and seqmodels, pipelines, app) in this Python.

Another distribution may also be named ``kernels``. setuptools' editable install appends its finder
*after* site-packages, so that other package would shadow ours. This writes a one-line ``.pth`` file
and a tiny finder module into site-packages that put a finder for exactly our four top-level packages
at the front of ``sys.meta_path``. ``scripts/setup.sh`` runs it after ``pip install -e``; run it yourself
(``python scripts/install_import_guard.py``) after a plain ``pip install -e .``. ``--remove`` undoes it.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernels", "seqmodels", "pipelines", "app")
MODULE = "_seqmamba_import_guard"

FINDER = '''"""Written by seqmamba's scripts/install_import_guard.py: resolve {packages} from {root}."""
import importlib.machinery
import os
import sys

_ROOT = {root!r}
_PACKAGES = frozenset({packages!r})


class SeqmambaSourceFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in _PACKAGES and os.path.isdir(os.path.join(_ROOT, name)):
            return importlib.machinery.PathFinder.find_spec(name, [_ROOT])
        return None


if not any(getattr(f, "__name__", "") == "SeqmambaSourceFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, SeqmambaSourceFinder)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remove", action="store_true")
    args = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    module, pth = site / f"{MODULE}.py", site / f"{MODULE}.pth"
    if args.remove:
        for f in (module, pth):
            f.unlink(missing_ok=True)
        return 0
    module.write_text(FINDER.format(root=str(ROOT), packages=PACKAGES))
    pth.write_text(f"import {MODULE}\n")
    print(f"import guard for {', '.join(PACKAGES)} -> {ROOT} installed in {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
