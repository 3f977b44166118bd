"""What every benchmark's JSON records about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SPEED_LOOP = 1_000_000


def python_speed_ms(repeats: int = 5) -> float:
    """Milliseconds this machine takes, at best of `repeats`, for a fixed pure-Python loop
    (SPEED_LOOP additions). The VMs the benchmarks run on change speed from hour to hour (the
    same tick's CPU time varied by 1.8x within one session): this number, taken with every
    run, says how fast the machine was, so runs on different days can be compared."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        total = 0
        for i in range(SPEED_LOOP):
            total += i
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 2)


def command_line(name: str) -> str:
    """How this run of benchmark `name` was started, for its JSON."""
    return " ".join([Path(sys.executable).name, "-m", f"bench.{name}", *sys.argv[1:]])


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU model, cores, Python, platform and the UTC date, plus the benchmark's own `extra`."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "python_speed_ms": python_speed_ms(),
        **extra,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_line(m: dict[str, Any]) -> str:
    """The machine as one line under a benchmark's table (what its JSON holds, in short)."""
    parts = [f"{m['cpu_model']}, {m['cores']} cores, Python {m['python']}"]
    if "python_speed_ms" in m:
        parts.append(f"speed {m['python_speed_ms']:.1f} ms per {SPEED_LOOP:,} Python additions")
    if "redis_version" in m:
        parts.append(
            f"Redis {m['redis_version']} (appendonly {m['appendonly']}, appendfsync {m['appendfsync']})"
        )
    if "loadavg_1m_start" in m:
        parts.append(
            f"1-min load average {m['loadavg_1m_start']:.2f} at the start, {m['loadavg_1m_max']:.2f} at most"
        )
    return f"machine: {', '.join(parts)}, {m['date_utc']}"


def short_machine_line(m: dict[str, Any], *more: str) -> str:
    """The shorter machine line some benchmarks print: CPU, cores, Python, `more`, the date."""
    parts = [m["cpu_model"], f"{m['cores']} cores", f"Python {m['python']}", *more, m["date_utc"]]
    return "machine: " + ", ".join(parts)


def publish(result: dict[str, Any], table: str, json_out: Path, machine: str | None = None) -> None:
    """Print a benchmark's table and machine line (`machine`, else `machine_line` of its JSON's),
    and write its JSON results."""
    print()
    print(table)
    print("\n" + (machine or machine_line(result["machine"])))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {json_out}")


class LoadSampler:
    """The 1-minute load average every few seconds while a benchmark runs (the machine is shared:
    its JSON says how busy it was)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loadavg")

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.every_s + 1)
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {
            "loadavg_1m_start": round(self.samples[0], 2),
            "loadavg_1m_max": round(max(self.samples), 2),
            "loadavg_1m_mean": round(statistics.fmean(self.samples), 2),
            "loadavg_1m_end": round(self.samples[-1], 2),
        }
