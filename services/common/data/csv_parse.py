"""Reading one export file: header mapping, repair hooks, checks, rejects,
and the COPY-ready CSV the rows are converted to (`FileParser`).

* The csv module reads while each record's first line number is known
  (records may span lines); header names match ignoring case, underscores and
  the old export's spaces after commas; an optional per-line hook repairs
  known damage (`close_unterminated_quote`).
* Rejects (wrong field count, duplicate ids, converter `Reject`s, unparseable
  records) are handed out with each chunk, with their file, line and raw text.

NULL handling. The csv module drops quoting, so a bare `null` and a quoted
`"null"` both arrive as the string 'null'. The reader tells them apart exactly:
only when a record contains a 'null' value *and* its raw text contains
`"null"` is the record re-tokenised (`quoted_fields`) to see which fields were
quoted. A bare null becomes None in a column declared nullable and rejects the
row in any other column; a quoted "null" stays the 4-letter string.

On the way out, files without nullable columns go through csv.writer
(QUOTE_NONNUMERIC: strings quoted, numbers bare). Files with nullable columns
go through `csv_line`, which follows the same rules except that None becomes
a bare empty field (COPY: NULL) while '' stays `""` (COPY: empty string):
on 3.11 csv.writer writes None as `""`, i.e. an empty string, and it is also
twice as slow on text-heavy rows (a per-character line-terminator lookup).
"""

from __future__ import annotations

import csv
import io
import operator
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, tee
from pathlib import Path
from typing import Any

from .values import INT4_MAX, EtlError, IdBitmap, Reject


def csv_line(row: Sequence[Any]) -> str:
    """One COPY (FORMAT csv) line without its newline: str quoted with inner
    quotes doubled (commas and newlines then need nothing), None bare and
    empty (= NULL), anything else str() (ints, True/False, Decimal)."""
    return ",".join(
        [
            '"' + v.replace('"', '""') + '"' if v.__class__ is str else "" if v is None else str(v)
            for v in row
        ]
    )


# --------------------------------------------------------------------------- CSV reading


def normalize_column(name: str) -> str:
    """'productId', 'product_id', ' Product_ID' -> 'productid'."""
    return name.lstrip("\ufeff").strip().replace("_", "").lower()


def map_header(header: Sequence[str], expected: Sequence[str], file: str) -> list[int]:
    """Position in `header` of each expected column; a missing one is fatal."""
    positions = {normalize_column(h): i for i, h in reversed(list(enumerate(header)))}
    missing = [c for c in expected if normalize_column(c) not in positions]
    if missing:
        raise EtlError(
            f"{file}: header lacks column(s) {', '.join(missing)}"
            f" (header is: {','.join(header)}; expected {','.join(expected)})"
        )
    return [positions[normalize_column(c)] for c in expected]


def close_unterminated_quote(line: str) -> str | None:
    """Repair hook for files whose fields never contain newlines (photos.csv):
    a line with an odd number of quote characters lost the closing quote of
    its last field, so add it before the line end. None = line untouched."""
    if line.count('"') % 2 == 0:
        return None
    body = line.rstrip("\r\n")
    return body + '"' + line[len(body) :]


def quoted_fields(raw: str) -> list[bool]:
    """For one raw CSV record (comma, double quote, initial spaces skipped):
    whether each field was quoted. Only used for the rare records that hold
    the text "null", to tell bare null (NULL) from the quoted string."""
    flags: list[bool] = []
    i, n = 0, len(raw)
    while True:
        while i < n and raw[i] == " ":
            i += 1
        if i < n and raw[i] == '"':
            flags.append(True)
            i += 1
            while i < n:
                if raw[i] == '"':
                    if i + 1 < n and raw[i + 1] == '"':
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
        else:
            flags.append(False)
        while i < n and raw[i] not in ",\r\n":
            i += 1
        if i < n and raw[i] == ",":
            i += 1
            continue
        return flags


