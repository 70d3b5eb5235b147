import json
import math

import pytest

from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import Plan
from lmzoo.errors import InvalidTableError
from lmzoo.tables import ImportanceTable, LatencyTable

A = Candidate(0, 1, 3, 1, False, (1,))
B = Candidate(1, 2, 3, 1, True, (2,))
AB = Candidate(0, 2, 5, 1, False, (1, 2))
DROP = Candidate(1, 2, 0, 1, False, ())


def test_save_load_round_trip_with_typed_keys(tmp_path):
    lat = LatencyTable(
        {A: 0.25, B: 0.125, AB: 0.3, DROP: 0.0},
        fixed_ms=1.5,
        spec_fingerprint="abc123",
        metadata={"backend": "torch", "batch": 1, "threads": 2},
    )
    imp = ImportanceTable({A: 1.0, B: 0.99, AB: 0.97, DROP: 0.9}, spec_fingerprint="abc123")
    lat.save(tmp_path / "lat.json")
    imp.save(tmp_path / "sub" / "imp.json")
    assert LatencyTable.load(tmp_path / "lat.json") == lat
    assert ImportanceTable.load(tmp_path / "sub" / "imp.json") == imp
    data = json.loads((tmp_path / "lat.json").read_text())
    assert data["entries"][0] == {"candidate": A.to_dict(), "ms": 0.25}  # keys are data, not strings
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves nothing behind


def test_predict_sums_blocks_and_fixed_cost():
    lat = LatencyTable({A: 0.25, B: 0.125, AB: 0.3}, fixed_ms=1.0)
    assert lat.predict(Plan([A, B])) == 1.375
    assert lat.chain_ms(Plan([AB])) == 0.3
    with pytest.raises(InvalidTableError, match=r"no entry for block \(1, 2\] kernel 0"):
        lat.predict(Plan([A, DROP]))


@pytest.mark.parametrize(
    "entries, message",
    [
        ({A: math.nan}, r"must be finite, >= 0 and <= 1e\+12"),
        ({A: -0.1}, r"must be finite, >= 0 and <= 1e\+12"),
        ({A: math.inf}, r"must be finite, >= 0 and <= 1e\+12"),
        ({A: True}, "must be a number"),
        ({A: "1.0"}, "must be a number"),
        ({"(0,1]": 1.0}, "keys must be lmzoo Candidates"),
        ({}, "is empty"),
    ],
)
def test_bad_values_are_rejected(entries, message):
    for cls in (LatencyTable, ImportanceTable):
        with pytest.raises(InvalidTableError, match=message):
            cls(entries)


def test_bad_fixed_cost_and_metadata():
    with pytest.raises(InvalidTableError, match="fixed_ms"):
        LatencyTable({A: 1.0}, fixed_ms=-1.0)
    with pytest.raises(InvalidTableError, match="plain JSON data"):
        LatencyTable({A: 1.0}, metadata={"device": object()})


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a valid JSON latency table"),
        ('{"format": "lmzoo.latency-table/1", "entries": [{"candidate": {}, "ms": NaN}]}', "NaN"),
        ({"format": "lmzoo.importance-table/1"}, "not an lmzoo latency table"),
        (
            {"format": "lmzoo.latency-table/1", "spec_fingerprint": None, "metadata": {}, "entries": {}},
            "'entries' must be a list",
        ),
        (
            {
                "format": "lmzoo.latency-table/1",
                "spec_fingerprint": None,
                "metadata": {},
                "fixed_ms": 0,
                "entries": [{"candidate": A.to_dict(), "ms": 1}, {"candidate": A.to_dict(), "ms": 2}],
            },
            "twice",
        ),
        (
            {
                "format": "lmzoo.latency-table/1",
                "spec_fingerprint": None,
                "metadata": {},
                "fixed_ms": 0,
                "entries": [{"candidate": {**A.to_dict(), "kernel": "3"}, "ms": 1}],
            },
            "bad candidate",
        ),
        (
            {
                "format": "lmzoo.latency-table/1",
                "spec_fingerprint": None,
                "metadata": {},
                "entries": [{"candidate": A.to_dict(), "ms": 1}],
            },
            "needs 'fixed_ms'",
        ),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, content, message):
    path = _write(tmp_path / "lat.json", content)
    with pytest.raises(InvalidTableError, match=message) as err:
        LatencyTable.load(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidTableError, match="cannot read the importance table"):
        ImportanceTable.load(tmp_path / "missing.json")
