from __future__ import annotations

import json

import pytest

from mtop_edge.data import read_dataset, read_examples
from mtop_edge.errors import DataError

from .conftest import DATA

GOOD = {"utterance": "set an alarm for 7am", "logical_form": "[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]"}
TSV_ROW = "\t".join(
    [
        "1",
        "IN:CREATE_ALARM",
        "13:20:SL:DATE_TIME",
        GOOD["utterance"],
        "alarm",
        "en_XX",
        GOOD["logical_form"],
        "{}",
    ]
)


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_official_tsv_sample():
    dataset = read_dataset(DATA / "eval_sample.tsv")
    assert dataset.format == "tsv"
    assert dataset.rows == 40 and not dataset.errors
    assert all(e.utterance and e.tree.label.startswith("IN:") for e in dataset.examples)


def test_format_is_told_by_content_not_name(tmp_path):
    assert read_dataset(write(tmp_path, "rows.jsonl", TSV_ROW.encode())).format == "tsv"
    assert read_dataset(write(tmp_path, "rows.tsv", json.dumps(GOOD).encode())).format == "jsonl"


@pytest.mark.parametrize("row", [json.dumps(GOOD), TSV_ROW])
def test_bom_crlf_and_missing_final_newline(tmp_path, row):
    data = b"\xef\xbb\xbf" + (row + "\r\n\r\n" + row).encode()
    dataset = read_dataset(write(tmp_path, "rows", data))
    assert dataset.rows == 2 and not dataset.errors
    assert dataset.examples[1].line == 3
    assert dataset.examples[0].utterance == "set an alarm for 7am"


BAD_JSONL = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"utterance": "x"}', "missing key 'logical_form'"),
    ('{"utterance": 3, "logical_form": "[IN:A ]"}', "'utterance' must be a string"),
    ('{"utterance": "  ", "logical_form": "[IN:A ]"}', "empty utterance"),
    ('{"utterance": "x", "logical_form": "[IN:A [SL:B ] ]"}', "bad logical form at character 12: empty slot"),
]


@pytest.mark.parametrize(("row", "message"), BAD_JSONL)
def test_malformed_jsonl_rows_are_skipped_counted_and_located(tmp_path, row, message):
    path = write(tmp_path, "rows.jsonl", (json.dumps(GOOD) + "\n" + row + "\n").encode())
    dataset = read_dataset(path)
    assert len(dataset.examples) == 1
    [error] = dataset.errors
    assert error.line == 2 and error.path == str(path)
    assert message in str(error)
    assert str(error).startswith(f"{path}:2: ")
    with pytest.raises(DataError, match=f":2: .*{message[:12]}"):
        read_dataset(path, strict=True)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1\tIN:A\tx", "expected 8 tab-separated columns, found 3"),
        (TSV_ROW.replace("IN:CREATE_ALARM\t", "IN:GET_ALARM\t", 1), "intent column says IN:GET_ALARM"),
        (TSV_ROW.replace("[SL:DATE_TIME for 7am ]", "[SL:DATE_TIME for 7am"), "bad logical form"),
    ],
)
def test_malformed_tsv_rows(tmp_path, row, message):
    dataset = read_dataset(write(tmp_path, "rows.txt", (TSV_ROW + "\n" + row).encode()))
    assert len(dataset.examples) == 1
    assert message in dataset.errors[0].reason


def test_invalid_utf8_row_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "rows.jsonl", json.dumps(GOOD).encode() + b"\n" + b'{"utterance": "\xff"}\n')
    dataset = read_dataset(path)
    assert dataset.errors[0].line == 2 and "invalid UTF-8" in str(dataset.errors[0])
    # even as the very first row, before the format is known
    dataset = read_dataset(write(tmp_path, "first.jsonl", b"\xff\xfe\n" + json.dumps(GOOD).encode()))
    assert dataset.format == "jsonl" and dataset.errors[0].line == 1 and len(dataset.examples) == 1


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_dataset(tmp_path)
    # a row of neither format is one malformed row, as the first row and later alike (no longer a whole-file abort)
    plain = read_dataset(write(tmp_path, "plain.txt", b"\nhello world\n"))
    assert plain.rows == 1 and plain.format == "empty" and "plain.txt:2: neither a JSON line" in str(plain.errors[0])
    with pytest.raises(DataError, match=r"plain.txt:2: neither a JSON line"):
        read_dataset(tmp_path / "plain.txt", strict=True)
    empty = read_dataset(write(tmp_path, "empty.jsonl", b"\n\n"))
    assert empty.rows == 0 and empty.format == "empty"
    with pytest.raises(DataError, match="no usable rows"):
        read_examples(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match=r"no usable rows \(1 malformed"):
        read_examples(write(tmp_path, "bad.jsonl", b"{}"))
