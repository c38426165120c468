"""Reading the snoop CSV formats (see DESIGN.md, "The snoop CSV formats").

``inferred_<model>.csv`` is written by snoop as exactly two lines, comma separated, no quoting:
a header of parameter names, then one line of values printed like ``%.12g`` with a trailing dot
on whole numbers (``600.``, ``0.``, ``0.0752``, ``1.5e-07``, ``nan``, ``inf``, ``-inf``).

Files seen in the wild are not always that clean. The reader tolerates, with a warning, the
oddities that do not change the meaning (a UTF-8 BOM, CRLF line ends, trailing commas on both
lines, spaces around fields, trailing blank lines, a missing final newline) and refuses
everything else with one exception type, :class:`SnoopFormatError`, naming the file, the line
and the reason, so that one bad file among tens of thousands never crashes the caller.

Stdlib only and cheap per file: no regexes, no pandas.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "InferenceFile",
    "SnoopFormatError",
    "format_snoop_number",
    "parse_inference_text",
    "read_inference_csv",
]

_BOM = b"\xef\xbb\xbf"

# Warnings, in the order they are detected.
W_BOM = "UTF-8 BOM"
W_CRLF = "CRLF line ends"
W_TRAILING_BLANK = "trailing blank lines"
W_NO_FINAL_NEWLINE = "no newline at end of file"
W_SPACES = "spaces around fields"
W_TRAILING_COMMA = "trailing comma"

#: Characters that never occur in a good file, and what they usually mean.
_FORBIDDEN_CHARS = (
    ("\x00", "NUL byte (file zero-filled after a crash?)"),
    ("\ufeff", "byte order mark inside the file"),
)


@dataclass(frozen=True)
class InferenceFile:
    """One parsed ``inferred_<model>.csv``."""

    path: Path
    #: Parameter names, in file order.
    names: tuple[str, ...]
    #: Each value exactly as written (stripped), e.g. ``"600."`` or ``"nan"``.
    texts: tuple[str, ...]
    #: The parsed values (nan and inf allowed).
    values: tuple[float, ...]
    #: Tolerated oddities, e.g. ``"CRLF line ends"``, ``"trailing comma"``.
    warnings: tuple[str, ...]


class SnoopFormatError(ValueError):
    """A snoop CSV that cannot be read: ``str(err)`` is ``"<path>:<line>: <reason>"``.

    ``line`` is 1-based, or None when the file could not be read at all.
    """

    path: Path
    line: int | None
    reason: str

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        # Positional args so that the exception pickles (multiprocessing) and copies.
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


def format_snoop_number(value: float) -> str:
    """``value`` as snoop prints it: ``%.12g``, plus a ``.`` when that is only ``[-]digits``."""
    text = f"{value:.12g}"
    if text.lstrip("-").isdigit():
        text += "."
    return text


def read_inference_csv(path: Path) -> InferenceFile:
    """Read and parse ``path``; any problem, including an unreadable file, is a
    :class:`SnoopFormatError` (with ``line=None`` when the file could not be read)."""
    path = path if isinstance(path, Path) else Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnoopFormatError(path, None, f"cannot read: {exc.strerror or exc}") from exc
    return parse_inference_text(data, path)


def _trailing_empty(fields: list[str]) -> int:
    """How many fields at the end of ``fields`` are empty."""
    count = 0
    for field in reversed(fields):
        if field:
            break
        count += 1
    return count


#: The ASCII characters ``str.strip()`` removes, but for the line ends (never inside a line).
_ASCII_SPACES = " \t\x0b\x0c\x1c\x1d\x1e\x1f"


def _split_fields(line: str) -> tuple[list[str], bool]:
    """The stripped fields of ``line``, and whether stripping changed any of them."""
    if line.isascii() and not any(space in line for space in _ASCII_SPACES):
        return line.split(","), False  # nothing to strip (the usual case)
    fields = [field.strip() for field in line.split(",")]
    # Cheap check: the stripped fields plus the commas are as long as the line iff nothing
    # was stripped.
    padded = sum(map(len, fields)) + len(fields) - 1 != len(line)
    return fields, padded


def parse_inference_text(data: bytes, path: Path) -> InferenceFile:
    """Parse the bytes of an ``inferred_<model>.csv``; ``path`` is only used in messages."""
    path = path if isinstance(path, Path) else Path(path)
    warnings: list[str] = []

    def fail(line: int | None, reason: str) -> SnoopFormatError:
        return SnoopFormatError(path, line, reason)

    # --- Bytes to text ------------------------------------------------------------------
    data = bytes(data)
    skip = 0
    if data.startswith(_BOM):
        skip = len(_BOM)
        warnings.append(W_BOM)
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise fail(
            line, f"not valid UTF-8: byte 0x{data[offset]:02x} at offset {offset} ({exc.reason})"
        ) from None

    for char, what in _FORBIDDEN_CHARS:
        index = text.find(char)
        if index >= 0:
            raise fail(text.count("\n", 0, index) + 1, what)

    # --- Lines --------------------------------------------------------------------------
    lines = text.split("\n")
    final_newline = lines[-1] == ""
    if final_newline:
        lines.pop()
    count = len(lines)
    while count and not lines[count - 1].strip():
        count -= 1
    if count < len(lines):
        # Ignored; the final newline of the last non-blank line is there, since a blank
        # line follows it.
        trailing_blank = True
        final_newline = True
        del lines[count:]
    else:
        trailing_blank = False

    crlf = False
    for index, content in enumerate(lines):
        if content.endswith("\r"):
            crlf = True
            content = content[:-1]
            lines[index] = content
        if "\r" in content:
            raise fail(index + 1, "carriage return inside the line (CR-only line ends?)")
    if crlf:
        warnings.append(W_CRLF)
    if trailing_blank:
        warnings.append(W_TRAILING_BLANK)
    elif lines and not final_newline:
        warnings.append(W_NO_FINAL_NEWLINE)

    if not lines:
        raise fail(1, "empty file")
    if not lines[0].strip():
        raise fail(1, "blank header line")
    if len(lines) == 1:
        raise fail(2, "no values line (truncated file?)")
    if not lines[1].strip():
        raise fail(2, "blank line between the header and the values")
    if len(lines) > 2:
        raise fail(3, f"unexpected line (expected 2 lines: a header and values, got {count})")

    # --- Fields -------------------------------------------------------------------------
    names, names_padded = _split_fields(lines[0])
    texts, texts_padded = _split_fields(lines[1])
    if names_padded or texts_padded:
        warnings.append(W_SPACES)

    empty = _trailing_empty(names)
    if empty and empty == _trailing_empty(texts) and empty < len(names) and empty < len(texts):
        del names[-empty:]
        del texts[-empty:]
        warnings.append(W_TRAILING_COMMA)

    if len(names) != len(texts):
        raise fail(2, f"{len(names)} names but {len(texts)} values")

    if "" in names or len(set(names)) != len(names):
        columns: dict[str, int] = {}
        for column, name in enumerate(names, start=1):
            if not name:
                raise fail(1, f"empty parameter name in column {column}")
            first = columns.setdefault(name, column)
            if first != column:
                raise fail(1, f"duplicate parameter name {name!r} (columns {first} and {column})")

    # float() also takes "1_000" and non-ASCII digits, which snoop never writes: a line with
    # either is read value by value, to name the first such value.
    values: list[float] | None = None
    if "_" not in lines[1] and lines[1].isascii():
        with contextlib.suppress(ValueError):
            values = list(map(float, texts))
    if values is None:
        values = []
        for column, (name, value_text) in enumerate(zip(names, texts, strict=True), start=1):
            try:
                if "_" in value_text or not value_text.isascii():
                    raise ValueError(value_text)
                values.append(float(value_text))
            except ValueError:
                raise fail(
                    2,
                    f"value {value_text!r} of parameter {name!r} (column {column}) is not a number",
                ) from None

    return InferenceFile(
        path=path,
        # Interned: the same names recur in every run, and a history holds millions of them.
        names=tuple(map(sys.intern, names)),
        texts=tuple(texts),
        values=tuple(values),
        warnings=tuple(warnings),
    )
