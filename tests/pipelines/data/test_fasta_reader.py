"""Reading FASTA/FASTQ/tables: formats, compression by content, labels, streaming, and one clear
message for every kind of bad file."""

import bz2
import gzip
import io
import logging

import numpy as np
import pytest

from pipelines.data.errors import InputError
from pipelines.data.fasta import SequenceRecord, read_sequences

RECORDS = [SequenceRecord("s1", "ACGTACGTTT", "positive"), SequenceRecord("s2", "acgtnNRY", "negative"),
           SequenceRecord("s3", "GATTACA" * 30, "positive")]


def fasta(records, width=60) -> bytes:
    out = []
    for r in records:
        out.append(f">{r.id} some description label={r.label}" if r.label else f">{r.id}")
        out += [r.seq[i:i + width] for i in range(0, len(r.seq), width)]
    return ("\n".join(out) + "\n").encode()


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_fasta_round_trip_with_labels_from_the_header(tmp_path):
    path = write(tmp_path, "x.fa", fasta(RECORDS))
    assert list(read_sequences(path)) == RECORDS


def test_gzip_is_detected_from_content_not_name(tmp_path):
    # A gzip file called .fa and a plain file called .gz both read correctly.
    zipped = write(tmp_path, "looks_plain.fa", gzip.compress(fasta(RECORDS)))
    plain = write(tmp_path, "looks_zipped.fa.gz", fasta(RECORDS))
    assert list(read_sequences(zipped)) == RECORDS == list(read_sequences(plain))


def test_bytes_and_uploaded_streams_are_read_with_the_given_name():
    data = gzip.compress(fasta(RECORDS))
    assert list(read_sequences(data)) == RECORDS
    assert list(read_sequences(io.BytesIO(data), name="upload.fa.gz")) == RECORDS
    with pytest.raises(InputError, match=r"^upload\.fa, record .a. \(#1\), line 1: empty sequence"):
        list(read_sequences(io.BytesIO(b">a\n\n"), name="upload.fa"))


def test_windows_line_endings_and_multi_line_sequences(tmp_path):
    path = write(tmp_path, "crlf.fa", fasta(RECORDS, width=7).replace(b"\n", b"\r\n"))
    assert list(read_sequences(path)) == RECORDS


def test_fastq(tmp_path):
    data = b"@r1 label=a\nACGT\n+\nIIII\n@r2 label=b\nNNa\n+r2 label=b\n@@#\n"
    records = list(read_sequences(write(tmp_path, "reads.fq", data)))
    assert records == [SequenceRecord("r1", "ACGT", "a"), SequenceRecord("r2", "NNa", "b")]


@pytest.mark.parametrize("sep", [",", "\t"])
def test_id_sequence_label_tables(tmp_path, sep):
    rows = [sep.join(["id", "sequence", "label"])] + [sep.join([r.id, r.seq, r.label]) for r in RECORDS]
    path = write(tmp_path, "table.txt", ("\n".join(rows) + "\n").encode())
    assert list(read_sequences(path)) == RECORDS


def test_table_without_ids_gets_row_names(tmp_path):
    path = write(tmp_path, "t.csv", b"sequence,class\nACGT,1\nGGCC,0\n")
    assert list(read_sequences(path)) == [SequenceRecord("row1", "ACGT", "1"), SequenceRecord("row2", "GGCC", "0")]


