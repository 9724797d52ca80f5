"""The one exception for bad user input.

The CLI and the app catch :class:`InputError` and show ``str(error)`` as it is, so the message must
say where the problem is (file, record or line, column) and what to fix, in one short sentence.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied file or value that cannot be used.

    ``reason`` is the bare description; ``file``, ``record``, ``line`` and ``column`` locate it
    (any may be ``None``). ``str(error)`` joins them: ``"train.fa, record 'seq7' (#7): empty sequence"``.
    """

    def __init__(self, reason: str, *, file: str | None = None, record: str | None = None,
                 line: int | str | None = None, column: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.file = None if file is None else str(file)
        self.record = record
        self.line = line
        self.column = column

    def where(self) -> str:
        """The location part of the message ("" when nothing is known)."""
        parts = []
        if self.file:
            parts.append(self.file)
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.reason}" if where else self.reason

    def __reduce__(self):
        # DataLoader workers send exceptions across processes: rebuild with the keyword fields.
        return _rebuild, (type(self), self.reason, self.file, self.record, self.line, self.column)


def _rebuild(cls, reason, file, record, line, column):
    return cls(reason, file=file, record=record, line=line, column=column)
