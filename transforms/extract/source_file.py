"""Reading one raw file: compression, per-file encoding detection, binary detection, lines and JSON records.

Compression is by extension. Beam's ``FileSystems`` decompresses a truncated .gz/.bz2/.xz silently (it stops
at the last whole block), so those three are read with the standard library's readers, which raise at a missing
end of stream: a truncated or corrupt archive is a ``truncated_archive``/``corrupt_archive`` dead letter, not a
half-read file or a misleading "undecodable". Other codecs (.zst, .deflate) stay with Beam. Encoding: Chinese dumps
are UTF-8 or GB18030/GBK; general detectors (charset-normalizer, chardet) guess slowly and often call GBK
text Big5 or Latin-1, while the question here is narrow: does a sample decode strictly as UTF-8, else as
GB18030? That test is written here. Bytes that still do not decode become dead letters, never a crash.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson

SNIFF_BYTES = 1 << 16
BINARY = "binary"


_ARCHIVES = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile, ".lzma": lzma.LZMAFile}
# what the standard library's readers raise for a damaged archive (BadGzipFile is an OSError)
ARCHIVE_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def archive_problem(exc: BaseException) -> str:
    return "truncated_archive" if isinstance(exc, EOFError) else "corrupt_archive"


class _Decompressed(io.BufferedReader):
    """An archive reader that also closes the raw file under it."""

    def __init__(self, archive, raw):
        super().__init__(archive)
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def open_source(path: str, open_as: Callable[[str], IO[bytes]]) -> IO[bytes]:
    """``path``'s bytes, decompressed by extension; ``open_as(compression_type)`` opens it through Beam."""
    from apache_beam.io.filesystems import CompressionTypes

    reader = next((cls for ext, cls in _ARCHIVES.items() if path.lower().endswith(ext)), None)
    if reader is None:
        return open_as(CompressionTypes.AUTO)
    raw = open_as(CompressionTypes.UNCOMPRESSED)
    return _Decompressed(reader(fileobj=raw) if reader is gzip.GzipFile else reader(raw), raw)


@dataclass
class Rejected:
    """A record (or a whole file) an adapter could not read; becomes a dead letter."""

    key: str
    reason: str
    detail: str = ""
    raw: Any = ""


@dataclass
class Extracted:
    """One record an adapter read: a title (may be None) and a body text, plus source-specific extras."""

    key: str
    title: str | None
    text: str
    meta: dict[str, Any]


class MissingField(Exception):
    """An adapter's mapper did not find a required field."""


def _decodes(sample: bytes, encoding: str, complete: bool) -> bool:
    try:
        sample.decode(encoding)
        return True
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the end of the sample is not an error (UTF-8 says "unexpected end",
        # GB18030 "incomplete multibyte sequence": a GB18030 JSON array longer than the sample was taken for UTF-8)
        return not complete and exc.start >= len(sample) - 4 and exc.reason.startswith(("unexpected end",
                                                                                         "incomplete multibyte"))


def sniff_encoding(sample: bytes, complete: bool = False) -> str:
    """``'utf-8'``, ``'utf-8-sig'``, ``'gb18030'`` or :data:`BINARY` for a file's first bytes."""
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if b"\x00" in sample:
        return BINARY
    controls = sum(1 for b in sample[:4096] if b < 9 or 13 < b < 32)
    if sample and controls / min(len(sample), 4096) > 0.05:
        return BINARY
    if _decodes(sample, "utf-8", complete):
        return "utf-8"
    if _decodes(sample, "gb18030", complete):
        return "gb18030"
    # damage in one line (an invalid byte pair) must not decide the file: the encoding under which fewer lines
    # fail wins (UTF-8 on a tie), and the lines that still fail become dead letters (a GB18030 file with one bad
    # pair lost every line as undecodable UTF-8)
    lines = sample.splitlines()[: -1 if not complete else None] or sample.splitlines()
    failures = {enc: sum(1 for line in lines if not _decodes(line, enc, True)) for enc in ("utf-8", "gb18030")}
    return "gb18030" if failures["gb18030"] < failures["utf-8"] else "utf-8"


class _Utf8Stream:
    """A byte stream in another encoding read as UTF-8 bytes, a chunk at a time (bytes that do not decode become
    U+FFFD, as a whole-file decode replaced them). A file-like object with ``read`` alone, what ijson calls."""

    def __init__(self, raw: IO[bytes], encoding: str):
        self.text = io.TextIOWrapper(raw, encoding=encoding, errors="replace")
        self.pending = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.pending) < size:
            chunk = self.text.read(65536 if size < 0 else max(size, 4096))
            if not chunk:
                break
            self.pending += chunk.encode("utf-8")
        out, self.pending = (self.pending, b"") if size < 0 else (self.pending[:size], self.pending[size:])
        return out

    def close(self) -> None:
        self.text.close()


