"""Scoring: the file outputs equal the in-memory model, an interrupted run resumes to the same
bytes, nothing half-written looks complete, ids are escaped, bad records are skipped or fail
clearly; an exported package scores without its run folder; bundled models are found."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines import score_cmd, scoring
from pipelines.app_cmd import APP_FILE, streamlit_command
from pipelines.cli import main as seqmamba
from pipelines.data.errors import InputError
from pipelines.data.fasta import SequenceRecord, read_sequences
from pipelines.data.timeseries import read_series_csv
from pipelines.models import list_models, resolve_model
from seqmodels.classifier import MambaClassifier
from seqmodels.forecaster import MambaForecaster
from seqmodels.package import load_package, save_package
from seqmodels.tagger import MambaTagger

REPO = Path(__file__).resolve().parents[2]
SAMPLE_FA = REPO / "data" / "samples" / "gue_prom_core_notata_test200.fa"
SAMPLE_CSV = REPO / "data" / "samples" / "exchange_rate_last1000.csv"


@pytest.fixture(scope="module")
def classifier_pkg(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaClassifier(n_classes=2, class_names=("negative", "positive"), d_model=16, n_layer=1, d_state=4)
    with torch.no_grad():  # random, not-too-small logits so the comparisons can fail
        model.head.weight.mul_(20)
    return save_package(model, tmp_path_factory.mktemp("pkg") / "clf")


def _records(n: int, seed: int, lengths=(5, 90)) -> list[SequenceRecord]:
    rng = np.random.default_rng(seed)
    return [SequenceRecord(f"s{i}", "".join(rng.choice(list("ACGT"), int(rng.integers(*lengths))))) for i in range(n)]


def _write_fasta(path: Path, records) -> Path:
    path.write_text("".join(f">{r.id}\n{r.seq}\n" for r in records))
    return path


def test_score_records_equals_the_model_on_each_record_alone(classifier_pkg):
    model, config, _ = load_package(classifier_pkg)
    records = _records(40, 1)
    rows = [row for _, batch in scoring.score_records(model, config, records, batch_size=7, max_tokens=300)
            for row in batch]
    assert [r["id"] for r in rows] == [r.id for r in records]  # input order kept despite length sorting
    for rec, row in zip(records, rows):
        tokens = torch.as_tensor(["ACGT".index(c) + 2 for c in rec.seq])[None]  # no padding at all
        with torch.no_grad():
            p = model(tokens, torch.tensor([len(rec.seq)])).double().softmax(-1)[0]
        assert row["length"] == len(rec.seq)
        assert row["p_negative"] == pytest.approx(p[0].item(), abs=1e-5)
        assert row["p_positive"] == pytest.approx(p[1].item(), abs=1e-5)
        assert row["predicted"] == ("positive" if p[1] > p[0] else "negative")
    assert len({round(r["p_positive"], 3) for r in rows}) > 5  # the model is not constant


def test_score_records_skips_or_fails_on_a_bad_record(classifier_pkg):
    model, config, _ = load_package(classifier_pkg)
    records = [SequenceRecord("a", "ACGT"), SequenceRecord("prot", "MKLVPQEEFF"), SequenceRecord("b", "GGCA")]
    skipped = []
    out = list(scoring.score_records(model, config, records, on_error="skip", skipped=skipped))
    assert [r["id"] for _, rows in out for r in rows] == ["a", "b"] and out[-1][0] == 3
    assert skipped[0].id == "prot" and "protein" in skipped[0].reason
    with pytest.raises(InputError, match="'prot'.*protein"):
        list(scoring.score_records(model, config, records))


def test_forecast_series_matches_the_model_in_data_units(tmp_path):
    torch.manual_seed(1)
    model = MambaForecaster(input_len=24, horizon=6, d_model=16, n_layer=1, d_state=4)
    frame = read_series_csv(SAMPLE_CSV)[["0", "1"]]
    mean, scale = frame.iloc[:500].mean().to_numpy(), frame.iloc[:500].std(ddof=0).to_numpy()
    pkg = save_package(model, tmp_path / "fc", extra_config={
        "preprocessing": {"channels": ["0", "1"], "scaler_mean": mean.tolist(), "scaler_scale": scale.tolist()}})
    model, config, _ = load_package(pkg)
    out = scoring.forecast_series(model, config, frame, horizon=4)
    assert list(out.columns) == ["series", "step", "point", "q0.1", "q0.5", "q0.9"] and len(out) == 8
    x = torch.as_tensor((frame.iloc[-24:].to_numpy() - mean) / scale, dtype=torch.float64)[None]
    with torch.no_grad():
        ref = model.double()(x)
    point = ref.point[0, :4].numpy() * scale + mean  # (4, 2)
    np.testing.assert_allclose(out["point"].to_numpy(), point.T.reshape(-1), rtol=1e-4)
    q = out[["q0.1", "q0.5", "q0.9"]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()  # monotone quantiles survive the inverse scaling
    with pytest.raises(InputError, match="horizon must be between 1 and"):
        scoring.forecast_series(model, config, frame, horizon=7)
    with pytest.raises(InputError, match="model reads the last 24"):
        scoring.forecast_series(model, config, frame.iloc[:10])


def test_tagger_windows_cover_every_base(monkeypatch):
    torch.manual_seed(2)
    model = MambaTagger(n_tracks=2, n_classes=4, track_names=("fwd", "rev"), d_model=8, n_layer=1, d_state=4).eval()
    config = {"task": "tagging", "track_names": ["fwd", "rev"], "class_names": ["nc", "c1", "c2", "c3"]}
    seq = "".join(np.random.default_rng(3).choice(list("ACGT"), 250))
    (_, rows, full), = scoring.tag_records(model, config, [SequenceRecord("x", seq)])
    monkeypatch.setattr(scoring, "TAGGER_WINDOW", 100)
    monkeypatch.setattr(scoring, "TAGGER_CONTEXT", 20)
    (_, _, windowed), = scoring.tag_records(model, config, [SequenceRecord("x", seq)])
    assert len(full) == len(windowed) == 250 and list(windowed["position"]) == list(range(250))
    cols = [f"p_{t}_{c}" for t in ("fwd", "rev") for c in ("nc", "c1", "c2", "c3")]
    assert np.allclose(full[cols].to_numpy().reshape(250, 2, 4).sum(-1), 1.0, atol=1e-5)
    # A causal (unidirectional) model with 20 bases of left context: centres differ only by what
    # lies further back than the context, which a 1-layer Mamba has mostly forgotten.
    assert np.abs(full[cols].to_numpy() - windowed[cols].to_numpy()).max() < 0.05
    assert 0.0 <= rows[0]["frac_fwd"] <= 1.0


def test_escape_formulas_in_csv_ids():
    frame = pd.DataFrame({"id": ["=1+1", "+x", "-y", "@z", "ok", "a=b"], "p": [-1.0, 0, 0, 0, 0, 0]})
    out = score_cmd.escape_formulas(frame)
    assert list(out["id"]) == ["'=1+1", "'+x", "'-y", "'@z", "ok", "a=b"]
    assert list(out["p"]) == [-1.0, 0, 0, 0, 0, 0]  # numbers are left alone


def _score(pkg, fasta, out, *extra) -> int:
    return seqmamba(["score", str(pkg), str(fasta), "-o", str(out), "--no-progress", "--chunk-size", "16", *extra])


def test_score_file_equals_in_memory_and_parquet_equals_csv(classifier_pkg, tmp_path):
    records = _records(50, 4)
    records[3] = SequenceRecord("=HYPERLINK(1)", records[3].seq)
    fasta = _write_fasta(tmp_path / "in.fa", records)
    assert _score(classifier_pkg, fasta, tmp_path / "out.csv") == 0
    assert _score(classifier_pkg, fasta, tmp_path / "out.parquet") == 0
    model, config, _ = load_package(classifier_pkg)
    expected = pd.DataFrame([r for _, rows in scoring.score_records(model, config, read_sequences(fasta))
                             for r in rows])
    got_pq = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(got_pq, expected, check_exact=False, atol=1e-6)
    got_csv = pd.read_csv(tmp_path / "out.csv")
    assert got_csv["id"][3] == "'=HYPERLINK(1)"
    np.testing.assert_allclose(got_csv["p_positive"], expected["p_positive"], atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no staging or temporary files left behind


def test_interrupted_score_resumes_to_the_same_file(classifier_pkg, tmp_path, monkeypatch):
    fasta = _write_fasta(tmp_path / "in.fa", _records(60, 5))
    assert _score(classifier_pkg, fasta, tmp_path / "whole.csv") == 0

    real_add, calls = score_cmd.Staging.add, []

    def add_then_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while scoring the third chunk
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(score_cmd.Staging, "add", add_then_die)
    out = tmp_path / "resumed.csv"
    with pytest.raises(KeyboardInterrupt):
        _score(classifier_pkg, fasta, out)
    assert not out.exists()  # nothing that looks complete
    state = json.loads((tmp_path / ".resumed.csv.partial" / "state.json").read_text())
    assert state["records_done"] == 32 and len(state["parts"]) == 2
    monkeypatch.setattr(score_cmd.Staging, "add", real_add)
    scored = []
    real_score = scoring.score_records
    monkeypatch.setattr(scoring, "score_records", lambda m, c, recs, **kw: (scored.extend(recs),
                                                                           real_score(m, c, recs, **kw))[1])
    assert _score(classifier_pkg, fasta, out) == 0
    assert len(scored) == 28  # only the records after the last complete chunk
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_skip_mode_writes_a_side_file_and_fail_mode_exits_2(classifier_pkg, tmp_path, capsys):
    fasta = tmp_path / "mixed.fa"
    fasta.write_text(">a\nACGTACGT\n>prot\nMKLVPQEEFFWW\n>b\nGGGCCCAT\n")
    assert _score(classifier_pkg, fasta, tmp_path / "o.csv") == 2
    err = capsys.readouterr().err
    assert "prot" in err and "protein" in err and "Traceback" not in err and not (tmp_path / "o.csv").exists()
    assert _score(classifier_pkg, fasta, tmp_path / "o.csv", "--on-error", "skip") == 0
    assert list(pd.read_csv(tmp_path / "o.csv")["id"]) == ["a", "b"]
    side = pd.read_csv(tmp_path / "o.csv.skipped.tsv", sep="\t")
    assert list(side["id"]) == ["prot"] and "1 skipped" in capsys.readouterr().err


def test_score_csv_forecast_writes_future_dates(tmp_path):
    model = MambaForecaster(input_len=24, horizon=5, d_model=8, n_layer=1, d_state=4)
    pkg = save_package(model, tmp_path / "fc")
    assert seqmamba(["score", str(pkg), str(SAMPLE_CSV), "-o", str(tmp_path / "f.csv"), "--horizon", "3"]) == 0
    out = pd.read_csv(tmp_path / "f.csv", parse_dates=["ds"])
    assert len(out) == 8 * 3 and list(out.columns[:3]) == ["series", "step", "ds"]
    assert (out["ds"] > pd.Timestamp("2010-10-10")).all()


def test_exported_package_scores_without_its_run_folder(tmp_path, monkeypatch):
    import shutil

    from pipelines.export import export, network_from_checkpoint
    from pipelines.lightning_cli import run

    monkeypatch.setattr(sys, "argv", ["seqmamba"])
    root = tmp_path / "run"
    common = ["--config", str(REPO / "pipelines/configs/tiny_classifier.yaml"), "--trainer.default_root_dir",
              str(root), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for key in ("train", "val", "test"):
        common += [f"--data.init_args.{key}", str(SAMPLE_FA)]
    assert run("fit", [*common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                       "--trainer.limit_val_batches", "1"]) == 0
    assert run("test", [*common, "--ckpt_path", "best", "--trainer.limit_test_batches", "1"]) == 0
    ckpt = torch.load(next((root / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    network = network_from_checkpoint(ckpt)
    pkg = export(root, tmp_path / "pkg")
    metrics = json.loads((pkg / "metrics.json").read_text())
    assert metrics["seed"] == 1 and set(metrics["test"]) >= {"mcc", "acc"} and "seqmamba fit" in metrics["fit_command"]
    config = json.loads((pkg / "config.json").read_text())
    assert config["class_names"] == ["negative", "positive"]
    assert config["training_data"]["datamodule"].endswith("DNAClassificationDataModule")
    shutil.rmtree(root)
    assert seqmamba(["score", str(pkg), str(SAMPLE_FA), "-o", str(tmp_path / "s.csv"), "--no-progress"]) == 0
    scored = pd.read_csv(tmp_path / "s.csv").head(20)
    records = list(read_sequences(SAMPLE_FA))[:20]
    tokens = torch.as_tensor([["ACGT".index(c) + 2 for c in r.seq] for r in records])  # all 70 bp
    with torch.no_grad():
        p = network(tokens, torch.full((20,), 70)).double().softmax(-1)
    np.testing.assert_allclose(scored["p_positive"], p[:, 1].numpy(), atol=1e-5)


def test_bundled_models_listing_and_resolution(classifier_pkg, tmp_path, monkeypatch, capsys):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for name in ("b_model", "a_model"):
        (shelf / name).mkdir()
        for f in ("config.json", "model.safetensors", "metrics.json"):
            (shelf / name / f).write_bytes((classifier_pkg / f).read_bytes())
    (shelf / ".staging.tmp").mkdir()  # an interrupted save is not a model
    (shelf / ".staging.tmp" / "config.json").write_text("{}")
    monkeypatch.setenv("SEQMAMBA_MODELS", str(shelf))
    assert [name for name, _ in list_models()] == ["a_model", "b_model"]
    assert resolve_model("a_model") == shelf / "a_model"
    assert resolve_model(str(classifier_pkg)) == classifier_pkg
    with pytest.raises(ValueError, match="a_model, b_model"):
        resolve_model("nope")
    assert seqmamba(["models"]) == 0
    out = capsys.readouterr().out
    assert "a_model" in out and "classification" in out and "negative,positive" in out
    assert seqmamba(["score", "nope", str(SAMPLE_FA), "-o", str(tmp_path / "x.csv")]) == 2


def test_app_command_runs_streamlit_on_the_app_file_by_path():
    cmd = streamlit_command(8765, "127.0.0.1", ["--server.maxUploadSize", "50"])
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4] == str(APP_FILE)
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--server.headless"] == "true" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "8765" and flags["--browser.gatherUsageStats"] == "false"
    # pipelines never imports the app: a fresh interpreter importing every command module stays app-free.
    code = ("import sys, pipelines.app_cmd, pipelines.score_cmd, pipelines.models, pipelines.scoring; "
            "sys.exit(any(m == 'app' or m.startswith('app.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --- gene calling: `seqmamba score GENE_CALLER genome.fa -o genes.gff3` ------------------------------------

LAMBDA_FA = REPO / "data" / "samples" / "phage_lambda_NC_001416.fa"


@pytest.fixture(scope="module")
def gene_caller_pkg(tmp_path_factory):
    """A tiny random gene caller (2 strand tracks x 4 classes) whose head is scaled up, so its
    per-base probabilities spread over [0, 1] instead of sitting near 1/4."""
    torch.manual_seed(2)
    model = MambaTagger(n_tracks=2, n_classes=4, d_model=8, n_layer=1, d_state=4, bidirectional=True,
                        rc_equivariant=True, track_names=("forward", "reverse"),
                        class_names=("noncoding", "codon1", "codon2", "codon3"))
    with torch.no_grad():
        model.head.weight.mul_(10.0)
    return save_package(model, tmp_path_factory.mktemp("pkg") / "genes")


def test_score_with_a_gene_caller_writes_what_annotate_genome_writes(gene_caller_pkg, tmp_path, capsys):
    from Bio.Seq import Seq

    from pipelines.genome.decoder import codon_tables
    from pipelines.genome.gff3 import read_gff3
    from pipelines.genome.predict import annotate_genome

    out, track = tmp_path / "calls" / "genes.gff3", tmp_path / "coding.bedgraph"
    assert seqmamba(["score", str(gene_caller_pkg), str(LAMBDA_FA), "-o", str(out), "--bedgraph", str(track),
                     "--min-len", "120", "--no-progress"]) == 0
    assert "on 1 sequences (48,502 bp)" in capsys.readouterr().err
    # The same bytes as the genome pipeline with the same settings: score only routes to it.
    model, _, _ = load_package(gene_caller_pkg)
    annotate_genome(model, LAMBDA_FA, tmp_path / "direct.gff3", tmp_path / "direct.bedgraph", min_len=120,
                    progress=False)
    assert out.read_bytes() == (tmp_path / "direct.gff3").read_bytes()
    assert track.read_bytes() == (tmp_path / "direct.bedgraph").read_bytes()
    # Valid GFF3 that the part-1 reader parses; every call an ORF of the standard code, 120 bp or more.
    calls, lengths = read_gff3(out)
    assert lengths == {"NC_001416.1": 48_502}
    text = next(read_sequences(LAMBDA_FA)).seq.upper()
    is_start, is_stop = codon_tables(11)
    ids = lambda codon: 16 * "ACGT".index(codon[0]) + 4 * "ACGT".index(codon[1]) + "ACGT".index(codon[2])
    for c in calls:
        (start, end, strand), = c.parts
        gene = text[start:end] if strand == 1 else str(Seq(text[start:end]).reverse_complement())
        assert len(gene) % 3 == 0 and (len(gene) >= 120 or c.partial5 or c.partial3)
        assert c.partial5 or is_start[ids(gene[:3])], f"{c.id} does not begin with a start codon"
        assert c.partial3 or is_stop[ids(gene[-3:])], f"{c.id} does not end with a stop codon"
    # The probability track: one bedGraph track per strand, each covering every base, values in [0, 1].
    lines = track.read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("track ")]
    assert len(headers) == 2
    for a, b in zip(headers, [*headers[1:], len(lines)]):
        rows = pd.DataFrame([line.split("\t") for line in lines[a + 1 : b]]).astype({1: int, 2: int, 3: float})
        assert set(rows[0]) == {"NC_001416.1"} and rows[1].iloc[0] == 0 and rows[2].iloc[-1] == 48_502
        assert (rows[1].iloc[1:].to_numpy() == rows[2].iloc[:-1].to_numpy()).all()  # contiguous
        assert rows[3].between(0, 1).all() and rows[3].nunique() > 10
    assert not list((tmp_path / "calls").glob(".*"))  # written through temporary files renamed into place


def test_a_gene_caller_package_carries_its_decoder_settings(gene_caller_pkg, tmp_path, capsys):
    # config.json's "decoder" (chosen for that model) is what score decodes with; bad settings are
    # refused before the model runs, naming the package's config.json.
    import json
    import shutil

    from pipelines.genome.gff3 import read_gff3

    strict = tmp_path / "strict"
    shutil.copytree(gene_caller_pkg, strict)
    config = json.loads((strict / "config.json").read_text())
    (strict / "config.json").write_text(json.dumps({**config, "decoder": {"min_score": 1e9}}))
    out = tmp_path / "none.gff3"
    assert seqmamba(["score", str(strict), str(LAMBDA_FA), "-o", str(out), "--no-progress"]) == 0
    assert read_gff3(out)[0] == []  # no ORF scores above 1e9
    (strict / "config.json").write_text(json.dumps({**config, "decoder": {"min_length": 30, "beam": 3}}))
    assert seqmamba(["score", str(strict), str(LAMBDA_FA), "-o", str(tmp_path / "bad.gff3")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "'beam'" in err and "'min_length'" in err
    assert not (tmp_path / "bad.gff3").exists()


def test_score_gff3_refuses_what_is_not_a_gene_caller_or_a_genome(classifier_pkg, gene_caller_pkg, tmp_path,
                                                                  capsys):
    out = tmp_path / "genes.gff3"
    assert seqmamba(["score", str(classifier_pkg), str(LAMBDA_FA), "-o", str(out)]) == 2
    assert "GFF3 output needs a gene caller" in capsys.readouterr().err and not out.exists()
    assert seqmamba(["score", str(gene_caller_pkg), str(LAMBDA_FA), "-o", str(out), "--genetic-code", "99"]) == 2
    assert "not an NCBI genetic code" in capsys.readouterr().err and not out.exists()
    protein = tmp_path / "protein.fa"
    protein.write_text(">p1\nMKVLLAEEFFPQWRRSTLLKPEEFF\n")
    assert seqmamba(["score", str(gene_caller_pkg), str(protein), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "protein.fa" in err and "'p1'" in err and "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # gene-calling options without a GFF3 output
        seqmamba(["score", str(gene_caller_pkg), str(LAMBDA_FA), "-o", str(tmp_path / "t.csv"), "--bedgraph",
                  str(tmp_path / "c.bedgraph")])
    assert exit_info.value.code == 2


def test_outputs_are_as_readable_as_any_new_file(tmp_path):
    """Files written through a temporary file get 0666 less the umask, not mkstemp's 0600."""
    import os
    import stat

    from pipelines.atomic import write_json_atomic

    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
