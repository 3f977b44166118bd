"""Supervisor's entry for a worker colour: exec the worker from the release the colour points at.

    python /repo/deploy/launch.py <blue|green> [worker args...]
    python /repo/deploy/launch.py shadow


Run as a script, not a module, and standard library only: it must not import the project's
packages, because it decides which copy of them runs. It resolves
``$BATON_HOME/var/releases/colors/<color>`` (see deploy/releases.py), exports ``BATON_RELEASE``,
``BATON_CODE_DIR`` and ``PYTHONPATH`` (the release first), changes into the release and
``exec``s ``python -m worker --color <color> ...`` so that the pid supervisor manages is the
worker's own and its signals reach the worker directly. `shadow` is a pointer like a colour's
(``colors/shadow``, set by `baton deploy --shadow`): it execs ``python -m worker.shadow``, the
release's shadow evaluator, which trades nothing (docs/deploys.md, "Shadow deploys").

Exit codes: 2 usage, 4 no BATON_HOME or no release for the colour.
"""

from __future__ import annotations

import json
import os
import sys

# state.keys.COLORS, spelled again because this script imports no project package (a test
# pins the two equal).
COLORS = ("blue", "green")
# deploy.releases.SHADOW, spelled again for the same reason.
SHADOW = "shadow"
EXIT_USAGE = 2
EXIT_NO_RELEASE = 4


def _fail(code: int, message: str) -> int:
    print(f"launch: {message}", file=sys.stderr, flush=True)
    return code


def _release_id(path: str) -> str:
    """The id from the release's manifest, or its directory name when the manifest is unreadable."""
    try:
        with open(os.path.join(path, "RELEASE.json"), encoding="utf-8") as f:
            release_id = json.load(f).get("id")
        if isinstance(release_id, str) and release_id:
            return release_id
    except (OSError, ValueError, AttributeError):
        pass
    return os.path.basename(path)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in (*COLORS, SHADOW):
        usage = f"usage: launch.py <{'|'.join(COLORS)}> [worker args...] | launch.py {SHADOW}"
        return _fail(EXIT_USAGE, usage)
    color, extra_args = argv[0], argv[1:]
    home = os.environ.get("BATON_HOME", "")
    if not home:
        return _fail(EXIT_NO_RELEASE, "BATON_HOME is not set; it names the directory holding var/releases")
    home = os.path.abspath(home)  # we chdir below; the worker must see the same home
    pointer = os.path.join(home, "var", "releases", "colors", color)
    path = os.path.realpath(pointer)
    if not os.path.isdir(path):  # no pointer, or a dangling one
        return _fail(
            EXIT_NO_RELEASE,
            f"colour {color} points at no release (run 'make deploy' or 'make run' to stage one)"
            if color != SHADOW
            else "the shadow points at no release (`baton deploy --shadow N` points it)",
        )
    release_id = _release_id(path)

    os.environ["BATON_HOME"] = home
    os.environ["BATON_RELEASE"] = release_id
    os.environ["BATON_CODE_DIR"] = path
    python_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = path + (os.pathsep + python_path if python_path else "")
    os.chdir(path)
    sys.stderr.flush()
    if color == SHADOW:
        print(f"launch: shadow release {release_id} from {path}", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "worker.shadow", *extra_args])
    print(f"launch: worker-{color} release {release_id} from {path}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "worker", "--color", color, *extra_args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
