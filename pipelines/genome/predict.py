"""Genome-scale gene calling with a per-base tagger: overlapping windows stitched at their centres.

A whole chromosome (4-12 Mb) does not fit one forward pass of a bidirectional model, so it is read
in windows of ``window`` bases that overlap by ``2 * overlap``: the sequence is cut into *cores* of
``window - 2 * overlap`` bases, each core is computed with at least ``overlap`` bases of context on
both sides (or the true end of a linear sequence), and only core outputs are kept. Every base thus
comes from the one window where it sits at least ``overlap`` bases from an edge; windows all have
the same width, so several go through the model as one batch with no padding. On a circular
sequence the context wraps around the origin, so the bases at the origin get context too.

Seam bound. A bidirectional Mamba's output at a base depends on bases farther than ``overlap`` away
only through SSM states carried across that distance, which decay geometrically (each step
multiplies them by exp(dt * A) < 1). Neighbouring windows overlap, so near each seam two windows
compute the same bases: the one whose core they are in, with at least ``overlap`` bases of context,
and its neighbour, with at least ``(1 - BAND) * overlap``. Their largest disagreement over the
``BAND * overlap`` bases on either side of every seam (in probability units) is ``max_seam_gap``:
measured on the genome itself, it shows what cutting the context shorter than ``overlap`` changes,
so it estimates (it does not prove) the stitching error from above. Against one pass over sequences
short enough for it, ``|stitched - single| <= 2 * max_seam_gap + 1e-5`` held for every random
tagger tried (worst ratio error / gap 1.45 over 64 models and overlaps; checked in
``tests/pipelines/genome/test_predict.py``). The default overlap, 5 kb per side, is five e-folds of
the slowest state at Mamba's initialisation (dt >= 0.001, |A| >= 1) and several gene lengths.
Trained gene callers keep some state much longer than that, so their gap at 5 kb is 0.1-0.35, but
what it changes in the calls is small: on E. coli (H200, bf16) 5 kb against 30 kb of overlap moved 3
starts of 4,214 genes and no stop, and 10 or 15 kb were no closer to 30 kb than 5 kb was; on phage
lambda cut into 10 kb cores (float32), one pass against 5 kb of overlap differed by at most 0.055 per
base and in 3 of 56 calls (one marginal gene, two starts). The gap is logged; a warning (raise
``overlap``) comes only above ``GAP_WARNING``, where neighbouring windows really disagree.

Memory: one batch of windows on the device (activations of ``batch_windows * window`` tokens, no
gradients) plus about 150 bytes per base of the longest record on the host (the (L, 2, 4) float32
probabilities and, at the peak, the decoder's per-base scores), whatever the number of windows:
on a CPU, E. coli (4.6 Mb) peaked at 1.46 GB resident against 0.79 GB for phage lambda (48.5 kb)
with the same model and window (benchmarks/RESULTS.md). On a CPU with glibc the model run keeps
freed memory for reuse inside a window and gives it back after every batch of windows
(:mod:`pipelines.cpu_memory`): the bundled gene caller peaks at 4.4-4.9 GB with 100 kb windows
(3.4-3.6 GB with nothing kept), whatever the genome's length (E. coli: 4.4-4.6 GB).

``annotate_genome`` writes the gene calls as GFF3 through the part-1 decoder
(:mod:`pipelines.genome.decoder`) and optionally the per-base coding probability as bedGraph, each
to a temporary file renamed into place. From the shell::

    python -m pipelines.genome.predict MODEL genome.fa -o genes.gff3 --bedgraph coding.bedgraph
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pipelines.cpu_memory import give_back_freed_memory, keep_freed_memory
from pipelines.data.alphabet import tokenize
from pipelines.data.errors import InputError
from pipelines.genome.adaptive import decode_genome
from pipelines.genome.annotation import CDS
from pipelines.genome.decoder import DecoderConfig, coding_probability, decode, decoder_for_package
from pipelines.genome.gff3 import write_bedgraph, write_gff3
from seqmodels import vocab

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 100_000  # bases per forward pass (the training windows' length)
DEFAULT_OVERLAP = 5_000  # context on each side of a core (see the module docstring)
BAND = 0.75  # share of the overlap, on each side of a seam, over which windows are compared
# max_seam_gap (probability units) above which the overlap is too short: the trained gene caller's
# gap is 0.1-0.35 at the default 5 kb with no measurable effect on its calls (module docstring), and
# 0.37 on lambda at 2 kb; above one half, two windows call the same base differently.
GAP_WARNING = 0.5
TRIM_BETWEEN_WINDOWS = True  # pipelines.cpu_memory.give_back_freed_memory after each CPU batch of windows
N_TRACKS, N_CLASSES = 2, 4  # forward / reverse strand x (non-coding, codon position 1, 2, 3)


class Tile(NamedTuple):
    """Bases [core_start, core_end) are kept from the window reading ``width`` bases from ``start``
    (positions taken modulo the length on a circular sequence; ``start`` may be negative there)."""

    core_start: int
    core_end: int
    start: int
    width: int


def plan_tiles(length: int, window: int, overlap: int, circular: bool = False) -> list[Tile]:
    """Cores covering [0, length) once, each inside an equally wide window with >= ``overlap`` context.

    Linear: one window if ``length <= window``; otherwise cores of ``window - 2 * overlap`` bases
    whose windows are shifted inwards at the two ends (more context there, never less). Circular:
    cores of ``min(window - 2 * overlap, length)`` bases, windows wrapping across the origin.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    if overlap < 0 or window <= 2 * overlap:
        raise ValueError(f"need window > 2 * overlap >= 0, got window={window}, overlap={overlap}")
    if not circular and length <= window:
        return [Tile(0, length, 0, length)]
    core = min(window - 2 * overlap, length) if circular else window - 2 * overlap
    tiles = []
    for core_start in range(0, length, core):
        core_end = min(length, core_start + core)
        if circular:
            tiles.append(Tile(core_start, core_end, core_start - overlap, core + 2 * overlap))
        else:
            start = min(max(core_start - overlap, 0), length - window)
            tiles.append(Tile(core_start, core_end, start, window))
    return tiles