def _sample(opener: Callable[[], IO[bytes]]) -> tuple[bytes, bool]:
    """The file's first ``SNIFF_BYTES + 1`` bytes, and whether an archive ended in damage before them. Read in small
    pieces: a truncated archive raises on the read that meets the damage, and the bytes before it still decide the
    encoding (a .gz cut within its first 64 KiB kept no record: the sniff's one read raised)."""
    pieces, size = [], 0
    with opener() as fh:
        try:
            while size <= SNIFF_BYTES and (piece := fh.read(4096)):
                pieces.append(piece)
                size += len(piece)
        except ARCHIVE_ERRORS:
            return b"".join(pieces), True
    return b"".join(pieces), False


class SourceFile:
    """A raw file seen by an adapter: its path, the id-stable relative name, and ways to read it."""

    def __init__(self, path: str, rel_name: str, opener: Callable[[], IO[bytes]]):
        self.path, self.rel_name, self._open = path, rel_name, opener
        sample, damaged = _sample(opener)
        self.encoding = sniff_encoding(sample[:SNIFF_BYTES], complete=len(sample) <= SNIFF_BYTES and not damaged)
        self.first_byte = sample.lstrip()[:1]

    @classmethod
    def from_path(cls, path: str, rel_name: str | None = None) -> SourceFile:
        """Open through Beam's FileSystems: any scheme it knows, compression from the extension."""
        from apache_beam.io.filesystems import FileSystems

        return cls(path, rel_name or path.rsplit("/", 1)[-1],
                   lambda: open_source(path, lambda kind: FileSystems.open(path, compression_type=kind)))

    @property
    def is_binary(self) -> bool:
        return self.encoding == BINARY

    def open(self) -> IO[bytes]:
        return self._open()

    def lines(self) -> Iterator[tuple[int, str | Rejected]]:
        """(1-based line number, decoded line without newline | Rejected) for every non-empty line."""
        with self.open() as fh:
            for number, raw in enumerate(iter(fh.readline, b""), start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    yield number, raw.decode(self.encoding).rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield number, Rejected(f"L{number}", "undecodable", f"{self.encoding}: {exc.reason}", raw)

    def text(self) -> tuple[str, bool]:
        """The whole file decoded; the flag is False when bytes had to be replaced (U+FFFD)."""
        with self.open() as fh:
            data = fh.read()
        try:
            return data.decode(self.encoding), True
        except UnicodeDecodeError:
            return data.decode(self.encoding, errors="replace"), False

    def json_records(self, records_key: str = "RECORDS") -> Iterator[tuple[str, dict | Rejected]]:
        """Records of a JSON array, a ``{records_key: [...]}`` object, or JSON lines; errors are Rejected."""
        if self.first_byte == b"[":
            yield from self._json_items("item")
        elif self.first_byte == b"{" and not self._first_line_is_object():
            yield from self._json_items(f"{records_key}.item")
        else:
            yield from self._json_lines()

    def _first_line_is_object(self) -> bool:
        for _, line in self.lines():
            if isinstance(line, Rejected):
                return True
            try:
                return isinstance(json.loads(line), dict)
            except ValueError:
                return False
        return False

    def _json_items(self, prefix: str) -> Iterator[tuple[str, dict | Rejected]]:
        # ijson parses UTF-8: another encoding is transcoded as it streams (the whole file was decoded first)
        stream_cm = self.open() if self.encoding.startswith("utf-8") else _Utf8Stream(self.open(), self.encoding)
        index = -1
        with stream_cm as stream:
            try:
                for index, item in enumerate(ijson.items(stream, prefix, use_float=True)):
                    if isinstance(item, dict):
                        yield str(index), item
                    else:
                        yield str(index), Rejected(str(index), "not_an_object", type(item).__name__, item)
            except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
                yield f"after:{index}", Rejected(f"after:{index}", "malformed_json", str(exc)[:500])
        if index < 0 and prefix.startswith("RECORDS"):
            yield "file", Rejected("file", "no_records", f"no '{prefix}' list in the file")

    def _json_lines(self) -> Iterator[tuple[str, dict | Rejected]]:
        for number, line in self.lines():
            key = f"L{number}"
            if isinstance(line, Rejected):
                yield key, line
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield key, Rejected(key, "malformed_json", str(exc), line)
                continue
            yield key, obj if isinstance(obj, dict) else Rejected(key, "not_an_object", type(obj).__name__, line)
