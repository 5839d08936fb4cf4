"""What a load leaves behind: load-report.json (per-file counts and timings,
step timings, totals) and rejects.csv (file, line, reason, raw text)."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .csv_parse import FileStats, RejectRow


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