@dataclass
class StitchedProbabilities:
    """Per-base class probabilities of one sequence and the largest disagreement seen at a seam."""

    probs: np.ndarray  # (seqlen, 2, 4) float32
    max_seam_gap: float


def check_tagger(model: torch.nn.Module) -> None:
    """Raise ``ValueError`` unless ``model`` tags bases with 2 strand tracks x 4 classes."""
    cfg = getattr(model, "config", None)
    shape = (getattr(cfg, "n_tracks", None), getattr(cfg, "n_classes", None))
    if shape != (N_TRACKS, N_CLASSES):
        raise ValueError(
            f"gene calling needs a per-base tagger with {N_TRACKS} strand tracks x {N_CLASSES} classes "
            f"(non-coding, codon position 1-3); got {type(model).__name__} with (n_tracks, n_classes) = {shape}"
        )


def _device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _flushing_denormals() -> bool:
    """Whether the CPU flushes subnormal floats to zero now (PyTorch has no getter: with flushing on,
    a subnormal input reads as zero)."""
    return torch.tensor([1e-40], dtype=torch.float32).mul(1.0).item() == 0.0


@contextlib.contextmanager
def _flush_denormals(device: torch.device) -> Iterator[None]:
    """On a CPU, flush subnormal floats to zero while the model runs, then restore the caller's
    setting. The CPU scan otherwise meets x86's slow subnormal path: a tiny tagger read 6 kb in 5 s
    instead of 0.35 s. Values below 1e-38 cannot move a probability the decoder reads."""
    if device.type != "cpu" or _flushing_denormals():
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _outside_core(t: Tile, p: np.ndarray, band: int, length: int, circular: bool) -> list[tuple]:
    """(positions, probabilities) of window ``t``'s outputs ``p`` (width, 2, 4) within ``band`` bases
    outside its core, where the neighbouring windows' cores are kept (none past a linear end)."""
    lo = max(t.core_start - band, t.start) if circular or t.core_start > 0 else t.core_start
    hi = min(t.core_end + band, t.start + t.width) if circular or t.core_end < length else t.core_end
    spans = [(a, b) for a, b in ((lo, t.core_start), (t.core_end, hi)) if b > a]
    return [(np.arange(a, b) % length, p[a - t.start : b - t.start]) for a, b in spans]


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), size):
        yield tiles[i : i + size]


