"""Shared ETL mechanics for the Atelier CSV exports (nothing service-specific).

A service loader describes each export file with a `FileSpec` and a converter
(row -> tuple, raising `Reject`), then calls `copy_file` for each file inside
one transaction. This module owns the parts every service needs:

* reading with the csv module while knowing each record's first line number
  (records may span lines), header mapping that ignores case, underscores and
  the old export's spaces after commas, and an optional per-line repair hook;
* rejects (wrong field count, duplicate ids, converter `Reject`s, unparseable
  records) written to `rejects.csv`, counts and timings to `load-report.json`;
* streaming converted rows to `COPY ... (FORMAT csv)` from a parser running in
  a child process, so Python parsing and the Postgres COPY run on different
  cores;
* the bulk-load session settings, index drop/rebuild, sequences past max id.

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

import asyncio
import csv
import io
import json
import multiprocessing
import operator
import queue
import re
import sys
import threading
import time
import traceback
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from itertools import islice, tee
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

INT4_MAX = 2**31 - 1


class Reject(Exception):
    """Raised by a converter: the row goes to rejects.csv with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EtlError(Exception):
    """A fatal problem with a whole file (missing, bad header): the load stops."""


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


# --------------------------------------------------------------------------- values

BOOL_TRUE_FALSE: dict[str, bool] = {"true": True, "false": False}
BOOL_0_1: dict[str, bool] = {"0": False, "1": True}
# default_style: mostly 1/0, sometimes true/false.
BOOL_ANY: dict[str, bool] = {**BOOL_TRUE_FALSE, **BOOL_0_1}


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_TEXT: dict[int, str] = {}
_HMS: list[str] = []
_MILLIS = [f".{i:03d}+00" for i in range(1000)]
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def epoch_ms_to_text(ms: int) -> str:
    """Epoch milliseconds -> timestamptz text in UTC, exact (integer arithmetic
    only, no float rounding): 1596080481467 -> '2020-07-30 03:41:21.467+00'."""
    if not _HMS:  # built on first use, not at import: 86,400 short strings
        _HMS.extend(
            f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
        )
    days, rem = divmod(ms, 86_400_000)
    day = _DAY_TEXT.get(days)
    if day is None:
        day = _DAY_TEXT[days] = date.fromordinal(_EPOCH_ORDINAL + days).isoformat() + " "
    seconds, millis = divmod(rem, 1000)
    return day + _HMS[seconds] + _MILLIS[millis]


def parse_timestamp(value: str, column: str = "date") -> str:
    """Epoch milliseconds, or 'YYYY-MM-DD' (older export, midnight UTC), as
    timestamptz text with an explicit UTC offset (session TimeZone is irrelevant)."""
    if value.isdigit():
        return epoch_ms_to_text(int(value))
    if _ISO_DAY.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            raise Reject(f"{column} {value!r} is not a valid date") from None
        return value + " 00:00:00+00"
    raise Reject(f"{column} {value!r} is neither epoch milliseconds nor YYYY-MM-DD")


# --------------------------------------------------------------------------- compact id sets/maps


class IdBitmap:
    """A growable set of positive ids, one bit each: 20M ids take 2.5 MB
    (a Python set would take about 1 GB). Ids past `dense_limit` (sparse
    outliers) go to a small set so that one huge id cannot allocate 256 MB."""

    def __init__(self, capacity: int = 1 << 20, dense_limit: int = 1 << 28) -> None:
        self.bits = bytearray((capacity >> 3) + 1)
        self._dense_limit = dense_limit
        self._sparse: set[int] = set()

    def add(self, i: int) -> bool:
        """Add id `i`; False if it was already there."""
        if i >= self._dense_limit:
            if i in self._sparse:
                return False
            self._sparse.add(i)
            return True
        byte, bit = i >> 3, 1 << (i & 7)
        bits = self.bits
        if byte >= len(bits):
            bits.extend(bytes(max(byte + 1, 2 * len(bits)) - len(bits)))
        old = bits[byte]
        if old & bit:
            return False
        bits[byte] = old | bit
        return True

    def __contains__(self, i: int) -> bool:
        if i >= self._dense_limit:
            return i in self._sparse
        byte = i >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (i & 7)))


def int_map(size: int = 0) -> array:
    """A compact id -> int32 map (0 = absent): array('i') indexed by id."""
    return array("i", bytes(4 * size))


def map_set(arr: array, i: int, value: int) -> None:
    """arr[i] = value, growing the array (doubling) when i is past its end."""
    if i >= len(arr):
        arr.frombytes(bytes(4 * (max(i + 1, 2 * len(arr)) - len(arr))))
    arr[i] = value


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
    `nullable` columns may hold bare `null` (-> None in, NULL out).
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
            write = self._writer(out, bool(null_in))
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


# --------------------------------------------------------------------------- reports


