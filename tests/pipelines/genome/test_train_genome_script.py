"""scripts/train_genome.sh, the script that trains, exports and evaluates the bundled gene caller,
run on a CPU with the tiny twin of its config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TINY = "pipelines/configs/tiny_genome_tagger.yaml"
LAMBDA = "genomes/phage_lambda/NC_001416.gbk.gz"


def run_script(tmp_path, shared_data, **env):
    full_env = {**os.environ, "PYTHON": sys.executable, "CONFIG": TINY, "SEQMAMBA_DATA": shared_data,
                "TIMING_GENOME": LAMBDA, "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT), **env}
    command = ["bash", "scripts/train_genome.sh", str(tmp_path / "pkg"), str(tmp_path / "out" / "summary.md")]
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=900)


BAD_DECODERS = ['{"adaptive": true, "min_score": "high"}', '{"beam_width": 4}', "{adaptive: true}"]


@pytest.mark.parametrize("decoder", BAD_DECODERS)
def test_bad_decoder_settings_stop_the_script_before_any_training(tmp_path, shared_data, decoder):
    result = run_script(tmp_path, shared_data, DECODER=decoder)
    assert result.returncode != 0
    assert "DECODER=" in result.stderr and "not a valid decoder setting" in result.stderr
    assert not (tmp_path / "work" / "run").exists() and not (tmp_path / "pkg").exists()


@pytest.mark.slow
def test_the_script_trains_exports_and_evaluates_a_package_with_the_decoder_it_was_given(tmp_path, shared_data):
    result = run_script(tmp_path, shared_data, DECODER='{"adaptive": true, "min_score": 30}')
    assert result.returncode == 0, result.stderr[-3000:]
    package = tmp_path / "pkg"
    assert json.loads((package / "config.json").read_text())["decoder"] == {"adaptive": True, "min_score": 30}
    metrics = json.loads((package / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"sensitivity", "precision", "exact_start", "coding_f1", "n_reference"}
    assert "held out" in metrics["test_genome"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Held-out genome" in summary and "## Whole-genome inference" in summary
    assert "genes called on the validation genome(s) by round" in summary  # the config's GeneCallValidation
    assert "exported the best checkpoint (by val/loss)" in summary  # the tiny config's ModelCheckpoint monitor
    assert (tmp_path / "out" / "genome_heldout.gff3").read_text().startswith("##gff-version 3")
