"""A FHIR Bulk Data export folder: which files it has, each checked as NDJSON and read line by line.

The files are found by the Bulk Data manifest (``manifest.json``, the body of a completed ``$export``
status request: ``{"transactionTime", "request", "requiresAccessToken", "output": [{"type", "url"}],
"error": [...]}``) when there is one, and by name: every ``*.ndjson`` and ``*.ndjson.gz`` of the folder, as
servers name them (``Patient.ndjson``, ``Observation.000.ndjson``, ``1.Observation.ndjson``...). Names and
the manifest only find files: what a line is, its own ``resourceType`` says.

A file that cannot be read as NDJSON (unreadable, a JSON array or a document over several lines, binary,
a broken gzip stream) stops the run (``BadExport``, one line naming it); a bad line in a good file is set
aside by the reader of that line, with its file and line number.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

MANIFEST = "manifest.json"
SUFFIXES = (".ndjson", ".ndjson.gz")
GZIP_MAGIC = b"\x1f\x8b"
PROBE_BYTES = 64 * 1024
#: how much of a file is read at once
BLOCK = 1 << 20


class Stopped(ValueError):
    """The run cannot go on: its message is the one line the command prints (exit status 2)."""


class BadExport(Stopped):
    """A file of the export cannot be read as NDJSON, or the folder is no export."""


@dataclass(frozen=True)
class ExportFile:
    """One NDJSON file of the export: its place in the run's order, where it is and what lists it."""

    index: int
    path: str  # absolute, as the workers open it
    name: str  # relative to the export folder, as reports name it
    listed_type: str | None = None  # the manifest's "type" (informational: each line's resourceType rules)
    role: str = "output"  # "output" or "error" (an OperationOutcome file the manifest lists under "error")


@dataclass(frozen=True)
class Piece:
    """A share of one file for one map task: the lines that start in bytes [start, end) (a gzip file is one
    piece: it cannot be read from the middle)."""

    file: ExportFile
    index: int
    start: int = 0
    end: int | None = None  # None: to the end of the file


@dataclass(frozen=True)
class Export:
    folder: Path
    files: list[ExportFile]
    manifest: dict[str, Any] | None  # transactionTime, request, requiresAccessToken (no outputs)


