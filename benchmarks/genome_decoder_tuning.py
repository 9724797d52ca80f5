"""Choose the gene-call decoder's settings on genomes other than the held-out one (issue 10).

The decoder (``pipelines/genome/decoder.py``) turns a gene caller's per-base probabilities into
genes. Its settings are chosen here the way a model's hyper-parameters are: on the training and
validation genomes, never on the held-out test genome, which is scored once at the end.

    # 1. probabilities of each genome under a package, cached as .npz (cuda when present; a CPU does ~1.5 kb/s/thread)
    python benchmarks/genome_decoder_tuning.py probs data/models/gene_caller-mamba CACHE \\
        genomes/athaliana_chloroplast/NC_000932.gb.gz genomes/phage_lambda/NC_001416.gbk.gz ...
    # 2. grid over decoder settings on the tuning genomes (gene-level F1 averaged over genomes)
    python benchmarks/genome_decoder_tuning.py sweep CACHE --tune NC_000932 NC_001416 ...
    # 3. the held-out genome, once, under the default and the chosen settings
    python benchmarks/genome_decoder_tuning.py score CACHE --genome Bsub_referencegenome --settings JSON

Genome-adaptive decoding (``pipelines/genome/adaptive.py``): ``sweep --grid adaptive`` searches its
weights (``coding_weight``, ``start_weight``) with the other settings fixed by ``--base``; ``heldout``
does steps 1 and 3 in one command on the machine that has the GPU (cuda when present, else CPU;
``--smoke`` runs it on phage lambda, a minute on a CPU)::

    python benchmarks/genome_decoder_tuning.py sweep CACHE --tune NC_000932 NC_001416 ... --grid adaptive
    python benchmarks/genome_decoder_tuning.py heldout data/models/gene_caller-mamba --settings JSON
    python benchmarks/genome_decoder_tuning.py timing --settings JSON   # decode time, E. coli, synthetic probs

``errors`` takes one cached (non-test) genome apart under given settings: genes missed and how much
of them the model called coding, false calls, start errors by direction and size, and the ceiling
of the adaptive decoder with statistics learned from the reference annotation instead of the calls::

    python benchmarks/genome_decoder_tuning.py errors CACHE --genome Mgen_referencegenome --settings JSON

Genome entries are paths under the shared data folder (SEQMAMBA_DATA or ../shared/data), GenBank
files whose annotation is the reference; each record is decoded with the genome's genetic code and
topology. The cache holds float16 probabilities (seqlen, 2, 4) per record.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.data.alphabet import tokenize  # noqa: E402
from pipelines.data.errors import InputError  # noqa: E402
from pipelines.genome.adaptive import decode_genome  # noqa: E402
from pipelines.genome.annotation import read_annotation  # noqa: E402
from pipelines.genome.decoder import DecoderConfig  # noqa: E402
from pipelines.genome.evaluate import evaluate  # noqa: E402
from seqmodels import vocab  # noqa: E402


def _data_root() -> Path:
    return Path(os.environ.get("SEQMAMBA_DATA") or REPO.parent / "shared" / "data")


def _stem(entry: str) -> str:
    return Path(entry).name.split(".")[0]


def compute_probs(package: Path, entries: list[str], cache: Path) -> None:
    import torch

    from pipelines.genome.predict import predict_probabilities
    from seqmodels.package import load_package

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as ``heldout``
    model, _, _ = load_package(package)
    model = model.to(device).eval()
    cache.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        out = cache / f"{_stem(entry)}.npz"
        if out.is_file():
            print(f"{out} exists, skipped", flush=True)
            continue
        records = read_annotation(_data_root() / entry)
        arrays, start = {}, time.perf_counter()
        for k, rec in enumerate(records):
            tokens = tokenize(rec.seq)  # (seqlen,) int8, as call_genes reads it
            probs = predict_probabilities(model, tokens, circular=rec.circular,
                                          batch_windows=8 if device.type == "cuda" else 1).probs
            arrays[f"p{k}"] = probs.astype(np.float16)
        np.savez(out, entry=entry, **arrays)
        bases = sum(len(r.seq) for r in records)
        print(f"{entry}: {bases:,} bp in {time.perf_counter() - start:.0f} s -> {out}", flush=True)


def _load(cache: Path, stem: str):
    """(records, probabilities, texts) of a cached genome; each text upper-case ACGTN, as call_genes
    decodes it (made once here, not once per decoder setting)."""
    data = np.load(cache / f"{stem}.npz")
    records = read_annotation(_data_root() / str(data["entry"]))
    probs = [data[f"p{k}"].astype(np.float32) for k in range(len(records))]
    return records, probs, [vocab.decode(tokenize(rec.seq)) for rec in records]


def score_genome(records, probs, texts, cfg: DecoderConfig):
    """Metrics of one genome's calls under ``cfg``; all records decoded together (an adaptive decoder
    learns from the whole genome), with the genome's genetic code."""
    sequences = [(rec.id, text, p, rec.circular) for rec, p, text in zip(records, probs, texts)]
    calls = decode_genome(sequences, transl_table=records[0].transl_table, config=cfg)
    lengths = {rec.id: len(rec.seq) for rec in records}
    return evaluate([c for per_record in calls for c in per_record], [c for rec in records for c in rec.cds], lengths)


