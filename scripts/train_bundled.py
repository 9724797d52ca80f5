"""Train, test and export every model of the results table with the shipped configs (issue 7).

Runs ``seqmamba fit`` → ``seqmamba test --ckpt_path best`` → ``seqmamba export`` for each job, several
jobs at once on one GPU (the models are small; one process each keeps them independent), then
writes a summary table (mean ± spread over seeds) and the metrics of every run as JSON.

    python scripts/train_bundled.py OUT_DIR [--parallel 12] [--max-minutes 6] [--only dna|forecast]

Each run folder, package and log lands under OUT_DIR; nothing here is specific to one machine.
Processes sharing one GPU are time-sliced (their kernels never overlap), so for the small DNA
models, whose steps are launch-bound, runs per GPU share its time. Measured on one H200 with the
one-strand prom_core config (8 epochs each, session 5): one run alone 93 s, four at once 270 s,
six at once ~350 s, i.e. 93 / 68 / 58 s per run; 12 at once beside the GPU tests took ~1.3 s per
step (benchmarks/RESULTS.md, "Residual dropout on GUE"). Six forecasters at once each finished in
about 2 minutes. Four to six runs per GPU is the sweet spot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Job:
    name: str  # run and package name
    group: str  # rows of the summary table: (dataset, model, horizon)
    config: str
    seed: int
    overrides: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    status: str = "pending"
    seconds: float = 0.0


def dna_jobs(seeds=(1, 2, 3)) -> list[Job]:
    jobs = []
    for task in ("gue_prom_core_notata", "gue_tf_0"):
        for model, cfg in (("mamba", f"{task}.yaml"), ("cnn", f"cnn_{task}.yaml")):
            for seed in seeds:
                # One loader worker: many runs share the machine's cores.
                jobs.append(Job(f"{task}-{model}-s{seed}", f"{task}|{model}|", cfg, seed,
                                ["--data.init_args.num_workers", "1"]))
    return jobs


def forecast_jobs(seeds=(1, 2, 3)) -> list[Job]:
    jobs = []
    for dataset, stem in (("exchange_rate", "exchange_rate"), ("ETTh1", "etth1")):
        for model, cfg in (("mamba", f"{stem}.yaml"), ("dlinear", f"dlinear_{stem}.yaml")):
            for horizon in (96, 192, 336, 720):
                for seed in seeds if horizon == 96 else seeds[:1]:
                    jobs.append(Job(f"{stem}-{model}-h{horizon}-s{seed}", f"{dataset}|{model}|{horizon}",
                                    cfg, seed, ["--horizon", str(horizon)]))
    return jobs


def run_job(job: Job, out: Path, max_minutes: float, extra: list[str], gpu: int | None = None,
            threads: int = 1) -> Job:
    run_dir = out / "runs" / job.name
    log_path = out / "logs" / f"{job.name}.log"
    cli = [sys.executable, "-m", "pipelines.cli"]
    common = ["--config", str(ROOT / "pipelines" / "configs" / job.config), *job.overrides,
              "--trainer.default_root_dir", str(run_dir), "--seed_everything", str(job.seed),
              "--data.init_args.seed", str(job.seed)]
    minutes, seconds = int(max_minutes), int(round(max_minutes % 1 * 60))
    steps = [
        [*cli, "fit", *common, "--trainer.max_time", f"00:00:{minutes:02d}:{seconds:02d}",
         "--trainer.enable_progress_bar", "false", *extra],
        [*cli, "test", *common, "--ckpt_path", "best", "--trainer.enable_progress_bar", "false"],
        [*cli, "export", str(run_dir), str(out / "packages" / job.name)],
    ]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        for cmd in steps:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            env = dict(os.environ) if gpu is None else {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            # Each process (and loader worker) would otherwise start one OpenMP thread per core: a dozen
            # runs on one host then oversubscribe it many times over.
            env.setdefault("OMP_NUM_THREADS", str(threads))
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            if rc != 0:
                job.status = f"failed (rc {rc}) at {cmd[3]}"
                break
        else:
            job.status = "ok"
    job.seconds = time.perf_counter() - start
    metrics_file = run_dir / "test_metrics.json"
    if metrics_file.is_file():
        job.metrics = json.loads(metrics_file.read_text()).get("metrics", {})
    print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {job.status} in {job.seconds:.0f}s {job.metrics}", flush=True)
    return job


def _fmt(values: list[float], scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.3f}" if scale == 1 else f"{values[0]:.2f}"
    mean, spread = statistics.mean(values), (max(values) - min(values)) / 2
    return f"{mean:.3f} ± {spread:.3f}" if scale == 1 else f"{mean:.2f} ± {spread:.2f}"


def summary(jobs: list[Job]) -> str:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    lines = ["| dataset | model | horizon | seeds | metric (test split) | value (mean ± half-range) |",
             "|---|---|---|---|---|---|"]
    for group, members in groups.items():
        dataset, model, horizon = group.split("|")
        done = [j for j in members if j.metrics]
        if not done:
            lines.append(f"| {dataset} | {model} | {horizon or '-'} | 0 | — | {members[0].status} |")
            continue
        seeds = ",".join(str(j.seed) for j in done)
        if horizon:
            for key in ("test/mse", "test/mae"):
                vals = [j.metrics[key] for j in done if key in j.metrics]
                if vals:
                    lines.append(f"| {dataset} | {model} | {horizon} | {seeds} | {key} | {_fmt(vals)} |")
        else:
            for key in ("test/mcc", "test/acc"):
                vals = [j.metrics[key] for j in done if key in j.metrics]
                if vals:
                    lines.append(f"| {dataset} | {model} | - | {seeds} | {key} ×100 | {_fmt(vals, 100)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--parallel", type=int, default=12)
    parser.add_argument("--max-minutes", type=float, default=5.0, help="training time cap per DNA run")
    parser.add_argument("--max-minutes-forecast", type=float, default=3.0, help="training time cap per forecast run")
    parser.add_argument("--only", choices=("dna", "forecast"))
    parser.add_argument("--gpus", type=int, default=0, help="spread the runs over this many GPUs (0: leave as is)")
    parser.add_argument("--gpu-ids", help="spread the runs over these GPUs instead, e.g. 1,2,3")
    parser.add_argument("--variant", metavar="TAG=OVERRIDES",
                        help="a named variant of the shipped configs: TAG is added to every run name, OVERRIDES "
                             "(space-separated, e.g. 'TAG=--model.init_args.network.init_args.d_model 256') go to "
                             "fit and test alike, so the test rebuilds the same network")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--match", action="append", help="only jobs whose name contains this text (repeatable)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fit overrides for every job")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    jobs = ([] if args.only == "forecast" else dna_jobs(seeds)) + ([] if args.only == "dna" else forecast_jobs(seeds))
    if args.match:
        jobs = [j for j in jobs if any(m in j.name for m in args.match)]
    if args.variant:
        tag, _, overrides = args.variant.partition("=")
        for j in jobs:
            stem, _, seed = j.name.rpartition("-s")
            dataset, model, horizon = j.group.split("|")
            j.name, j.group = f"{stem}-{tag}-s{seed}", f"{dataset}|{model}-{tag}|{horizon}"
            j.overrides = [*j.overrides, *overrides.split()]
    gpu_ids = ([int(g) for g in args.gpu_ids.split(",")] if args.gpu_ids
               else list(range(args.gpus)) if args.gpus else [])
    for sub in ("runs", "logs", "packages"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Longest jobs first, so the pool ends together.
    jobs.sort(key=lambda j: (not j.config.startswith(("gue", "cnn")), j.name))
    threads = max(1, (os.cpu_count() or 2) // args.parallel)  # per run: the host's cores shared out
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda ij: run_job(ij[1], args.out, args.max_minutes if ij[1].group.endswith("|") else
                                         args.max_minutes_forecast, args.extra,
                                         gpu_ids[ij[0] % len(gpu_ids)] if gpu_ids else None, threads),
                      enumerate(jobs)))
    table = summary(jobs)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(
        [{"name": j.name, "config": j.config, "seed": j.seed, "overrides": j.overrides, "status": j.status,
          "seconds": round(j.seconds, 1), "metrics": j.metrics} for j in jobs], indent=1))
    print(table)
    return 0 if all(j.status == "ok" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
