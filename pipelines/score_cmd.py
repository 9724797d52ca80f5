"""``seqmamba score MODEL INPUT -o OUTPUT``: score a FASTA/FASTQ (or id,sequence table) or a series
CSV with a model package, streaming, resumable, never leaving a file that looks complete.

DNA input is read record by record and scored in chunks of ``--chunk-size`` records; each chunk is
written as a part file in a staging folder beside OUTPUT (``.OUTPUT.partial/``) together with a
small state file. An interrupted run started again with the same command continues after the last
complete chunk (same chunks, so the same numbers); at the end the parts are joined into a
temporary file that is renamed to OUTPUT. CSV or Parquet is chosen by OUTPUT's suffix. Ids that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are escaped in CSV.

A gene caller (a tagger package with 2 strand tracks x 4 classes) writing to a ``.gff3``/``.gff``
OUTPUT calls genes on every record instead (``pipelines.genome.predict.annotate_genome``: stitched
windows, the part-1 decoder), optionally with the per-base coding probability as ``--bedgraph``.
Each file is written to a temporary file renamed into place; a genome is scored in one pass, so an
interrupted run starts again from the beginning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines import scoring
from pipelines.atomic import chmod_like_open, write_json_atomic
from pipelines.data.errors import InputError

log = logging.getLogger(__name__)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
GFF3_SUFFIXES = (".gff3", ".gff")
STATE = "state.json"


# ------------------------------------------------------------------------------------- output
def output_format(path: Path) -> str:
    """``"csv"`` or ``"parquet"`` from the output's suffix (``.csv``, ``.tsv``, ``.parquet``, ``.pq``)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError(f"unknown output format {suffix or '(no suffix)'!r}: use .csv or .parquet", file=str(path))


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that start like a spreadsheet formula with ``'`` (OWASP's CSV-injection
    advice), so opening the CSV in a spreadsheet shows the id instead of running it."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            values = out[column].astype(object)
            risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
            out[column] = values.where(~risky, "'" + values.astype(str))
    return out


