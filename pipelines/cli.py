"""The ``seqmamba`` console script: a thin router to each subcommand's module.

Each subcommand lives in its own module and is imported only when it runs, so ``seqmamba --version``
stays fast and a missing optional dependency only affects its own command.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module", "function", "one-line help"); the function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("pipelines.demo", "main", "check and time the kernels on this machine"),
    "fit": ("pipelines.lightning_cli", "fit", "train from a YAML config (--ckpt_path last resumes)"),
    "validate": ("pipelines.lightning_cli", "validate", "evaluate a checkpoint on the validation split"),
    "test": ("pipelines.lightning_cli", "test", "evaluate a checkpoint on the test split"),
    "predict": ("pipelines.lightning_cli", "predict", "run a checkpoint over a data module's predict split"),
    "score": ("pipelines.score_cmd", "main", "score a FASTA or CSV file with a model package"),
    "export": ("pipelines.export", "main", "write a model package from a run folder or checkpoint"),
    "models": ("pipelines.models", "main", "list the bundled model packages"),
    "app": ("pipelines.app_cmd", "main", "start the Streamlit app on 127.0.0.1"),
    "annotate-eval": ("pipelines.genome.annotate_eval", "main", "gene calls (GFF3) against a reference annotation"),
    "bench": ("pipelines.bench", "main", "benchmark the kernels on a CUDA GPU (benchmarks/bench_kernels.py)"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("seqmamba")
    except PackageNotFoundError:  # running from a source tree that was not pip-installed
        return "0+source"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: seqmamba [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'seqmamba COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"seqmamba {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"seqmamba: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
