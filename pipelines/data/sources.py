"""Opening user files: plain or gzip (detected from the bytes, not the name), with a cap on the
decompressed size so that a small upload cannot expand into gigabytes (a gzip bomb).

Everything here streams: nothing reads a whole file into memory.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pipelines.data.errors import InputError

Source = str | os.PathLike | bytes | BinaryIO  # a path, the bytes themselves, or a binary stream

GZIP_MAGIC = b"\x1f\x8b"
# Formats we recognise only to say so clearly (magic bytes -> name).
_UNSUPPORTED = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}
_BINARY_MAGIC = {b"\x89PNG": "a PNG image", b"%PDF": "a PDF document", b"\x7fELF": "an executable"}

GiB = 1 << 30
DEFAULT_MAX_BYTES = 64 * GiB  # decompressed; the app passes a much smaller cap


def source_name(source: Source, name: str | None = None) -> str:
    """The name used in messages: ``name``, else the path, else the stream's ``name``."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<input>"))


class _CappedReader(io.RawIOBase):
    """Raw reader over a binary stream that stops with :class:`InputError` past ``max_bytes``.

    Decompression errors (truncated or corrupt gzip) are turned into :class:`InputError` here, the
    one place every read goes through.
    """

    def __init__(self, stream: BinaryIO, max_bytes: int, name: str, compressed: bool):
        self._stream, self._max, self._name, self._compressed = stream, max_bytes, name, compressed
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(len(buffer))
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(f"corrupt or truncated gzip data ({exc})", file=self._name) from exc
        n = len(data)
        self.bytes_read += n
        if self.bytes_read > self._max:
            what = "decompresses to" if self._compressed else "is"
            raise InputError(f"file {what} more than {self._max:,} bytes, the limit for this input", file=self._name)
        buffer[:n] = data
        return n


def _peek(stream: BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of ``stream`` without consuming them."""
    if hasattr(stream, "peek"):
        return stream.peek(n)[:n]
    if stream.seekable():
        pos = stream.tell()
        head = stream.read(n)
        stream.seek(pos)
        return head
    raise TypeError("input stream must be seekable or have peek()")


@contextmanager
def open_binary(source: Source, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None
                ) -> Iterator[io.BufferedReader]:
    """Open ``source`` (path, bytes or binary stream) for reading its decompressed bytes.

    gzip (including bgzip and multi-member files) is recognised by its magic bytes; bzip2, xz,
    zstd and zip are refused by name. Reading past ``max_bytes`` decompressed bytes raises
    :class:`InputError`. A stream passed in is not closed.
    """
    label = source_name(source, name)
    owned = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise InputError("file not found", file=label)
        if os.path.isdir(path):
            raise InputError("is a folder, not a file", file=label)
        owned = stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    elif isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(source))
    else:
        stream = source
    try:
        head = _peek(stream, 8)
        for magic, kind in _UNSUPPORTED.items():
            if head.startswith(magic):
                raise InputError(f"{kind}-compressed files are not supported; decompress it or use gzip", file=label)
        compressed = head.startswith(GZIP_MAGIC)
        inner = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
        yield io.BufferedReader(_CappedReader(inner, max_bytes, label, compressed), buffer_size=1 << 20)
    finally:
        if owned is not None:
            owned.close()


def check_text_head(head: bytes, name: str) -> None:
    """Refuse binary content (images, executables, anything with NUL bytes) with a clear message."""
    if not head.strip():
        raise InputError("file is empty", file=name)
    for magic, kind in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"this is {kind}, not a text file", file=name)
    if b"\x00" in head:
        raise InputError("binary file (contains NUL bytes), not a text file", file=name)


@contextmanager
def open_text(source: Source, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None,
              sniff_bytes: int = 1 << 16) -> Iterator[tuple[io.TextIOWrapper, str]]:
    """Open ``source`` as UTF-8 text (a BOM is skipped); yields ``(text_stream, first_chunk)``.

    ``first_chunk`` is the start of the decompressed text (up to ``sniff_bytes``), for format
    detection; it is not consumed from the stream. Empty and binary files raise :class:`InputError`.
    """
    label = source_name(source, name)
    with open_binary(source, max_bytes=max_bytes, name=label) as raw:
        head = raw.peek(sniff_bytes)[:sniff_bytes]
        check_text_head(head, label)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=None)
        try:
            yield text, head.decode("utf-8-sig", errors="replace")
        except UnicodeDecodeError as exc:
            raise InputError(f"not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x})", file=label) from exc
        finally:
            text.detach()  # the BufferedReader is closed by open_binary's owner, not here