@dataclass(frozen=True)
class FileSpec:
    """One export file: where it goes and what its header must hold.

    `columns` are the expected header names (matched ignoring case and
    underscores) in the order the converter receives them; `copy_columns` are
    the table columns of the converter's output tuple (default: `columns`).
    `nullable` columns may hold bare `null` (-> None in, NULL out); an output
    column the converter adds (in `copy_columns` only) is nullable when named
    there: the converter's None is written as NULL.
    `id_column` values are checked positive, int4 and unique (bitmap), and
    handed to the converter as int. `repair` is an optional line hook
    (line -> repaired line, or None when it leaves the line alone)."""

    name: str
    table: str
    columns: tuple[str, ...]
    copy_columns: tuple[str, ...] | None = None
    nullable: frozenset[str] = frozenset()
    id_column: str | None = "id"
    repair: Callable[[str], str | None] | None = None

    @property
    def target_columns(self) -> tuple[str, ...]:
        return self.copy_columns or self.columns


@dataclass
class FileStats:
    file: str
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    rejected: int = 0
    parse_seconds: float = 0.0
    seconds: float = 0.0  # wall time for the file, COPY included


# (file, line, reason, raw)
RejectRow = tuple[str, int, str, str]


@dataclass
class Chunk:
    """A block of COPY-ready CSV plus what happened while producing it."""

    data: bytes
    rows: int
    rejects: list[RejectRow]
    position: int  # bytes of the input consumed so far (for progress)


Converter = Callable[[list[Any]], Sequence[Any]]


