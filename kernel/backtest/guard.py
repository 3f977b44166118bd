"""The look-ahead guard: a backtest holds the whole history in memory, so a strategy that reads
anything but its input could read the future. Two checks refuse it:

- every input is checked to be built from candles that had closed by its time (`check_input`,
  cheap: the engine hands TickInputs a view of the history that ends there, and this checks
  the input against that end);
- while strategy code runs inside a backtest (`Guard.call`), an audit hook (sys.addaudithook)
  refuses what no pure function of its input needs: opening files (the history on disk),
  frames (sys._getframe, a traceback's or a generator's frame: the way up to the engine's
  candle list), the heap (gc.get_objects, get_referrers), threads, processes, sockets, ctypes
  and imports of modules not loaded yet. The refusal is raised inside the strategy *and*
  remembered, so a strategy that swallows the exception is refused all the same.

An audit hook cannot be removed: it is installed once per process, on the first guarded call,
and costs one check of a flag when no guarded call is running. It is a tripwire for a
strategy that reads the future by accident or by a shortcut, not a sandbox against one
written to defeat it (Python has no such thing in-process).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from baton.errors import LookAheadError
from kernel.strategy_api import SlotInput

# Audit events refused while strategy code runs (exact names, then prefixes).
REFUSED_EVENTS = frozenset(
    {
        "open",
        "sys._getframe",
        "sys._getframemodulename",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.settrace",
        "sys.setprofile",
        "sys.addaudithook",
        "object.__getattr__",  # a traceback's, generator's or coroutine's frame, a function's code
        "import",
        "_thread.start_new_thread",
        "os.system",
        "os.exec",
        "os.spawn",
        "os.fork",
        "os.posix_spawn",
        "os.listdir",
        "os.scandir",
        "pathlib.Path.glob",
        "shutil.copyfile",
        "urllib.Request",
        "mmap.__new__",
        "marshal.load",
        "marshal.loads",
        "pickle.find_class",
    }
)
REFUSED_PREFIXES = ("gc.", "socket.", "subprocess.", "ctypes.", "sqlite3.", "winreg.", "http.", "ftplib.")
# While a strategy module's own code runs (loading it: `load_module`) only I/O is refused: the
# engine and its history do not exist yet, and module-level code may build classes (namedtuple
# and dataclass use frames). Reading the history file at import is the look-ahead to refuse.
LOAD_ALLOWED = frozenset(
    {"sys._getframe", "sys._getframemodulename", "object.__getattr__", "import", "sys._current_frames"}
)


class _State(threading.local):
    """Per thread: the strategy whose code runs under the guard (None: no guarded call), and
    what it did that was refused first."""

    name: str | None = None
    refused: str = ""
    loading: bool = False


_state = _State()
_installed = False
_install_lock = threading.Lock()


def _describe(event: str, args: tuple[Any, ...]) -> str:
    if event == "open" and args:
        return f"opened a file ({args[0]!r})"
    if event == "object.__getattr__" and len(args) >= 2:
        return f"reached for {type(args[0]).__name__}.{args[1]} (frames and code are not its input)"
    if event == "import" and args:
        return f"imported a module not loaded yet ({args[0]!r})"
    if event.startswith("gc."):
        return f"walked the heap ({event})"
    if event in ("sys._getframe", "sys._current_frames", "sys._getframemodulename"):
        return f"walked the call stack ({event})"
    return f"did {event}"


def _hook(event: str, args: tuple[Any, ...]) -> None:
    st = _state
    if st.name is None:
        return
    if event in REFUSED_EVENTS or event.startswith(REFUSED_PREFIXES):
        if st.loading and (event in LOAD_ALLOWED or event.startswith("gc.")):
            return
        what = _describe(event, args) + (" while its module loaded" if st.loading else "")
        if not st.refused:
            st.refused = what
        raise LookAheadError(f"strategy {st.name!r} {what} during a backtest: refused (look-ahead guard)")


def install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


class Guard:
    """Runs a strategy's functions with the audit hook armed; `refused` keeps the first thing
    refused (the engine stops the backtest on it, whatever the strategy did with the error)."""

    def __init__(self, name: str, loading: bool = False) -> None:
        self.name = name
        self.loading = loading  # the module's own code runs (load_module): only I/O is refused
        self.refused = ""  # the first refusal's message, kept until the backtest ends
        install()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        st = _state
        outer = (st.name, st.loading)
        st.name, st.refused, st.loading = self.name, "", self.loading
        try:
            return fn(*args)
        finally:
            refused = st.refused
            st.name, st.loading = outer
            st.refused = ""
            if refused:
                msg = (
                    f"strategy {self.name!r} {refused} during a backtest: refused, nothing of this "
                    "backtest is reported (a strategy must read only its input)"
                )
                self.refused = self.refused or msg
                raise LookAheadError(msg)


def guarded(strategy: Any, name: str) -> tuple[Any, Guard]:
    """A stand-in for the strategy module whose evaluate, needs_quotes and quotes_from_ms run
    under the guard (returned with it); every other attribute (API, EXITS, CANDLES,
    DEFAULTS...) is the module's."""
    guard = Guard(name)
    attrs = {k: getattr(strategy, k) for k in dir(strategy) if not k.startswith("__")}
    for fn_name in ("evaluate", "needs_quotes", "quotes_from_ms"):
        fn = attrs.get(fn_name)
        if callable(fn):
            attrs[fn_name] = _wrap(guard, fn)
    attrs["__name__"] = getattr(strategy, "__name__", name)
    return _Namespace(attrs), guard


