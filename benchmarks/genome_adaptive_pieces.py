"""Does the genome-adaptive decoder help on genomes of a few kb, where it learns from a handful of genes?

Cuts phage lambda and the A. thaliana chloroplast into non-overlapping pieces of 3-24 kb, decodes
each piece alone with the one-pass decoder and the adaptive one (both min_score 30, the package's
setting) from the bundled gene caller's whole-genome probabilities (read as linear), and reports gene-level F1 against
the reference CDS wholly inside the piece, grouped by how many genes the adaptive pass learned from::

    python benchmarks/genome_adaptive_pieces.py [--cache DIR]   # model on the CPU: ~2 min, cached
"""

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.data.alphabet import tokenize  # noqa: E402
from pipelines.genome.adaptive import decode_genome, learn_statistics  # noqa: E402
from pipelines.genome.annotation import CDS, read_annotation  # noqa: E402
from pipelines.genome.decoder import DecoderConfig, decode  # noqa: E402
from pipelines.genome.evaluate import evaluate  # noqa: E402
from seqmodels import vocab  # noqa: E402

GENOMES = {"lambda": "genomes/phage_lambda/NC_001416.gbk.gz",
           "chloroplast": "genomes/athaliana_chloroplast/NC_000932.gb.gz"}
PIECES = (3000, 5000, 8000, 12000, 16000, 24000)
GROUPS = ((0, 3), (3, 6), (6, 10), (10, 20), (20, 1000))  # genes learned from


def _f1(m) -> float:
    """Gene-level F1; 0 for a piece with no calls (precision undefined)."""
    precision = 0.0 if m.n_predicted == 0 else m.precision
    return 2 * m.sensitivity * precision / max(m.sensitivity + precision, 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/adaptive_pieces"), help="probabilities cache")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    one, adaptive = DecoderConfig(min_score=30), DecoderConfig(min_score=30, adaptive=True)
    rows = []  # (genes learned, one-pass F1, adaptive F1)
    model = None
    for name, entry in GENOMES.items():
        (rec,) = read_annotation(args.data / entry)
        cached = args.cache / f"{name}.npy"
        if not cached.exists():
            from pipelines.genome.predict import predict_probabilities
            from seqmodels.package import load_package

            if model is None:
                model = load_package(REPO / "data" / "models" / "gene_caller-mamba")[0].eval()
            np.save(cached, predict_probabilities(model, tokenize(rec.seq)).probs)  # (seqlen, 2, 4); pieces are linear
        probs, text = np.load(cached), vocab.decode(tokenize(rec.seq))
        for size in PIECES:
            for off in range(0, len(text) - size + 1, size):
                piece, p = text[off:off + size], probs[off:off + size]  # (size,), (size, 2, 4)
                reference = [CDS("w", tuple((a - off, b - off, s) for a, b, s in c.parts)) for c in rec.cds
                             if all(off <= a and b <= off + size for a, b, _ in c.parts)]
                if not reference:
                    continue
                f1 = [_f1(evaluate(decode_genome([("w", piece, p, False)], transl_table=rec.transl_table,
                                                 config=cfg)[0], reference, {"w": size})) for cfg in (one, adaptive)]
                first = decode(piece, p, seqid="w", transl_table=rec.transl_table, config=one)
                learned = learn_statistics([(piece, first)], transl_table=rec.transl_table).genes
                rows.append((learned, *f1))
    table = np.array(rows)
    print("| genes learned from | pieces | one-pass F1 | adaptive F1 | adaptive worse / better |")
    print("|---|---|---|---|---|")
    for lo, hi in GROUPS:
        sel = table[(table[:, 0] >= lo) & (table[:, 0] < hi)]
        if len(sel):
            print(f"| {lo}-{hi - 1} | {len(sel)} | {sel[:, 1].mean():.3f} | {sel[:, 2].mean():.3f} | "
                  f"{(sel[:, 2] < sel[:, 1] - 1e-9).sum()} / {(sel[:, 2] > sel[:, 1] + 1e-9).sum()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
