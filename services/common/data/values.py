"""Field values in the CSV exports, for the loaders' converters: the two
errors (a rejected row, a fatal file problem), booleans, timestamps, and
compact id sets and maps (millions of ids in a few MB, cheap to hand to a
child process)."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from datetime import date
from typing import NoReturn

INT4_MAX = 2**31 - 1


class Reject(Exception):
    """Raised by a converter: the row goes to rejects.csv with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EtlError(Exception):
    """A fatal problem with a whole file (missing, bad header): the load stops."""


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


@dataclass
class ParentFile:
    """A parent file's rejected rows, as its child rows are checked against it
    (subclasses add which ids were loaded): a child of a rejected row is
    rejected naming why, a child of an absent one as unknown."""

    kind: str  # "review", "question", ...
    rejected: dict[int, str] = field(default_factory=dict)

    def reject(self, i: int, reason: str) -> NoReturn:
        """Reject row `i` of the parent file, remembering why."""
        self.rejected[i] = reason
        raise Reject(reason)

    def reason(self, i: int) -> str:
        """Why a child of parent `i` is rejected."""
        why = self.rejected.get(i)
        return f"{self.kind} {i} rejected: {why}" if why else f"unknown {self.kind} {i}"
