"""Reading an export file's lines in blocks: every line once, whole, in order, numbered, whatever the block
size, the piece boundaries and the line breaks (``cds.population.export.lines``)."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.population import export
from cds.population.export import ExportFile, lines

_LINE = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), st.just(b""), st.just(b"\r"),
                  st.just(b'{"resourceType":"Patient","id":"p1"}\r'), st.just(b"x" * 300))


def _expected(data: bytes) -> list[bytes]:
    """The lines as a plain reading of the file gives them (without their line break and trailing CRs)."""
    parts = data.split(b"\n")
    if parts[-1] == b"":  # the file ends with a line break (or is empty): no line after it
        parts.pop()
    return [raw.rstrip(b"\r\n") for raw in parts]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_LINE, max_size=20), st.booleans(), st.integers(1, 64),
       st.lists(st.integers(1, 2000), max_size=4))
def test_pieces_read_every_line_once_whatever_the_blocks(tmp_path, monkeypatch, body, end_break, block, cuts):
    data = b"\n".join(body) + (b"\n" if end_break and body else b"")
    path = tmp_path / "f.ndjson"
    path.write_bytes(data)
    f = ExportFile(0, str(path), "f.ndjson")
    monkeypatch.setattr(export, "BLOCK", block)
    bounds = sorted({0, *[c for c in cuts if c < len(data)]}) + [None]
    found: list[bytes] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        numbered = list(lines(f, start, end))
        assert [n for n, _ in numbered] == list(range(1, len(numbered) + 1))
        found += [raw for _, raw in numbered]
    assert found == _expected(data)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_whole_plain_file_is_hashed_in_the_same_pass(tmp_path, monkeypatch, compressed):
    monkeypatch.setattr(export, "BLOCK", 7)
    data = b"".join(b'{"resourceType":"Observation","id":"o%d"}\n' % n for n in range(50))
    path = tmp_path / ("f.ndjson.gz" if compressed else "f.ndjson")
    path.write_bytes(gzip.compress(data) if compressed else data)
    digest = hashlib.sha256()
    got = [raw for _, raw in lines(ExportFile(0, str(path), path.name), digest=digest)]
    assert got == data.splitlines()
    if compressed:  # a gzip file's sha256 is of its own bytes: not fed here, taken by sha256_of
        assert digest.hexdigest() == hashlib.sha256().hexdigest()
    else:
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_line_far_longer_than_a_block_comes_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "BLOCK", 16)
    long = b'{"text":"' + b"y" * 100_000 + b'"}'
    path = tmp_path / "f.ndjson"
    path.write_bytes(b"a\n" + long + b"\nb")
    assert [raw for _, raw in lines(ExportFile(0, str(path), "f.ndjson"))] == [b"a", long, b"b"]
