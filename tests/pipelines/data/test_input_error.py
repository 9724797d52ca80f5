import pickle

import pytest

from pipelines.data.errors import InputError


def test_message_names_file_record_line_and_column():
    err = InputError("empty sequence", file="train.fa", record="'seq7' (#7)", line=13, column="sequence")
    assert str(err) == "train.fa, record 'seq7' (#7), line 13, column 'sequence': empty sequence"
    assert (err.file, err.record, err.line, err.column, err.reason) == ("train.fa", "'seq7' (#7)", 13, "sequence",
                                                                        "empty sequence")


def test_without_location_the_message_is_the_reason():
    assert str(InputError("bad split")) == "bad split"


def test_is_a_value_error_and_survives_pickling():
    # DataLoader workers send exceptions to the main process by pickling them.
    err = pickle.loads(pickle.dumps(InputError("duplicate record id 'a'", file="x.fa", record="'a' (#2)", line=3)))
    assert isinstance(err, ValueError)
    assert str(err) == "x.fa, record 'a' (#2), line 3: duplicate record id 'a'"
    with pytest.raises(ValueError, match="duplicate"):
        raise err