class _RawLines:
    """The raw text of records by line number, read from a tee of the input
    lines that trails the csv reader. Nothing is done per record: the tee's
    buffer is only drained (in C) once per batch or when a reject or a
    quoted-null check needs a record's text."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._next = 1  # line number the tee yields next
        self._last: tuple[int, str] = (0, "")  # (start, text) of the last record read

    def skip_to(self, line: int) -> None:
        if line > self._next:
            deque(islice(self._lines, line - self._next), maxlen=0)
            self._next = line

    def text(self, start: int, end: int) -> str:
        """Lines start..end-1 (the record's lines)."""
        if self._last[0] == start:  # asked twice: null check, then reject
            return self._last[1]
        self.skip_to(start)
        text = "".join(islice(self._lines, end - self._next))
        self._next = end
        self._last = (start, text)
        return text


def _repaired(
    lines: Iterator[str], repair: Callable[[str], str | None], flag: list[bool]
) -> Iterator[str]:
    for line in lines:
        fixed = repair(line)
        if fixed is not None:
            flag[0] = True
            line = fixed
        yield line


class FileParser:
    """Parses, checks and converts one file into COPY-ready CSV chunks.

    Runs anywhere (child process or inline); `stats` is final once `chunks()`
    is exhausted. Output: csv.writer QUOTE_NONNUMERIC when the spec has no
    nullable column (fastest for short numeric rows), else `csv_line`, the
    only one of the two that can express NULL."""

    batch_rows = 5_000

    def __init__(
        self, path: Path, spec: FileSpec, convert: Converter, chunk_bytes: int = 2 << 20
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.convert = convert
        self.chunk_bytes = chunk_bytes
        self.stats = FileStats(spec.name)
        self._sent = 0  # rows already handed out in chunks
        self._rejects: list[RejectRow] = []

    def _reject(self, raw: _RawLines, start: int, end: int, reason: str) -> None:
        self._rejects.append((self.spec.name, start, reason, raw.text(start, end)))
        self.stats.rejected += 1

    def chunks(self) -> Iterator[Chunk]:
        spec, stats, name = self.spec, self.stats, self.spec.name
        started = time.perf_counter()
        if not self.path.is_file():
            raise EtlError(f"{name}: file not found at {self.path}")
        raw_file = open(self.path, "rb")  # closed in the finally below
        read = repaired = 0
        try:
            f = io.TextIOWrapper(raw_file, encoding="utf-8-sig", errors="replace", newline="")
            source, shadow = tee(f)
            raw = _RawLines(shadow)
            flag = [False]  # set by the repair hook for the current record
            # strict: text after a closing quote is an error, not data. That is
            # how a field missing its closing quote shows up (it swallowed the
            # next line up to that line's first quote), so the damaged record
            # goes to rejects with all its lines instead of loading garbage.
            reader = csv.reader(
                _repaired(source, spec.repair, flag) if spec.repair else source,
                skipinitialspace=True,
                strict=True,
            )
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise EtlError(f"{name}: unreadable header: {exc}") from None
            if header is None:
                raise EtlError(f"{name}: empty file, expected header {','.join(spec.columns)}")
            positions = map_header(header, spec.columns, name)
            width = len(header)
            reorder = (
                None
                if positions == list(range(len(spec.columns)))
                else operator.itemgetter(*positions)
            )
            null_in = tuple(spec.columns.index(c) for c in spec.nullable if c in spec.columns)
            id_at = spec.columns.index(spec.id_column) if spec.id_column else None
            seen = IdBitmap()
            bits = seen.bits
            convert, batch_rows, reject = self.convert, self.batch_rows, self._reject
            out: list[str] = []  # CSV text of the current chunk
            write = self._writer(out, bool(spec.nullable))
            rows: list[Sequence[Any]] = []
            line_no = reader.line_num + 1
            flag[0] = False

            while True:
                try:
                    for row in reader:
                        start, line_no = line_no, reader.line_num + 1
                        if not row:  # a blank line carries no record
                            continue
                        read += 1
                        if flag[0]:
                            repaired += 1
                            flag[0] = False
                        if len(row) != width:
                            reject(raw, start, line_no, f"expected {width} fields, got {len(row)}")
                            continue
                        if reorder is not None:
                            row = list(reorder(row))
                        try:
                            if "null" in row:
                                self._nulls(row, raw.text(start, line_no), null_in)
                            if id_at is not None:
                                row_id = int(row[id_at])
                                if not 0 < row_id <= INT4_MAX:
                                    raise Reject(f"id {row_id} out of range")
                                byte, bit = row_id >> 3, 1 << (row_id & 7)
                                if byte < len(bits):  # IdBitmap.add, inlined (hot path)
                                    old = bits[byte]
                                    if old & bit:
                                        raise Reject(f"duplicate id {row_id}")
                                    bits[byte] = old | bit
                                else:
                                    if not seen.add(row_id):
                                        raise Reject(f"duplicate id {row_id}")
                                    bits = seen.bits
                                row[id_at] = row_id
                            rows.append(convert(row))
                        except Reject as exc:
                            reject(raw, start, line_no, exc.reason)
                            continue
                        except (ValueError, TypeError, OverflowError) as exc:
                            reject(raw, start, line_no, f"bad value: {exc}")
                            continue
                        if len(rows) >= batch_rows:
                            write(rows)
                            stats.loaded += len(rows)
                            rows.clear()
                            raw.skip_to(line_no)
                            if sum(map(len, out)) >= self.chunk_bytes or self._rejects:
                                yield self._chunk(out, raw_file)
                    break
                except csv.Error as exc:  # e.g. a NUL byte, a runaway quote
                    read += 1
                    start, line_no = line_no, reader.line_num + 1
                    reject(raw, start, line_no, f"unparseable CSV: {exc}")
            write(rows)
            stats.loaded += len(rows)
            if out or self._rejects:
                yield self._chunk(out, raw_file)
        finally:
            raw_file.close()
            stats.read, stats.repaired = read, repaired
            stats.parse_seconds = time.perf_counter() - started

    @staticmethod
    def _writer(out: list[str], nullable: bool) -> Callable[[list[Sequence[Any]]], None]:
        if not nullable:
            return csv.writer(
                _Appender(out), quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n"
            ).writerows

        def write(rows: list[Sequence[Any]]) -> None:
            if rows:
                out.append("\n".join(map(csv_line, rows)))
                out.append("\n")

        return write

    def _nulls(self, row: list[Any], raw: str, nullable: tuple[int, ...]) -> None:
        """Bare null -> None in nullable columns, Reject elsewhere; quoted
        "null" stays a string (see the module docstring)."""
        if '"null"' not in raw:  # the common case: every 'null' value is bare
            for i in nullable:
                if row[i] == "null":
                    row[i] = None
            if "null" in row:
                raise Reject(f"{self.spec.columns[row.index('null')]} is null")
            return
        quoted = quoted_fields(raw)
        for i, value in enumerate(row):
            if value != "null" or (i < len(quoted) and quoted[i]):
                continue
            if i not in nullable:
                raise Reject(f"{self.spec.columns[i]} is null")
            row[i] = None

    def _chunk(self, out: list[str], raw_file: io.BufferedReader) -> Chunk:
        data = "".join(out).encode("utf-8")
        out.clear()
        rows, self._sent = self.stats.loaded - self._sent, self.stats.loaded
        chunk = Chunk(data, rows, self._rejects[:], raw_file.tell())
        self._rejects.clear()
        return chunk


class _Appender:
    """A file-like `write` that appends to a list (csv.writer's target)."""

    __slots__ = ("write",)

    def __init__(self, out: list[str]) -> None:
        self.write = out.append