def _f1(m) -> float:
    return 2 * m.sensitivity * m.precision / max(m.sensitivity + m.precision, 1e-12)


GRIDS = {
    "decoder": {
        "max_overlap": [60, 120, 240],
        "min_score": [0.0, 10.0, 30.0],
        "logit_offset": [0.0, 0.5, 1.0, 2.0],
        "start_bonus": [None, {"ATG": 0.0, "GTG": -2.0, "TTG": -3.0}, {"ATG": 0.0, "GTG": -4.0, "TTG": -6.0}],
    },
    # The first row (weights 0) decodes twice with no statistics: the one-pass decoder, for comparison.
    "adaptive": {
        "coding_weight": [0.0, 20.0, 40.0, 60.0, 80.0, 160.0],
        "start_weight": [0.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        "min_score": [0.0, 30.0],
    },
    # What the adaptive start score reads upstream (session 8): the shipped matrix first, for comparison.
    "start": {
        "start_model": ["pwm", "sd", "pwm+sd"],
        "start_weight": [64.0, 32.0, 128.0],
    },
}


def sweep(cache: Path, stems: list[str], out: Path | None, grid: str = "decoder", base: dict | None = None) -> None:
    genomes = {s: _load(cache, s) for s in stems}
    rows = []
    space = GRIDS[grid]
    keys = list(space)
    fixed = {**(base or {}), **({"adaptive": True} if grid in ("adaptive", "start") else {})}
    for values in itertools.product(*(space[k] for k in keys)):
        settings = {**fixed, **dict(zip(keys, values))}
        cfg = DecoderConfig(**settings)
        per = {s: score_genome(*genomes[s], cfg) for s in stems}
        rows.append((float(np.mean([_f1(m) for m in per.values()])),
                     float(np.mean([m.exact_start for m in per.values()])), settings, per))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    header = " | ".join(f"{s} sens / prec / start" for s in stems)
    lines = [f"| mean gene F1 | mean exact start | settings | {header} |", "|---|---|---|" + "---|" * len(stems)]
    default = {**fixed, **dict(zip(keys, [g[0] for g in space.values()]))}  # the first row, for comparison
    for f1, start, settings, per in rows[:15] + [r for r in rows if r[2] == default]:
        cells = " | ".join(f"{m.sensitivity:.3f} / {m.precision:.3f} / {m.exact_start:.3f}" for m in per.values())
        lines.append(f"| {f1:.4f} | {start:.3f} | `{json.dumps(settings)}` | {cells} |")
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n")
        (out.with_suffix(".best.json")).write_text(json.dumps(rows[0][2]) + "\n")


def score(cache: Path, stem: str, settings: dict) -> None:
    genome = _load(cache, stem)
    for name, cfg in (("default", DecoderConfig()), ("chosen", DecoderConfig(**settings))):
        m = score_genome(*genome, cfg)
        print(f"{stem} {name} {json.dumps(settings) if name == 'chosen' else ''}: calls {m.n_predicted}, "
              f"sensitivity {m.sensitivity:.4f}, precision {m.precision:.4f}, exact start {m.exact_start:.4f}, "
              f"coding F1 {m.coding_f1:.4f}")


def errors(cache: Path, stem: str, settings: dict) -> None:
    """Where one genome's calls under ``settings`` go wrong (see the module docstring)."""
    from pipelines.genome.adaptive import learn_statistics
    from pipelines.genome.decoder import decode

    records, probs, texts = _load(cache, stem)
    cfg = DecoderConfig(**settings)
    sequences = [(rec.id, text, p, rec.circular) for rec, p, text in zip(records, probs, texts)]
    calls = decode_genome(sequences, transl_table=records[0].transl_table, config=cfg)
    lengths = {rec.id: len(rec.seq) for rec in records}

    def end(c):  # the stop codon's last base identifies a gene, as in pipelines.genome.evaluate
        return c.seqid, c.strand, c.three_prime % lengths[c.seqid]

    reference = {end(c): c for rec in records for c in rec.cds}
    called = {end(c): c for per_record in calls for c in per_record}
    prob_of = {rec.id: p for rec, p in zip(records, probs)}
    missed = [c for k, c in reference.items() if k not in called]
    coding = [float(np.mean([1.0 - prob_of[c.seqid][a:b, 0 if st == 1 else 1, 0].mean() for a, b, st in c.parts]))
              for c in missed]
    shifts = np.array([(reference[k].five_prime - c.five_prime) * c.strand for k, c in called.items()
                       if k in reference and reference[k].five_prime != c.five_prime])
    print(f"{stem} under {json.dumps(settings)}: {len(reference)} reference CDS, {len(called)} calls")
    def median(values) -> str:
        return f"{np.median(values):.0f}" if len(values) else "-"

    print(f"- missed {len(missed)}: median length {median([c.length for c in missed])} bp; the model's mean "
          f"P(coding) over them: median {np.median(coding) if coding else float('nan'):.2f}, "
          f"{np.mean(np.array(coding) < 0.5) if coding else 0.0:.0%} below 0.5")
    print(f"- false calls {sum(k not in reference for k in called)}")
    print(f"- wrong starts {shifts.size}: called start downstream of the reference (gene too short) "
          f"{int((shifts < 0).sum())}, upstream {int((shifts > 0).sum())}; "
          f"median |shift| {median(abs(shifts))} bp")
    # The ceiling of the statistics: learned from the reference instead of the decoder's own calls.
    oracle = learn_statistics([(text, rec.cds) for rec, text in zip(records, texts)],
                              transl_table=records[0].transl_table, start_codons=cfg.start_codons,
                              min_length=cfg.min_length, start_model=cfg.start_model)
    best = [decode(text, p, seqid=rec.id, transl_table=rec.transl_table, circular=rec.circular, config=cfg,
                   statistics=oracle) for rec, p, text in zip(records, probs, texts)]
    for name, found in (("own statistics", calls), ("statistics of the reference (ceiling)", best)):
        m = evaluate([c for per_record in found for c in per_record], list(reference.values()), lengths)
        print(f"- {name}: sensitivity {m.sensitivity:.4f}, precision {m.precision:.4f}, "
              f"exact start {m.exact_start:.4f}, coding F1 {m.coding_f1:.4f}")


# pyrodigal 3.7.1 on the same genomes (benchmarks/RESULTS.md, "Genome annotation: pyrodigal reference"):
# sensitivity, precision, exact start, base coding F1.
PYRODIGAL = {
    "genomes/bsubtilis_168/Bsub_referencegenome.gb.gz": ("single", 0.9750, 0.9773, 0.9063, 0.9925),
    "genomes/phage_lambda/NC_001416.gbk.gz": ("meta", 0.8767, 1.0000, 0.8750, 0.9761),
}
HELDOUT = "genomes/bsubtilis_168/Bsub_referencegenome.gb.gz"
SMOKE = "genomes/phage_lambda/NC_001416.gbk.gz"


def heldout(package: Path, entry: str, settings: dict, out: Path | None) -> None:
    """The held-out genome in one command: its probabilities under ``package`` (cuda when present),
    then the package's decoder settings without and with the adaptive pass, and with ``settings``
    over them, beside pyrodigal."""
    import torch

    from pipelines.genome.decoder import decoder_for_package
    from pipelines.genome.predict import predict_probabilities
    from seqmodels.package import load_package

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config, _ = load_package(package)
    model = model.to(device).eval()
    records = read_annotation(_data_root() / entry)
    start = time.perf_counter()
    probs = [predict_probabilities(model, tokenize(rec.seq), circular=rec.circular,
                                   batch_windows=8 if device.type == "cuda" else 1).probs for rec in records]
    seconds = time.perf_counter() - start
    texts = [vocab.decode(tokenize(rec.seq)) for rec in records]
    bases = sum(len(rec.seq) for rec in records)
    print(f"{entry}: {bases:,} bp, {sum(len(r.cds) for r in records):,} reference CDS; model on {device} "
          f"in {seconds:.1f} s", flush=True)
    package_cfg = decoder_for_package(config, source=str(package))
    chosen = DecoderConfig(**{**_package_settings(package_cfg), **settings})
    # The one-pass row keeps the figure comparable now that the package itself decodes adaptively.
    rows = {"one pass (package settings, adaptive off)": dataclasses.replace(package_cfg, adaptive=False),
            "package decoder": package_cfg, "package decoder + --settings": chosen}
    results = {}
    print("| decoder | settings | calls | sensitivity | precision | exact start | base coding F1 | decode s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in rows.items():
        t0 = time.perf_counter()
        m = score_genome(records, probs, texts, cfg)
        shown = {k: getattr(cfg, k) for k in ("max_overlap", "min_score", "logit_offset", "start_bonus", "adaptive",
                                              "coding_weight", "start_weight")}
        results[name] = {"settings": shown, **m.as_dict(), "seconds_decode": time.perf_counter() - t0}
        print(f"| {name} | `{json.dumps(shown)}` | {m.n_predicted:,} | {m.sensitivity:.4f} | {m.precision:.4f} | "
              f"{m.exact_start:.4f} | {m.coding_f1:.4f} | {results[name]['seconds_decode']:.1f} |", flush=True)
    if entry in PYRODIGAL:
        mode, *fig = PYRODIGAL[entry]
        print(f"| pyrodigal 3.7.1 ({mode} mode; RESULTS.md) | | | " + " | ".join(f"{x:.4f}" for x in fig) + " | |")
    if out:
        out.write_text(json.dumps({"entry": entry, "device": str(device), "seconds_model": seconds,
                                   "results": results}, indent=2) + "\n")


def _package_settings(cfg: DecoderConfig) -> dict:
    """The package-settable fields of ``cfg`` (the base an override is applied to)."""
    from pipelines.genome.decoder import PACKAGE_SETTINGS

    return {k: getattr(cfg, k) for k in PACKAGE_SETTINGS}


def timing(settings: dict, repeats: int) -> None:
    """Median wall time of the one-pass and the adaptive decoder on E. coli K-12 (4.6 Mb, circular) with
    bench_genome_decoder's synthetic probabilities (reference labels at 0.9, 30 % Dirichlet noise)."""
    import platform
    import statistics

    from bench_genome_decoder import synthetic_probs

    from pipelines.genome.labels import cds_labels

    (rec,) = read_annotation(_data_root() / "genomes/ecoli_k12_mg1655/GCF_000005845.2_ASM584v2_genomic.gbff.gz")
    probs = synthetic_probs(cds_labels(len(rec.seq), rec.cds))
    text = vocab.decode(tokenize(rec.seq))
    print(f"{rec.id}: {len(rec.seq):,} bp; {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, cfg in (("one pass", DecoderConfig()), ("adaptive", DecoderConfig(**{"adaptive": True, **settings}))):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            (calls,) = decode_genome([(rec.id, text, probs, rec.circular)], transl_table=rec.transl_table, config=cfg)
            times.append(time.perf_counter() - start)
        print(f"{name}: median {statistics.median(times):.2f} s over {repeats} runs, {len(calls)} calls", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probs")
    p.add_argument("package", type=Path)
    p.add_argument("cache", type=Path)
    p.add_argument("genomes", nargs="+")
    s = sub.add_parser("sweep")
    s.add_argument("cache", type=Path)
    s.add_argument("--tune", nargs="+", required=True, help="cached genome stems to choose the settings on")
    s.add_argument("--out", type=Path)
    s.add_argument("--grid", choices=sorted(GRIDS), default="decoder", help="which settings to search")
    s.add_argument("--base", default="{}", help="JSON object of settings fixed during the search")
    t = sub.add_parser("score")
    t.add_argument("cache", type=Path)
    t.add_argument("--genome", required=True)
    t.add_argument("--settings", required=True, help="JSON object of DecoderConfig settings")
    h = sub.add_parser("heldout", help="the held-out genome's probabilities and figures in one command")
    h.add_argument("package", type=Path)
    h.add_argument("--settings", default='{"adaptive": true}', help="JSON object of settings over the package's")
    h.add_argument("--genome", default=HELDOUT, help=f"genome entry under the data folder (default {HELDOUT})")
    h.add_argument("--smoke", action="store_true", help=f"phage lambda instead ({SMOKE}): checks the command")
    h.add_argument("--out", type=Path, help="write the figures as JSON")
    e = sub.add_parser("errors", help="where one cached genome's calls go wrong, and the statistics' ceiling")
    e.add_argument("cache", type=Path)
    e.add_argument("--genome", required=True, help="cached genome stem (not the held-out genome)")
    e.add_argument("--settings", default='{"adaptive": true, "min_score": 30, "coding_weight": 80}',
                   help="JSON object of DecoderConfig settings (default: the bundled package's)")
    m = sub.add_parser("timing", help="decode time of the one-pass and the adaptive decoder on E. coli")
    m.add_argument("--settings", default="{}", help="JSON object of adaptive settings")
    m.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        if args.cmd == "probs":
            compute_probs(args.package, args.genomes, args.cache)
        elif args.cmd == "sweep":
            sweep(args.cache, args.tune, args.out, args.grid, json.loads(args.base))
        elif args.cmd == "timing":
            timing(json.loads(args.settings), args.repeats)
        elif args.cmd == "errors":
            errors(args.cache, args.genome, json.loads(args.settings))
        elif args.cmd == "heldout":
            heldout(args.package, SMOKE if args.smoke else args.genome, json.loads(args.settings), args.out)
        else:
            score(args.cache, args.genome, json.loads(args.settings))
    except (InputError, ValueError, TypeError) as err:  # bad settings JSON, a missing genome or package
        print(f"genome_decoder_tuning: {err} (data folder: {_data_root()}; set SEQMAMBA_DATA)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