def _listed_name(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise BadExport(f"{where}: an entry without a url")
    parts = urlsplit(url.strip())
    return unquote(parts.path if not parts.scheme else parts.path.rsplit("/", 1)[-1])


def _manifest(folder: Path) -> tuple[dict[str, Any] | None, list[tuple[str, str | None, str]]]:
    path = folder / MANIFEST
    if not path.is_file():
        return None, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadExport(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadExport(f"{path}: not a Bulk Data manifest (not JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("output", []), list) \
            or not isinstance(data.get("error", []), list):
        raise BadExport(f"{path}: not a Bulk Data manifest (expected an object with an 'output' list)")
    listed: list[tuple[str, str | None, str]] = []
    for role, key in (("output", "output"), ("error", "error")):
        for n, entry in enumerate(data.get(key) or []):
            where = f"{path}: {key}[{n}]"
            if not isinstance(entry, dict):
                raise BadExport(f"{where}: expected an object with 'type' and 'url'")
            kind = entry.get("type")
            name = _listed_name(entry.get("url"), where)
            listed.append((name, kind if isinstance(kind, str) else None, role))
    about = {k: data[k] for k in ("transactionTime", "request", "requiresAccessToken") if k in data}
    return about, listed


def find(folder: Path) -> Export:
    """The export's files in a defined order (by name), each checked as NDJSON; ``BadExport`` otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadExport(f"{folder}: not a folder (a Bulk Data export is a folder of NDJSON files)")
    about, listed = _manifest(folder)
    found: dict[str, tuple[str | None, str]] = {}
    for name, kind, role in listed:
        candidate = (folder / name).resolve()
        if not candidate.is_file():
            candidate = (folder / Path(name).name).resolve()
        if not candidate.is_file() or folder.resolve() not in candidate.parents:
            raise BadExport(f"{folder / MANIFEST}: lists {name}, which is not a file of the export folder")
        found[candidate.relative_to(folder.resolve()).as_posix()] = (kind, role)
    for path in folder.iterdir():
        if path.is_file() and path.name.endswith(SUFFIXES):
            found.setdefault(path.name, (None, "output"))
    if not found:
        raise BadExport(f"{folder}: no NDJSON files (*.ndjson, *.ndjson.gz) and no manifest listing any")
    files = [ExportFile(i, str((folder / name).resolve()), name, kind, role)
             for i, (name, (kind, role)) in enumerate(sorted(found.items()))]
    for f in files:
        check(f)
    return Export(folder, files, about)


def is_gzip(f: ExportFile) -> bool:
    try:
        with open(f.path, "rb") as raw:
            return raw.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise BadExport(f"{f.name}: cannot read: {exc.strerror}") from None


def pieces(export: Export, piece_bytes: int) -> list[Piece]:
    """Every file as pieces of about ``piece_bytes`` (a gzip file whole), in export order."""
    found: list[Piece] = []
    for f in export.files:
        size = Path(f.path).stat().st_size
        if is_gzip(f) or size <= piece_bytes:
            found.append(Piece(f, 0))
            continue
        bounds = list(range(0, size, piece_bytes)) + [size]
        found += [Piece(f, i, start, end)
                  for i, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False))]
    return found


def _open(f: ExportFile) -> Any:
    try:
        with open(f.path, "rb") as raw:
            magic = raw.read(2)
    except OSError as exc:
        raise BadExport(f"{f.name}: cannot read: {exc.strerror}") from None
    if magic == GZIP_MAGIC:
        return gzip.open(f.path, "rb")
    if f.name.endswith(".gz"):
        raise BadExport(f"{f.name}: named .gz but not gzip-compressed")
    return open(f.path, "rb")


def _stream_error(f: ExportFile, exc: BaseException) -> BadExport:
    if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.strerror:
        return BadExport(f"{f.name}: cannot read: {exc.strerror}")
    return BadExport(f"{f.name}: broken gzip stream ({exc or type(exc).__name__})")


def check(f: ExportFile) -> None:
    """Raise ``BadExport`` when the start of ``f`` shows it is no NDJSON file at all."""
    try:
        with _open(f) as stream:
            head = stream.read(PROBE_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise _stream_error(f, exc) from None
    if b"\x00" in head:
        raise BadExport(f"{f.name}: binary data, not NDJSON")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a character cut at the probe's end
            raise BadExport(f"{f.name}: not UTF-8 text, not NDJSON") from None
        text = head[: exc.start].decode("utf-8")
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        return  # an empty file: no resources
    if body[0] == "[":
        raise BadExport(f"{f.name}: a JSON array, not NDJSON (one resource per line)")
    if body[0] != "{":
        raise BadExport(f"{f.name}: not NDJSON (the first line is not a JSON object)")
    first = body.split("\n", 1)[0].strip()
    if first == "{" or (first.endswith(("{", "[", ",")) and "\n" in body):
        raise BadExport(f"{f.name}: a JSON document over several lines, not NDJSON (one resource per line)")


def lines(f: ExportFile, start: int = 0, end: int | None = None,
          digest: Any = None) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` for each line of ``f`` that starts in bytes [start, end) (numbered from 1
    at ``start``; without the line break). The file is read in blocks of ``BLOCK`` bytes, split at line
    breaks (a line longer than a block is put together once, not copied again for each block).
    ``digest``: a hashlib object fed every byte of a plain file read whole (its sha256 in the same pass)."""
    try:
        with _open(f) as stream:
            if start:
                stream.seek(start - 1)
                stream.readline()  # the end of the line that started before this piece (maybe only "\n")
            feed = digest.update if digest is not None and not start and end is None and not is_gzip(f) \
                else None
            pos = stream.tell()
            n = 0
            pending: list[bytes] = []
            while True:
                block = stream.read(BLOCK)
                if not block:
                    break
                if feed is not None:
                    feed(block)
                parts = block.split(b"\n")
                if len(parts) == 1:  # no line break in this block: the line goes on
                    pending.append(block)
                    continue
                if pending:
                    pending.append(parts[0])
                    parts[0] = b"".join(pending)
                    pending = []
                tail = parts.pop()
                for raw in parts:
                    if end is not None and pos >= end:
                        return
                    n += 1
                    pos += len(raw) + 1
                    yield n, raw.rstrip(b"\r") if raw[-1:] == b"\r" else raw
                if tail:
                    pending.append(tail)
            if pending and (end is None or pos < end):
                raw = b"".join(pending)
                yield n + 1, raw.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise _stream_error(f, exc) from None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