class LoadReport:
    """Collects per-file stats, step timings and rejects for one service load.

    rejects.csv is streamed (a bad file may have millions of rejects);
    load-report.json is written by `finish`."""

    def __init__(self, report_dir: Path, service: str) -> None:
        self.dir = Path(report_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.service = service
        self.files: dict[str, FileStats] = {}
        self.steps: dict[str, float] = {}
        self.started = time.perf_counter()
        # Closed by finish().
        self._rejects_file = open(self.dir / "rejects.csv", "w", newline="", encoding="utf-8")
        self._rejects = csv.writer(self._rejects_file)
        self._rejects.writerow(("file", "line", "reason", "raw"))

    def add_rejects(self, rows: Iterable[RejectRow]) -> None:
        self._rejects.writerows(rows)

    def add_file(self, stats: FileStats) -> None:
        self.files[stats.file] = stats

    def step(self, name: str, seconds: float) -> None:
        self.steps[name] = round(seconds, 3)

    def finish(
        self, status: str = "ok", error: str | None = None, quiet: bool = False
    ) -> dict[str, Any]:
        self._rejects_file.close()
        files = {}
        for name, s in self.files.items():
            d = asdict(s)
            d.pop("file")
            d["parse_seconds"] = round(s.parse_seconds, 3)
            d["seconds"] = round(s.seconds, 3)
            files[name] = d
        report: dict[str, Any] = {
            "service": self.service,
            "status": status,
            "error": error,
            "seconds": round(time.perf_counter() - self.started, 3),
            "files": files,
            "steps": self.steps,
            "totals": {
                k: sum(f[k] for f in files.values())
                for k in ("read", "loaded", "repaired", "rejected")
            },
            "rejects_file": str(self.dir / "rejects.csv"),
        }
        (self.dir / "load-report.json").write_text(json.dumps(report, indent=2) + "\n")
        if not quiet:
            print(summary_table(report), file=sys.stderr)
        return report


def summary_table(report: dict[str, Any]) -> str:
    head = ("file", "read", "loaded", "repaired", "rejected", "seconds")
    rows = [
        (name, f["read"], f["loaded"], f["repaired"], f["rejected"], f"{f['seconds']:.1f}")
        for name, f in report["files"].items()
    ]
    t = report["totals"]
    rows.append(
        ("total", t["read"], t["loaded"], t["repaired"], t["rejected"], f"{report['seconds']:.1f}")
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in report["steps"].items())
    status = report["status"] + (f": {report['error']}" if report.get("error") else "")
    return (
        f"{report['service']} load {status}\n"
        + "\n".join(lines)
        + (f"\nsteps: {steps}" if steps else "")
    )


# --------------------------------------------------------------------------- parsing workers

# Files smaller than this are parsed inline: spawning a parser process costs
# more than it saves.
PROCESS_MIN_BYTES = 16 << 20


def _finish_converter(convert: Converter) -> Any:
    result = getattr(convert, "result", None)
    return result() if callable(result) else None


def _parse_worker(
    pipe: Any, path: Path, spec: FileSpec, make_converter: Callable[[Any], Converter], context: Any
) -> None:
    """Child process body: parse one file and stream chunks back to the loader."""
    try:
        convert = make_converter(context)
        parser = FileParser(path, spec, convert)
        for chunk in parser.chunks():
            pipe.send(("chunk", chunk))
        pipe.send(("done", parser.stats, _finish_converter(convert)))
    except EtlError as exc:
        pipe.send(("fatal", str(exc)))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


class ParseJob:
    """One file being parsed, in a spawned child process or inline.

    A child starts parsing as soon as the job is created, and a drain thread
    queues its chunks in memory, so the next file can be parsed while the
    loader's single connection is still COPYing the previous one (the load is
    one transaction, so COPYs cannot overlap each other). `close()` always."""

    def __init__(
        self,
        data_dir: Path,
        spec: FileSpec,
        make_converter: Callable[[Any], Converter],
        context: Any,
        in_process: bool | None = None,
    ) -> None:
        self.spec = spec
        self.path = Path(data_dir) / spec.name
        if not self.path.is_file():
            raise EtlError(f"{spec.name}: file not found at {self.path}")
        self.size = self.path.stat().st_size
        if in_process is None:
            in_process = self.size >= PROCESS_MIN_BYTES
        self.stats: FileStats | None = None
        self.result: Any = None
        self._make_converter, self._context = make_converter, context
        self._proc: Any = None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        if in_process:
            self._start_process()

    def _start_process(self) -> None:
        # spawn, not fork: the loader process holds an event loop, sockets and
        # executor threads that a forked child must not inherit.
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_parse_worker,
            name=f"parse {self.spec.name}",
            daemon=True,
            args=(sender, self.path, self.spec, self._make_converter, self._context),
        )
        self._proc.start()
        sender.close()
        self._receiver = receiver
        self._thread = threading.Thread(
            target=self._drain, name=f"drain {self.spec.name}", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                msg = self._receiver.recv()
            except (EOFError, OSError):
                self._queue.put(("eof",))
                return
            self._queue.put(msg)
            if msg[0] != "chunk":
                return

    async def chunks(self) -> AsyncIterator[Chunk]:
        if self._proc is None:
            convert = self._make_converter(self._context)
            parser = FileParser(self.path, self.spec, convert)
            for chunk in parser.chunks():
                yield chunk
            self.stats, self.result = parser.stats, _finish_converter(convert)
            return
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, self._queue.get)
            if msg[0] == "chunk":
                yield msg[1]
            elif msg[0] == "done":
                self.stats, self.result = msg[1], msg[2]
                return
            elif msg[0] == "fatal":
                raise EtlError(msg[1])
            elif msg[0] == "error":
                raise EtlError(f"{self.spec.name}: parser failed:\n{msg[1]}")
            else:
                raise EtlError(
                    f"{self.spec.name}: parser process died (exit code {self._proc.exitcode})"
                )

    def close(self) -> None:
        """Stop the child (e.g. after a failed COPY) and release the pipe."""
        if self._proc is None:
            return
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._receiver.close()
        self._thread.join(timeout=5)


