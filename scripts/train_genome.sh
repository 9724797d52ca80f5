#!/usr/bin/env bash
# Train the gene caller (pipelines/configs/genome_tagger.yaml), export it, call genes on the held-out
# genome and score them beside pyrodigal, time whole-genome inference, and write a summary.
#
#   bash scripts/train_genome.sh PACKAGE_DIR SUMMARY.md
#
# Run from the repository root with PYTHONPATH set to it (about 7 minutes on one H200). Beside
# SUMMARY.md it also leaves genome_heldout.gff3 (the held-out genome's calls) and
# genome_train_metrics.csv (the training log). Settings from the environment:
#   PYTHON         interpreter (python3)
#   CONFIG         fit config (pipelines/configs/genome_tagger.yaml; the tiny twin checks this script on a CPU)
#   SEQMAMBA_DATA  the shared data folder holding genomes/ (default ../shared/data)
#   TIMING_GENOME  genome whose whole-genome inference is timed (E. coli K-12)
#   FIT_ARGS       extra arguments for 'seqmamba fit', e.g. "--trainer.max_steps 100"
#   WORK           scratch folder for the run and predictions (a new temporary folder)
#   DECODER        decoder settings (JSON) written into the package's config.json before the held-out call,
#                  e.g. '{"adaptive": true, "min_score": 30}' (the bundled package's); default: none
# The held-out genome is the config's data.init_args.test[0]; its genetic code and topology come from
# its annotation. pyrodigal is used when importable; otherwise the summary points at the reference
# figures in benchmarks/RESULTS.md.
set -euo pipefail

PKG=${1:?usage: bash scripts/train_genome.sh PACKAGE_DIR SUMMARY.md}
SUMMARY=${2:?usage: bash scripts/train_genome.sh PACKAGE_DIR SUMMARY.md}
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-pipelines/configs/genome_tagger.yaml}
export SEQMAMBA_DATA=${SEQMAMBA_DATA:-$(cd .. && pwd)/shared/data}
TIMING_GENOME=${TIMING_GENOME:-genomes/ecoli_k12_mg1655/GCF_000005845.2_ASM584v2_genomic.gbff.gz}
WORK=${WORK:-$(mktemp -d -t genome_tagger.XXXXXX)}
read -r -a FIT_EXTRA <<<"${FIT_ARGS:-}"
RUN=$WORK/run
OUTDIR=$(dirname "$SUMMARY")
mkdir -p "$WORK" "$OUTDIR"
export PYTHONUNBUFFERED=1

