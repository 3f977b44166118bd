"""What every benchmark's JSON records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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
        **extra,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