def _progress_bar(total: int, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        leave=False,
        disable=not sys.stderr.isatty(),
    )


async def copy_parsed(
    conn: asyncpg.Connection, job: ParseJob, report: LoadReport, *, freeze: bool = True
) -> Any:
    """COPY a ParseJob's rows into its table, record its rejects and stats in
    `report`; returns the converter's result(). Closes the job."""
    started = time.perf_counter()
    spec = job.spec
    bar = _progress_bar(job.size, spec.name)

    async def source() -> AsyncIterator[bytes]:
        done = 0
        async for chunk in job.chunks():
            if chunk.rejects:
                report.add_rejects(chunk.rejects)
            bar.update(chunk.position - done)
            done = chunk.position
            if chunk.data:
                yield chunk.data

    try:
        await conn.copy_to_table(
            spec.table,
            source=source(),
            columns=list(spec.target_columns),
            format="csv",
            freeze=freeze,
        )
    finally:
        bar.close()
        await asyncio.to_thread(job.close)
    stats = job.stats
    assert stats is not None
    stats.seconds = time.perf_counter() - started
    report.add_file(stats)
    return job.result


async def copy_file(
    conn: asyncpg.Connection,
    data_dir: Path,
    spec: FileSpec,
    make_converter: Callable[[Any], Converter],
    context: Any,
    report: LoadReport,
    *,
    in_process: bool | None = None,
    freeze: bool = True,
) -> Any:
    """Parse `data_dir/spec.name` and COPY the converted rows into spec.table.

    `make_converter(context)` builds the converter where the parsing runs (a
    spawned child when `in_process`, default: for files of 16 MB or more), so
    both must be picklable: a module-level function and plain data such as
    arrays. The converter may carry a `result()` callable whose value (e.g.
    an id -> product map) is returned here. `freeze` needs the table
    truncated in the same transaction. To parse the next file while this one
    is COPYed, create its ParseJob first and use copy_parsed()."""
    job = ParseJob(data_dir, spec, make_converter, context, in_process)
    return await copy_parsed(conn, job, report, freeze=freeze)


# --------------------------------------------------------------------------- Postgres helpers

BULK_SETTINGS = {
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "synchronous_commit": "off",
    "work_mem": "256MB",  # the aggregate GROUP BYs hash in memory
}


async def bulk_session(conn: asyncpg.Connection) -> None:
    """SET LOCAL the bulk-load settings (call inside the load transaction)."""
    for name, value in BULK_SETTINGS.items():
        await conn.execute(f"SET LOCAL {name} = '{value}'")


_INDEX_NAME = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?IF\s+NOT\s+EXISTS\s+([A-Za-z_][\w$]*)",
    re.IGNORECASE,
)


def indexes_file(migrations_dir: Path) -> Path | None:
    """The service's `NNN_indexes.sql` (secondary indexes), if any."""
    found = sorted(Path(migrations_dir).glob("[0-9][0-9][0-9]_indexes.sql"))
    return found[-1] if found else None


def index_names(sql: str) -> list[str]:
    """Names of the `CREATE INDEX IF NOT EXISTS name` statements in `sql`."""
    return _INDEX_NAME.findall(re.sub(r"--[^\n]*", "", sql))


async def drop_indexes(conn: asyncpg.Connection, sql_file: Path) -> list[str]:
    """Drop the secondary indexes that `sql_file` creates (before a COPY)."""
    names = index_names(await asyncio.to_thread(Path(sql_file).read_text))
    for name in names:
        await conn.execute(f'DROP INDEX IF EXISTS "{name}"')
    return names