log() { echo "[train_genome $(date +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

[[ -f $CONFIG ]] || { echo "train_genome: config $CONFIG not found (run from the repository root)" >&2; exit 2; }
[[ -d $SEQMAMBA_DATA/genomes ]] || {
  echo "train_genome: no genomes/ under SEQMAMBA_DATA=$SEQMAMBA_DATA (set it to the shared data folder)" >&2
  exit 2
}

# genome entry (GenBank path, or "gtf,fasta") -> FASTA file; prints "<genetic code> <circular 0/1>".
to_fasta() {
  "$PY" - "$SEQMAMBA_DATA" "$1" "$2" <<'EOF'
import os, sys
from pipelines.genome.annotation import read_annotation
root, entry, out = sys.argv[1:]
paths = [os.path.join(root, p.strip()) for p in entry.split(",")]
sequences = read_annotation(paths[0], paths[1] if len(paths) > 1 else None)
with open(out, "w") as fh:
    for s in sequences:
        fh.write(f">{s.id}\n")
        fh.writelines(s.seq[i : i + 80] + "\n" for i in range(0, len(s.seq), 80))
print(sequences[0].transl_table, int(all(s.circular for s in sequences)))
EOF
}

HELDOUT=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['init_args']['test'][0])" "$CONFIG")
for entry in "$HELDOUT" "$TIMING_GENOME"; do
  for path in ${entry//,/ }; do
    [[ -f $SEQMAMBA_DATA/$path ]] || { echo "train_genome: $SEQMAMBA_DATA/$path not found" >&2; exit 2; }
  done
done
log "work folder $WORK; held-out genome $HELDOUT"
# Decoder settings are checked before training, not after minutes of it.
set_decoder() {  # set_decoder CONFIG_JSON_OR_EMPTY: with a path, writes the settings into that package config
  "$PY" - "$DECODER" "${1:-}" <<'EOF'
import json, sys
from pipelines.atomic import write_json_atomic
from pipelines.data.errors import InputError
from pipelines.genome.decoder import decoder_for_package
text, path = sys.argv[1:]
try:
    settings = json.loads(text)
    decoder_for_package({"decoder": settings}, source="DECODER")
except (ValueError, InputError) as err:  # json.JSONDecodeError is a ValueError
    sys.exit(f"train_genome: DECODER={text!r} is not a valid decoder setting: {err}")
if path:
    config = json.load(open(path))
    config["decoder"] = settings
    write_json_atomic(path, config)
EOF
}
if [[ -n ${DECODER:-} ]]; then set_decoder; fi

# 1. Train.
FIT_CMD=("$PY" -m pipelines.cli fit --config "$CONFIG" --trainer.default_root_dir "$RUN" "${FIT_EXTRA[@]}")
log "fit: ${FIT_CMD[*]}"
t0=$(now)
"${FIT_CMD[@]}"
FIT_S=$(elapsed "$t0")
cp "$RUN/metrics.csv" "$OUTDIR/genome_train_metrics.csv"

# 2. Export the best checkpoint as a model package.
LICENCE="public NCBI RefSeq / ENA records; the repositories they were copied from state no licence, except the \
A. thaliana chloroplast (Biopython's test file: Biopython License Agreement); see the shared data README"
"$PY" -m pipelines.cli export "$RUN" "$PKG" --licence "$LICENCE" >/dev/null
log "exported $PKG"
if [[ -n ${DECODER:-} ]]; then
  set_decoder "$PKG/config.json"
  log "decoder settings $DECODER"
fi

# 3. Call genes on the held-out genome and score them (beside pyrodigal when it is installed).
INFO=$(to_fasta "$HELDOUT" "$WORK/heldout.fa")
read -r CODE CIRCULAR <<<"$INFO"
CIRC_ARG=(); [[ $CIRCULAR == 1 ]] && CIRC_ARG=(--circular)
"$PY" -m pipelines.genome.predict "$PKG" "$WORK/heldout.fa" -o "$OUTDIR/genome_heldout.gff3" \
  --genetic-code "$CODE" "${CIRC_ARG[@]}" --stats "$WORK/heldout_stats.json" --no-progress
EVAL_ARGS=("$OUTDIR/genome_heldout.gff3" "$SEQMAMBA_DATA/${HELDOUT%%,*}" --json "$WORK/eval.json")
[[ $HELDOUT == *,* ]] && EVAL_ARGS+=(--fasta "$SEQMAMBA_DATA/${HELDOUT#*,}")
if "$PY" -c "import pyrodigal" 2>/dev/null; then EVAL_ARGS+=(--prodigal); else log "pyrodigal not installed: no side-by-side run"; fi
"$PY" -m pipelines.cli annotate-eval "${EVAL_ARGS[@]}" | tee "$WORK/eval.txt"
# The package records its held-out figures (what `seqmamba models` and the app's Models page show).
"$PY" - "$PKG/metrics.json" "$WORK/eval.json" "$HELDOUT" <<'EOF'
import json, math, sys
from pipelines.atomic import write_json_atomic
path, evaluation, heldout = sys.argv[1:]
metrics, ours = json.load(open(path)), json.load(open(evaluation))["prediction"]
finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # precision of no calls: 0/0
metrics["test"] = {k: finite(ours[k]) for k in ("sensitivity", "precision", "exact_start", "coding_f1", "n_reference", "n_predicted")}
metrics["test_genome"] = f"{heldout} (held out of training and validation)"
metrics["test_command"] = "python -m pipelines.genome.predict PKG heldout.fa -o heldout.gff3; seqmamba annotate-eval heldout.gff3 " + heldout
write_json_atomic(path, metrics)
EOF

# 4. Whole-genome inference, timed (model load and FASTA conversion excluded from the stats' seconds).
INFO=$(to_fasta "$TIMING_GENOME" "$WORK/timing.fa")
read -r TCODE TCIRC <<<"$INFO"
TCIRC_ARG=(); [[ $TCIRC == 1 ]] && TCIRC_ARG=(--circular)
t0=$(now)
"$PY" -m pipelines.genome.predict "$PKG" "$WORK/timing.fa" -o "$WORK/timing.gff3" --genetic-code "$TCODE" \
  "${TCIRC_ARG[@]}" --stats "$WORK/timing_stats.json" --no-progress
TIMING_WALL_S=$(elapsed "$t0")

# 5. Summary.
"$PY" - "$SUMMARY" "$PKG" "$WORK" "$RUN" "$CONFIG" "$HELDOUT" "$TIMING_GENOME" "$FIT_S" "$TIMING_WALL_S" \
  "${FIT_CMD[*]}" <<'EOF'
import csv, json, os, statistics, subprocess, sys
import torch, yaml
summary, pkg, work, run, config, heldout, timing_genome, fit_s, timing_wall, fit_cmd = sys.argv[1:]
load = lambda name: json.load(open(os.path.join(work, name)))
gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f} GiB"

rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
column = lambda name: [float(r[name]) for r in rows if r.get(name) not in (None, "")]
tok_s = column("train/device/items_per_sec")
peak = column("DeviceStatsMonitor.on_train_batch_end/allocated_bytes.all.peak")
val = column("val/loss")
steps = json.load(open(os.path.join(pkg, "metrics.json")))["global_step"]  # of the exported checkpoint
last = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=True)
last_step = last["global_step"]
run_config = yaml.safe_load(open(os.path.join(run, "config.yaml")))
resolved = run_config["data"]["init_args"]
monitors = [(c.get("init_args") or {}).get("monitor") for c in run_config["trainer"].get("callbacks") or []
            if isinstance(c, dict) and str(c.get("class_path", "")).endswith("ModelCheckpoint")]
monitor = monitors[0] if monitors and monitors[0] else "the last step"  # what chose the exported checkpoint
evaluation, held, timing = load("eval.json"), load("heldout_stats.json"), load("timing_stats.json")
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:  # no git on the machine
    commit = ""
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"

out = [f"# Genome gene caller: training and evaluation ({device})", "",
       f"- config `{config}`, commit `{commit or 'unknown'}`, torch {torch.__version__}",
       f"- fit: `{fit_cmd}`", f"- held-out genome: `{heldout}`", "", "## Training", "",
       f"- {last_step} optimiser steps in {float(fit_s):.0f} s wall (set-up and validation included), "
       f"{resolved['batch_size']} windows of {resolved['window']:,} bp per step; exported the best "
       f"checkpoint (by {monitor}), step {steps}"]
if tok_s:
    out.append(f"- tokens/s (ThroughputMonitor, sliding mean, {len(tok_s)} logged points): "
               f"median {statistics.median(tok_s):,.0f}, last {tok_s[-1]:,.0f}")
out.append(f"- peak allocated GPU memory while training: {gib(max(peak) if peak else None)}")
if val:
    out.append(f"- validation loss: first {val[0]:.4f}, best {min(val):.4f}, last {val[-1]:.4f}")
rounds = [r for r in rows if r.get("val/genes/f1") not in (None, "")]  # GeneCallValidation, when configured
if rounds:
    out.append("- genes called on the validation genome(s) by round (step: gene F1 / sensitivity / precision / "
               "coding F1): " + "; ".join(
                   f"{r['step']}: {float(r['val/genes/f1']):.3f} / {float(r['val/genes/sensitivity']):.3f} / "
                   f"{float(r['val/genes/precision']):.3f} / {float(r['val/genes/coding_f1']):.3f}" for r in rounds))
out += ["", "## Held-out genome", "",
        "| caller | ref CDS | calls | sensitivity | precision | exact start | base coding F1 |",
        "|---|---|---|---|---|---|---|"]
for name, m in evaluation.items():
    out.append(f"| {name} | {m['n_reference']} | {m['n_predicted']} | {m['sensitivity']:.4f} | "
               f"{m['precision']:.4f} | {m['exact_start']:.4f} | {m['coding_f1']:.4f} |")
if len(evaluation) == 1:
    out += ["", "(pyrodigal is not installed here; its figures for the shared genomes are in benchmarks/RESULTS.md)"]
out += ["", f"Inference: {held['bases']:,} bp in {held['seconds_total']:.1f} s, max seam gap "
        f"{held['max_seam_gap']:.3g} (window {held['window']:,}, overlap {held['overlap']:,}).", "",
        "## Whole-genome inference", "",
        f"`{timing_genome}` on {timing['device']}: {timing['bases']:,} bp, {timing['genes']:,} genes", "",
        "| stage | seconds |", "|---|---|",
        f"| model (stitched windows) | {timing['seconds_model']:.2f} |",
        f"| decoder | {timing['seconds_decode']:.2f} |",
        f"| annotate_genome (reading FASTA to writing GFF3) | {timing['seconds_total']:.2f} |",
        f"| command wall (with start-up and package load) | {float(timing_wall):.2f} |", "",
        f"- {timing['bases_per_second']:,.0f} bp/s end to end; the model alone "
        f"{timing['bases'] / max(timing['seconds_model'], 1e-9):,.0f} bp/s",
        f"- peak allocated GPU memory: {gib(timing['peak_gpu_bytes'])}; max seam gap {timing['max_seam_gap']:.3g}"]
open(summary, "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "done: $SUMMARY, package $PKG"