def test_per_class_folder_labels_records_by_file_name(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    write(folder, "positive.fa.gz", gzip.compress(b">p1\nACGT\n>p2\nAAAA\n"))
    write(folder, "negative.fasta", b">n1\nCCCC\n")
    write(folder, "README.txt", b"not a class")
    records = list(read_sequences(folder))
    assert {(r.id, r.label) for r in records} == {("p1", "positive"), ("p2", "positive"), ("n1", "negative")}
    # The same layout as an explicit mapping.
    mapping = {"pos": folder / "positive.fa.gz", "neg": folder / "negative.fasta"}
    assert {r.label for r in read_sequences(mapping)} == {"pos", "neg"}


def test_classes_are_checked_and_unlabelled_records_refused(tmp_path):
    path = write(tmp_path, "x.fa", fasta(RECORDS))
    assert len(list(read_sequences(path, classes=["negative", "positive"]))) == 3
    with pytest.raises(InputError, match=r"record 's2' \(#2\), line 3: label 'negative' is not one of the model's "
                                         r"classes \(positive, promoter\)"):
        list(read_sequences(path, classes=["positive", "promoter"]))
    bare = write(tmp_path, "bare.fa", b">a\nACGT\n")
    with pytest.raises(InputError, match="no label"):
        list(read_sequences(bare, classes=["positive"]))


def test_rna_and_ambiguity_codes_are_logged_once_per_file(tmp_path, caplog):
    path = write(tmp_path, "rna.fa", b">a\nACGUU\n>b\nACGRY\n>c\nACGU\n")
    with caplog.at_level(logging.WARNING, logger="pipelines.data.fasta"):
        assert len(list(read_sequences(path))) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("3 U bases (RNA) read as T" in m for m in messages)
    assert any("2 IUPAC ambiguity codes read as N (in 1 records)" in m for m in messages)


BAD_FILES = {
    "empty": (b"", r"empty\.bin: file is empty"),
    "blank lines only": (b"\n \n\n", r"file is empty"),
    "a CSV": (b"date,open,close\n2020-01-01,1,2\n", r"not FASTA/FASTQ.*no 'sequence' column \(columns: date, open"),
    "plain text": (b"hello there\n", r"line 1: not a FASTA or FASTQ file: the first line 'hello there'"),
    "binary": (b"\x00\x01\x02\x03ACGT", r"binary file"),
    "a PNG": (b"\x89PNG\r\n\x1a\n\x00\x00", r"this is a PNG image"),
    "not UTF-8": (b">a\nAC\xff\xfeGT\n", r"not a UTF-8 text file \(byte 0xff\)"),
    "bzip2": (bz2.compress(b">a\nACGT\n"), r"bzip2-compressed files are not supported"),
    "protein": (b">sp|P69905|HBA_HUMAN\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n",
                r"record 'sp\|P69905\|HBA_HUMAN' \(#1\), line 1: looks like protein, not DNA: \d+% of its letters"),
    "duplicate ids": (b">a\nACGT\n>b\nAC\n>a x\nGG\n", r"record 'a' \(#3\), line 5: duplicate record id 'a'"),
    "empty sequence": (b">a\nACGT\n>b\n>c\nAC\n", r"record 'b' \(#2\), line 3: empty sequence"),
    "empty header": (b">\nACGT\n", r"record #1, line 1: record has an empty header"),
    "alignment gaps": (b">a\nAC--GT\n", r"alignment gaps"),
    "digits": (b">a\nACGT 12\n", r"contains '1' at position 5"),
    "malformed FASTQ": (b"@r1\nACGT\n+\nII\n", r"malformed FASTQ record: Lengths of sequence and quality"),
    "truncated gzip": (gzip.compress(b"".join(b">r%d\nACGT\n" % i for i in range(2000)))[:-40],
                       r"corrupt or truncated gzip"),
    "table row with missing fields": (b"id,sequence,label\na,ACGT,x\nb,ACGT\n",
                                      r"line 3: has 2 fields, the header has 3"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_bad_file_has_its_own_message(tmp_path, case):
    data, message = BAD_FILES[case]
    path = write(tmp_path, "empty.bin" if case == "empty" else "input.fa", data)
    with pytest.raises(InputError, match=message):
        list(read_sequences(path))


def test_missing_file_and_folder_without_sequences(tmp_path):
    with pytest.raises(InputError, match="nope.fa: file not found"):
        list(read_sequences(tmp_path / "nope.fa"))
    with pytest.raises(InputError, match="folder holds no sequence files"):
        list(read_sequences(tmp_path))


def test_gzip_bomb_is_stopped_at_the_decompressed_size_cap():
    bomb = gzip.compress(b">a\n" + b"A" * 20_000_000)  # ~20 kB that expands to 20 MB
    assert len(bomb) < 100_000
    with pytest.raises(InputError, match="decompresses to more than 1,000,000 bytes"):
        list(read_sequences(bomb, name="bomb.fa.gz", max_bytes=1_000_000))


def test_record_length_cap_stops_a_huge_record_before_it_is_assembled():
    data = b">small\nACGT\n>huge\n" + b"ACGTACGTAC\n" * 2_000_000  # 20 Mb in one record
    records = read_sequences(data, name="big.fa", max_length=100_000)
    assert next(records).id == "small"
    with pytest.raises(InputError, match=r"big\.fa, record 'huge', line 3: sequence is longer than the limit of "
                                         r"100,000 bases"):
        next(records)


class CountingStream(io.RawIOBase):
    """An endless FASTA stream that counts how many bytes were pulled from it."""

    def __init__(self):
        self.served = 0
        self._chunk = b"".join(b">r%07d\n%s\n" % (i, b"ACGT" * 25) for i in range(1000))
        self._index = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:] or b"".join(
            b">x%09d\n%s\n" % (self._index * 1000 + i, b"ACGT" * 25) for i in range(1000))
        self._index += 1
        self.served += n
        return n


def test_reading_streams_instead_of_loading_the_file():
    stream = io.BufferedReader(CountingStream())
    records = read_sequences(stream, name="endless.fa")
    first = [next(records) for _ in range(10)]
    assert [r.id for r in first][:2] == ["r0000000", "r0000001"]
    assert stream.raw.served < 4 << 20  # a few MB of read-ahead, not the (endless) file


def test_bundled_samples_read_cleanly():
    from pipelines.data.paths import SAMPLES

    lengths = {p.name: {len(r.seq) for r in read_sequences(p)} for p in SAMPLES.glob("*.fa*")}
    assert lengths["gue_prom_core_notata_test200.fa"] == {70}
    assert lengths["gue_tf_0_test200.fa.gz"] == {101}
    assert lengths["human_enhancers_cohn_test100.fa.gz"] == {500}
    assert lengths["phage_lambda_NC_001416.fa"] == {48502}
    labels = [r.label for r in read_sequences(SAMPLES / "gue_tf_0_test200.fa.gz")]
    assert labels.count("positive") == labels.count("negative") == 100
    assert np.all([r.id.startswith("test_") for r in read_sequences(SAMPLES / "gue_prom_core_notata_test200.fa")])