async def create_indexes(conn: asyncpg.Connection, sql_file: Path) -> None:
    """Rebuild them by running the file (after the COPY)."""
    await conn.execute(await asyncio.to_thread(Path(sql_file).read_text))


async def drop_primary_keys(
    conn: asyncpg.Connection, tables: Iterable[str]
) -> list[tuple[str, str, str]]:
    """Drop the tables' primary keys for a bulk load (ids must then be checked
    unique while parsing, as FileParser does); returns what
    restore_primary_keys needs. Tables with incoming foreign keys cannot."""
    keys = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'p' AND conrelid = ANY($1::regclass[])",
        list(tables),
    )
    for table, name, _ in keys:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return [tuple(k) for k in keys]


async def restore_primary_keys(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str, str]]
) -> None:
    for table, name, definition in keys:
        await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


async def truncate(conn: asyncpg.Connection, tables: Iterable[str]) -> None:
    await conn.execute(f"TRUNCATE {', '.join(tables)}")


async def reset_sequences(
    conn: asyncpg.Connection, tables: Iterable[str], id_column: str = "id"
) -> dict[str, int]:
    """Move each table's identity sequence so the next value is max(id) + 1
    (1 for an empty table). Returns the next value per table."""
    nxt: dict[str, int] = {}
    for table in tables:
        nxt[table] = await conn.fetchval(
            f"SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({id_column}), 0) + 1,"
            f" false) FROM {table}",
            table,
            id_column,
        )
    return nxt


# --- the whole load, the same for every service ------------------------------------

LoadFiles = Callable[["asyncpg.Connection", Path, "LoadReport", Any], Any]


async def load_service(
    service: str,
    namespace: str,
    migrations: Path,
    load_files: LoadFiles,
    dsn: str,
    data_dir: Path | str,
    report_dir: Path | str,
    *,
    in_process: bool | None = None,
    quiet: bool = False,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Replace a service's data with the files in `data_dir` in one transaction
    (a failed load leaves the previous data), write load-report.json and
    rejects.csv into `report_dir`, then flush the service's cache: after the
    commit, so that a reader that refilled it mid-load with old rows is dropped
    too. Returns the report."""
    from .cache import flush_namespace
    from .db import ensure_database, migrate
    from .settings import Settings

    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    report = LoadReport(Path(report_dir), service)
    try:
        await migrate(conn, migrations)
        async with conn.transaction():
            await load_files(conn, Path(data_dir), report, in_process)
    except BaseException as exc:
        report.finish("failed", f"{type(exc).__name__}: {exc}", quiet=quiet)
        raise
    finally:
        await conn.close()
    started = time.perf_counter()
    redis_url = redis_url or Settings.from_env(service).redis_url
    if not await flush_namespace(redis_url, namespace, timeout_ms=500):
        print(
            f"warning: {service} cache flush did not reach Redis at {redis_url}; running "
            "processes drop their local tier within a lease and Redis entries expire with "
            "their TTL",
            file=sys.stderr,
        )
    report.step("cache_flush", time.perf_counter() - started)
    return report.finish(quiet=quiet)


def loader_main(
    service: str, load: Callable[..., Any], description: str, argv: list[str] | None
) -> None:
    """The command line every service's loader shares."""
    import argparse

    from .settings import database_url

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=Path("data") / service)
    parser.add_argument("--report", type=Path, default=Path("data/reports") / service)
    parser.add_argument(
        "--dsn",
        default=None,
        help=f"default: {service.upper()}_DATABASE_URL, DATABASE_URL, or the local one",
    )
    parser.add_argument("--redis", default=None, help="default: REDIS_URL or the local one")
    parser.add_argument("--inline", action="store_true", help="parse every file in this process")
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            load(
                args.dsn or database_url(service),
                args.data,
                args.report,
                redis_url=args.redis,
                in_process=False if args.inline else None,
            )
        )
    except EtlError as exc:
        sys.exit(f"load failed: {exc}")


async def rebuild_after_copy(
    conn: asyncpg.Connection,
    report: LoadReport,
    index_sql: Path | None,
    analyze: Sequence[str],
    sequences: Sequence[str],
) -> None:
    """After the bulk COPY: the secondary indexes, fresh statistics, then the id
    sequences (last: setval is not undone by a rollback), each timed in the report."""
    started = time.perf_counter()
    if index_sql:
        await create_indexes(conn, index_sql)
    report.step("indexes", time.perf_counter() - started)
    started = time.perf_counter()
    await conn.execute(f"ANALYZE {', '.join(analyze)}")
    report.step("analyze", time.perf_counter() - started)
    started = time.perf_counter()
    await reset_sequences(conn, sequences)
    report.step("sequences", time.perf_counter() - started)