class _Namespace:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.__dict__.update(attrs)


def _wrap(guard: Guard, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        return guard.call(fn, *args)

    return run


def check_input(inp: SlotInput, newest_open_ms: int, open_ms: int) -> None:
    """An input the engine built at `inp.now_ms` holds nothing from after it: the newest candle
    it was built from (`newest_open_ms`) and the window's first (`open_ms`) had closed by then
    (a 1 s candle opening at t closes at t + 1 s), and its bars open no later than now.
    Raises LookAheadError naming what was wrong."""
    now = inp.now_ms
    if newest_open_ms + 1000 > now:
        raise LookAheadError(
            f"input of slot {inp.slot_id} at {now} was built from a candle opening at "
            f"{newest_open_ms}, which closes after the input's time"
        )
    if open_ms + 1000 > now or inp.window_start_ms > now:
        raise LookAheadError(
            f"input of slot {inp.slot_id} at {now} holds the open of a window whose first candle "
            f"(opening at {open_ms}) had not closed"
        )
    for iv, bars in inp.bars.items():
        if bars and bars[-1].open_ms > now:
            raise LookAheadError(
                f"input of slot {inp.slot_id} at {now} holds a {iv} bar opening at {bars[-1].open_ms}"
            )


def load_module(name: str, source: bytes, filename: str, module_name: str) -> types.ModuleType:
    """A strategy module made from its source, its own code run under the guard (only I/O
    refused: a module that reads the history file when it loads reads the future as surely
    as one that reads it in evaluate). The modules it imports are imported first, outside
    the guard (the import system reads files); it is not left in sys.modules."""
    code = compile(source, filename, "exec")
    for mod in _imports(ast.parse(source, filename)):
        with contextlib.suppress(Exception):  # the module's own run raises it, named
            importlib.import_module(mod)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module  # dataclasses and typing look their module up while it runs
    try:
        Guard(name, loading=True).call(exec, code, module.__dict__)
    finally:
        sys.modules.pop(module_name, None)
    return module


def _imports(tree: ast.AST) -> list[str]:
    """The absolute module names a module imports, anywhere in it (an import inside evaluate
    would otherwise be a module loaded under the guard: refused)."""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    return out