def predict_probabilities(
    model: torch.nn.Module,
    tokens: np.ndarray,
    *,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    circular: bool = False,
    batch_windows: int = 1,
    autocast: bool | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> StitchedProbabilities:
    """Probabilities (seqlen, 2, 4) of one sequence of token ids (seqlen,), stitched from windows.

    ``batch_windows`` windows go through the model together (on a GPU, 4-16 keep it busy);
    ``autocast`` runs the model under bf16 autocast (default: on CUDA only).
    """
    from tqdm import tqdm

    check_tagger(model)
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be at least 1, got {batch_windows}")
    length = int(len(tokens))
    tiles = plan_tiles(length, window, overlap, circular)
    device = _device(model)
    autocast = device.type == "cuda" if autocast is None else autocast
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    source = torch.from_numpy(np.asarray(tokens, dtype=np.int8)).to(device)  # (seqlen,); widened per batch
    probs = np.empty((length, N_TRACKS, N_CLASSES), dtype=np.float32)
    # Each window's outputs just outside its core (up to BAND * overlap on each side), where a
    # neighbouring window's core is kept: (positions, probabilities) compared once all are done.
    band = max(1, int(overlap * BAND))
    outside: list[tuple[np.ndarray, np.ndarray]] = []
    was_training = model.training
    model.eval()
    bar = tqdm(total=length, unit="bp", unit_scale=True, desc=desc, disable=not progress, file=sys.stderr)
    try:
        with _flush_denormals(device), keep_freed_memory(device) as kept, torch.inference_mode(), amp:
            for group in _batches(tiles, batch_windows):
                starts = torch.tensor([t.start for t in group], device=device)
                index = (starts[:, None] + torch.arange(group[0].width, device=device)) % length  # (b, width)
                out = model(source[index].long()).float().softmax(-1).cpu().numpy()  # (b, width, 2, 4)
                for t, p in zip(group, out):
                    probs[t.core_start : t.core_end] = p[t.core_start - t.start : t.core_end - t.start]
                    outside += _outside_core(t, p, band, length, circular)
                bar.update(sum(t.core_end - t.core_start for t in group))
                if kept and TRIM_BETWEEN_WINDOWS:
                    give_back_freed_memory()
    finally:
        bar.close()
        model.train(was_training)
    gap = max((float(np.abs(p - probs[pos]).max()) for pos, p in outside), default=0.0)
    if gap > GAP_WARNING:
        log.warning("%s: windows disagree by up to %.3g at their seams (overlap %d bp); raise the overlap",
                    desc or "sequence", gap, overlap)
    elif len(tiles) > 1:
        log.info("%s: windows agree to within %.3g at their seams (overlap %d bp)", desc or "sequence", gap, overlap)
    return StitchedProbabilities(probs, gap)


@dataclass
class AnnotationSummary:
    """What :func:`annotate_genome` did: counts, the seam bound and where the time went."""

    sequences: int
    bases: int
    genes: int
    max_seam_gap: float
    window: int
    overlap: int
    seconds_model: float
    seconds_decode: float
    seconds_total: float
    peak_gpu_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed to it when the block succeeds, removed otherwise.

    Created with mode 0o666 less the umask, as ``open`` would create ``target`` (``mkstemp``'s 0o600
    would make the renamed output unreadable to everyone else)."""
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class GenomeCalls:
    """Gene calls of a set of sequences, with what writing and plotting them needs."""

    calls: list[CDS]
    sequences: dict[str, tuple[int, bool]]  # seqid -> (length, circular), in input order
    texts: dict[str, str]  # seqid -> upper-case ACGTN sequence
    coding: dict[str, np.ndarray]  # seqid -> (seqlen, 2) float32 P(coding) per strand; empty unless kept
    summary: AnnotationSummary

    def write(self, gff3: str | os.PathLike, bedgraph: str | os.PathLike | None = None) -> None:
        """The calls as GFF3 (and the coding probability as bedGraph, which needs ``keep_coding``), each
        written to a temporary file beside its target and renamed into place."""
        if bedgraph is not None and set(self.coding) != set(self.sequences):
            raise ValueError("no coding probabilities to write: call call_genes with keep_coding=True")
        with _atomic_path(Path(gff3)) as tmp:
            write_gff3(tmp, self.calls, self.sequences, sequence=self.texts)
        if bedgraph is not None:
            with _atomic_path(Path(bedgraph)) as tmp:
                write_bedgraph(tmp, self.coding)


def call_genes(
    model: torch.nn.Module,
    records: Iterable,
    *,
    genetic_code: int = 11,
    min_len: int = 90,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    circular: bool = False,
    batch_windows: int | None = None,
    decoder: DecoderConfig | None = None,
    autocast: bool | None = None,
    keep_coding: bool = True,
    progress: bool = False,
    source: str | None = None,
) -> GenomeCalls:
    """Gene calls on DNA ``records`` (anything with ``.id`` and ``.seq``, e.g. ``read_sequences`` output).

    The model (a tagger with 2 strand tracks x 4 classes, on whatever device it is) reads each
    record in stitched windows (:func:`predict_probabilities`); the part-1 decoder turns the
    probabilities into gene calls with start and stop codons of ``genetic_code`` and at least
    ``min_len`` bp (``decoder`` overrides every decoder setting). ``circular`` treats every record
    as a circular molecule (context and genes across the origin). ``keep_coding`` keeps each
    record's per-base coding probability (8 bytes per base). ``batch_windows`` defaults to 8 on a
    GPU, 1 on a CPU. ``source`` names the input in error messages. A genome-adaptive decoder
    (``decoder.adaptive``) learns from all records together, so it keeps every record's
    probabilities until the last is read (32 bytes per base).
    """
    check_tagger(model)
    cfg = decoder or DecoderConfig(min_length=min_len)
    device = _device(model)
    batch_windows = batch_windows or (8 if device.type == "cuda" else 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    seconds_model = seconds_decode = gap = 0.0
    calls: list[CDS] = []
    sequences: dict[str, tuple[int, bool]] = {}
    texts: dict[str, str] = {}
    coding: dict[str, np.ndarray] = {}
    held: list[tuple[str, str, np.ndarray, bool]] = []  # (seqid, text, probs, circular) for decode_genome
    for record in records:
        try:
            tokens = tokenize(record.seq)  # (seqlen,) int8; IUPAC ambiguity codes become N
            if len(tokens) == 0:
                raise InputError("empty sequence")
        except InputError as err:
            raise InputError(err.reason, file=source, record=repr(record.id)) from None
        if record.id in sequences:
            raise InputError("duplicate record id", file=source, record=repr(record.id))
        t0 = time.perf_counter()
        stitched = predict_probabilities(model, tokens, window=window, overlap=overlap, circular=circular,
                                         batch_windows=batch_windows, autocast=autocast, progress=progress,
                                         desc=record.id)
        t1 = time.perf_counter()
        text = vocab.decode(tokens)  # upper-case ACGTN, as the decoder reads it
        if cfg.adaptive:
            held.append((record.id, text, stitched.probs, circular))
        else:
            calls += decode(text, stitched.probs, seqid=record.id, transl_table=genetic_code, circular=circular,
                            config=cfg)
        seconds_model, seconds_decode = seconds_model + t1 - t0, seconds_decode + time.perf_counter() - t1
        sequences[record.id], texts[record.id] = (len(tokens), circular), text
        if keep_coding:
            coding[record.id] = coding_probability(stitched.probs)  # (seqlen, 2) float32
        gap = max(gap, stitched.max_seam_gap)
        del stitched  # one record's probabilities at a time, unless held for the adaptive decoder
    if not sequences:
        raise InputError("no sequence to annotate", file=source)
    if held:
        t1 = time.perf_counter()
        calls = [c for per_record in decode_genome(held, transl_table=genetic_code, config=cfg) for c in per_record]
        seconds_decode += time.perf_counter() - t1
        del held
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    summary = AnnotationSummary(len(sequences), sum(n for n, _ in sequences.values()), len(calls), gap, window,
                                overlap, seconds_model, seconds_decode, time.perf_counter() - start, peak)
    return GenomeCalls(calls, sequences, texts, coding, summary)


def annotate_genome(
    model: torch.nn.Module,
    fasta_path: str | os.PathLike,
    out_gff3: str | os.PathLike,
    bedgraph: str | os.PathLike | None = None,
    genetic_code: int = 11,
    min_len: int = 90,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    *,
    circular: bool = False,
    batch_windows: int | None = None,
    decoder: DecoderConfig | None = None,
    autocast: bool | None = None,
    progress: bool = True,
) -> AnnotationSummary:
    """Call genes on every record of a FASTA (plain or gzip) and write them as GFF3 to ``out_gff3``
    (and, with ``bedgraph``, the per-base coding probability of each strand), each through a
    temporary file renamed into place. Settings as in :func:`call_genes`."""
    from pipelines.data.fasta import read_sequences

    check_tagger(model)
    result = call_genes(model, read_sequences(fasta_path), genetic_code=genetic_code, min_len=min_len,
                        window=window, overlap=overlap, circular=circular, batch_windows=batch_windows,
                        decoder=decoder, autocast=autocast, keep_coding=bedgraph is not None, progress=progress,
                        source=os.fspath(fasta_path))
    write_start = time.perf_counter()
    result.write(out_gff3, bedgraph)
    summary = result.summary
    summary.seconds_total += time.perf_counter() - write_start
    log.info("%s: %d genes on %d sequences (%d bp) in %.1f s", fasta_path, summary.genes, summary.sequences,
             summary.bases, summary.seconds_total)
    return summary


# Throughput accounting for ``seqmamba fit`` (Lightning's ThroughputMonitor takes these by import
# path in pipelines/configs/genome_tagger.yaml): samples and tokens of a tagging batch.
def batch_rows(batch: dict[str, torch.Tensor]) -> int:
    """Windows in a tagging batch."""
    return int(batch["tokens"].shape[0])


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (unpadded) tokens in a tagging batch, so the monitor's items/s is tokens/s."""
    lengths = batch.get("lengths")
    return int(lengths.sum()) if lengths is not None else int(batch["tokens"].numel())


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.genome.predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a tagger model package folder or bundled model name")
    parser.add_argument("fasta", type=Path, help="genome FASTA (plain or gzip), one or more records")
    parser.add_argument("-o", "--output", type=Path, required=True, help="gene calls, GFF3")
    parser.add_argument("--bedgraph", type=Path, help="also write the per-base coding probability (bedGraph)")
    parser.add_argument("--genetic-code", type=int, default=11, help="NCBI translation table (default 11; 4 for "
                        "Mycoplasma)")
    parser.add_argument("--min-len", type=int, default=90, help="shortest gene, bp with stop codon (default 90)")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="bases per forward pass")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="context kept on each side of a core")
    parser.add_argument("--batch-windows", type=int, help="windows per forward pass (default 8 on GPU, 1 on CPU)")
    parser.add_argument("--circular", action="store_true", help="records are circular (e.g. bacterial chromosomes)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--no-autocast", action="store_true", help="float32 on the GPU too (default: bf16 autocast)")
    parser.add_argument("--stats", type=Path, help="write the run's summary (times, peak GPU memory) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.models import resolve_model
    from seqmodels.package import PackageError, load_package

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, config, _ = load_package(resolve_model(args.model))
        if config.get("task") != "tagging":
            raise ValueError(f"{args.model} is a {config.get('task')!r} model; gene calling needs a tagger")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        summary = annotate_genome(
            model, args.fasta, args.output, args.bedgraph, genetic_code=args.genetic_code, min_len=args.min_len,
            window=args.window, overlap=args.overlap, circular=args.circular, batch_windows=args.batch_windows,
            decoder=decoder_for_package(config, args.min_len, source=str(args.model)),
            autocast=False if args.no_autocast else None, progress=not args.no_progress,
        )
    except (InputError, PackageError, ValueError) as err:
        print(f"predict: {err}", file=sys.stderr)
        return 2
    stats = {**summary.as_dict(), "device": str(device), "model": str(args.model), "fasta": str(args.fasta),
             "bases_per_second": summary.bases / max(summary.seconds_total, 1e-9)}
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n")
    rate = stats["bases_per_second"]
    print(f"{summary.genes:,} genes on {summary.bases:,} bp in {summary.seconds_total:.1f} s ({rate:,.0f} bp/s; "
          f"max seam gap {summary.max_seam_gap:.2g}) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