def _write_part(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


def join_parts(parts: list[Path], target: Path, fmt: str, columns: list[str]) -> None:
    """Stream the part files into ``target`` (through a temporary file renamed at the end)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "csv":
            sep = "\t" if target.suffix.lower() == ".tsv" else ","
            pd.DataFrame(columns=columns).to_csv(tmp, index=False, sep=sep)
            for part in parts:
                escape_formulas(pq.read_table(part).to_pandas()).to_csv(tmp, mode="a", header=False, index=False,
                                                                        sep=sep)
        else:
            writer = None
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                pq.write_table(pa.Table.from_pandas(pd.DataFrame(columns=columns), preserve_index=False), tmp)
            else:
                writer.close()
        chmod_like_open(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------- state
def fingerprint(model_dir: Path, input_path: Path, options: dict[str, Any]) -> str:
    """What a resumed run must share with the interrupted one: model files, input file, options."""
    h = hashlib.sha256()
    for path in (model_dir / "config.json", model_dir / "model.safetensors", input_path):
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()


class Staging:
    """The staging folder of one output: part files and a state file, updated atomically."""

    def __init__(self, output: Path, key: str, restart: bool) -> None:
        self.dir = output.with_name(f".{output.name}.partial")
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        state = self._read()
        if state.get("key") != key:
            if state:
                log.warning("%s belongs to another model, input or options: starting again", self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)
            state = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = state or {"key": key, "parts": [], "records_done": 0, "skipped": []}
        if self.state["records_done"]:
            log.info("resuming after %d records (%d parts done)", self.state["records_done"], len(self.state["parts"]))

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / STATE).read_text())
        except (OSError, ValueError):
            return {}

    def add(self, frames: dict[str, pd.DataFrame], records: int, skipped: list[scoring.Skipped]) -> None:
        """Record one finished chunk: its part files first, then the state that names them."""
        index = len(self.state["parts"])
        names = {}
        for kind, frame in frames.items():
            name = f"{kind}-{index:06d}.parquet"
            _write_part(frame, self.dir / name)
            names[kind] = name
        self.state["parts"].append(names)
        self.state["records_done"] += records
        self.state["skipped"] += [list(s) for s in skipped]
        write_json_atomic(self.dir / STATE, self.state)

    def files(self, kind: str) -> list[Path]:
        return [self.dir / p[kind] for p in self.state["parts"] if kind in p]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------ scoring
def _chunks(iterator: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in iterator:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _skip(iterator: Iterator, n: int) -> Iterator:
    for i, item in enumerate(iterator):
        if i >= n:
            yield item


def _records(path: Path, on_error: str) -> Iterator:
    """The input's records. With "fail" the data layer's reader checks every record and the first
    bad one raises. With "skip" records are read without those checks, since the reader cannot
    continue after a bad record; scoring then applies the same alphabet checks per record and
    skips what fails (duplicate ids are not checked in this mode)."""
    from pipelines.data import fasta

    if on_error == "fail":
        return fasta.read_sequences(path)
    raw = fasta._read_one(path, str(path), fasta.DEFAULT_MAX_BYTES, fasta.DEFAULT_MAX_LENGTH, None)
    return (fasta.SequenceRecord(record_id, seq, label) for record_id, seq, label, _ in raw)


def score_dna_file(model: torch.nn.Module, config: dict[str, Any], model_dir: Path, input_path: Path,
                   output: Path, *, batch_size: int, chunk_size: int, on_error: str, restart: bool,
                   progress: bool = True) -> dict[str, Any]:
    """Score a sequence file into ``output`` (and ``<stem>.tracks<suffix>`` for per-base models);
    returns a summary (records, skipped, seconds)."""
    from tqdm import tqdm

    fmt = output_format(output)
    tagger = config.get("task") == "tagging"
    options = {"batch_size": batch_size, "chunk_size": chunk_size, "on_error": on_error, "fmt": fmt}
    staging = Staging(output, fingerprint(model_dir, input_path, options), restart)
    done = staging.state["records_done"]
    records = _skip(_records(input_path, on_error), done)
    start, bases = time.perf_counter(), 0
    bar = tqdm(total=None, initial=done, unit="rec", disable=not progress, desc=input_path.name, file=sys.stderr)
    for chunk in _chunks(records, chunk_size):
        skipped: list[scoring.Skipped] = []
        if tagger:
            rows, tracks = [], []
            for _, r, t in scoring.tag_records(model, config, chunk, on_error=on_error, skipped=skipped):
                rows += r
                if len(t):
                    tracks.append(t)
            frames = {"rows": pd.DataFrame(rows), "tracks": pd.concat(tracks) if tracks else pd.DataFrame()}
        else:
            rows = []
            for _, r in scoring.score_records(model, config, chunk, batch_size=batch_size, on_error=on_error,
                                              skipped=skipped):
                rows += r
            frames = {"rows": pd.DataFrame(rows)}
        staging.add({k: v for k, v in frames.items() if len(v)}, len(chunk), skipped)
        bases += sum(len(r.seq) for r in chunk)
        bar.update(len(chunk))
        bar.set_postfix_str(f"{bases / max(time.perf_counter() - start, 1e-9):,.0f} bases/s")
    bar.close()

    if tagger:
        columns = ["id", "length", *(f"frac_{t}" for t in config.get("track_names") or ["0"])]
    else:
        columns = ["id", "length", "predicted", *scoring.probability_columns(config)]
    join_parts(staging.files("rows"), output, fmt, columns)
    if tagger:
        track_out = output.with_name(f"{output.stem}.tracks{output.suffix}")
        join_parts(staging.files("tracks"), track_out, fmt, ["id", "position"])
    skipped_all = staging.state["skipped"]
    side = output.with_name(f"{output.name}.skipped.tsv")
    if skipped_all:
        pd.DataFrame(skipped_all, columns=["id", "reason"]).to_csv(side, sep="\t", index=False)
    total = staging.state["records_done"]
    staging.remove()
    return {"records": total, "skipped": len(skipped_all), "skipped_file": str(side) if skipped_all else None,
            "seconds": time.perf_counter() - start}


def forecast_file(model: torch.nn.Module, config: dict[str, Any], input_path: Path, output: Path,
                  horizon: int | None) -> dict[str, Any]:
    """Forecast every series of a CSV into ``output`` (long format, with future timestamps)."""
    from pipelines.data.timeseries import read_series_csv

    fmt = output_format(output)
    frame = read_series_csv(input_path)
    result = scoring.forecast_series(model, config, frame, horizon=horizon)
    step = frame.attrs.get("step")
    if step is not None and isinstance(frame.index, pd.DatetimeIndex):
        result.insert(2, "ds", frame.index[-1] + step * result["step"].to_numpy())
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            escape_formulas(result).to_csv(tmp_name, index=False)
        else:
            result.to_parquet(tmp_name, index=False)
        chmod_like_open(tmp_name)
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return {"series": frame.shape[1], "rows": len(result)}


def call_genes_file(model: torch.nn.Module, config: dict[str, Any], input_path: Path, output: Path, *,
                    bedgraph: Path | None, genetic_code: int, min_len: int, circular: bool,
                    progress: bool = True, package: str = "the model package") -> dict[str, Any]:
    """Gene calls of every record of a genome FASTA into the GFF3 ``output`` (and the per-base coding
    probability into ``bedgraph``); returns the run's summary as a dict. Raises ``ValueError`` when
    the package is not a gene caller (a tagger with 2 strand tracks x 4 classes)."""
    from pipelines.genome.decoder import codon_tables, decoder_for_package
    from pipelines.genome.predict import annotate_genome, check_tagger

    if config.get("task") != "tagging":
        raise ValueError(f"GFF3 output needs a gene caller (a tagging package); this is a {config.get('task')!r} "
                         "model: write .csv or .parquet instead")
    check_tagger(model)
    # Settings are checked before the model runs, not after minutes of it.
    codon_tables(genetic_code)
    decoder = decoder_for_package(config, min_len, source=package)
    if bedgraph is not None:
        bedgraph.parent.mkdir(parents=True, exist_ok=True)
    summary = annotate_genome(model, input_path, output, bedgraph, genetic_code=genetic_code, min_len=min_len,
                              circular=circular, decoder=decoder, progress=progress)
    return summary.as_dict()


# ---------------------------------------------------------------------------------------- CLI
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqmamba score", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a bundled model name (see 'seqmamba models') or a package folder")
    parser.add_argument("input", type=Path, help="FASTA/FASTQ (plain or gzip), id,sequence table, or series CSV")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output file: .csv or .parquet; .gff3 (or .gff) for gene calls with a gene caller")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                        help="a bad record stops the run (fail) or is left out and listed (skip)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default 64)")
    parser.add_argument("--chunk-size", type=int, default=4096, help="records per resumable chunk (default 4096)")
    parser.add_argument("--horizon", type=int, help="forecast steps (default: the model's horizon)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted run's progress")
    genes = parser.add_argument_group("gene calling (a gene-caller package and a .gff3 output)")
    genes.add_argument("--bedgraph", type=Path, help="also write the per-base coding probability per strand")
    genes.add_argument("--genetic-code", type=int, default=11,
                       help="NCBI translation table of the start and stop codons (default 11; 4 for Mycoplasma)")
    genes.add_argument("--min-len", type=int, default=90, help="shortest gene in bp, stop codon included (default 90)")
    genes.add_argument("--circular", action="store_true", help="the records are circular (context and genes "
                       "across the origin)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.chunk_size < 1:
        parser.error("--batch-size and --chunk-size must be at least 1")
    gene_calling = args.output.suffix.lower() in GFF3_SUFFIXES
    if not gene_calling and (args.bedgraph or args.circular or args.genetic_code != 11 or args.min_len != 90):
        parser.error("--bedgraph, --genetic-code, --min-len and --circular need a .gff3 (or .gff) output")

    from pipelines.models import resolve_model
    from seqmodels.package import PackageError, load_package

    try:
        model_dir = resolve_model(args.model)
        model, config, _ = load_package(model_dir)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        if not args.input.is_file():
            raise InputError("no such file", file=str(args.input))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        if gene_calling:
            summary = call_genes_file(model, config, args.input, args.output, bedgraph=args.bedgraph,
                                      genetic_code=args.genetic_code, min_len=args.min_len, circular=args.circular,
                                      progress=not args.no_progress, package=str(model_dir / "config.json"))
            extra = f" and {args.bedgraph}" if args.bedgraph else ""
            print(f"{summary['genes']:,} genes on {summary['sequences']:,} sequences ({summary['bases']:,} bp) in "
                  f"{summary['seconds_total']:.1f} s -> {args.output}{extra}", file=sys.stderr)
            return 0
        if config.get("task") == "forecasting":
            summary = forecast_file(model, config, args.input, args.output, args.horizon)
            print(f"{summary['series']} series, {summary['rows']} forecast rows -> {args.output}", file=sys.stderr)
            return 0
        summary = score_dna_file(model, config, model_dir, args.input, args.output, batch_size=args.batch_size,
                                 chunk_size=args.chunk_size, on_error=args.on_error, restart=args.restart,
                                 progress=not args.no_progress)
    except (InputError, PackageError) as err:
        print(f"seqmamba score: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # unknown model name, bad options
        print(f"seqmamba score: {err}", file=sys.stderr)
        return 2
    msg = f"{summary['records']:,} records in {summary['seconds']:.1f} s -> {args.output}"
    if summary["skipped"]:
        msg += f"; {summary['skipped']:,} skipped (listed in {summary['skipped_file']})"
    print(msg, file=sys.stderr)
    return 0
