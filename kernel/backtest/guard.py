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

Strategy code is not only its functions: an exception's __repr__, a float subclass's
comparisons in an answer, a CANDLES mapping's items() are strategy code the kernel would run
later, with the guard off and the engine's history on the stack. So everything the kernel
reads of a strategy goes through the guard once and comes out as plain values (`guarded`):
the declarations (API, EXITS, CANDLES, DEFAULTS, PARAM_BOUNDS) when the backtest starts, each
answer rebuilt as an exact Buy, Exit or Pass of builtin values, needs_quotes as a bool,
quotes_from_ms as an int, and an exception as a kernel.raised.Raised holding its repr,
taken under the guard. What stays possible: a finalizer (__del__, weakref callbacks) that runs
when the garbage collector gets to it, outside any guarded call.

The shadow (worker/shadow.py) arms the same hook in its I/O mode (`io_only`): a release
under test runs beside live money, so its strategy may open no file (var/secrets/ holds the
venue key), socket or process; it may walk frames and build classes, as the live worker lets
it (the shadow holds no history to read ahead in). Refused there: StrategyIORefused.

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

from baton.errors import BacktestError, LookAheadError, StrategyIORefused
from kernel.candle_cache import declared_candles
from kernel.raised import Raised, safe_repr
from kernel.raised import plain as plain_raised
from kernel.strategy_api import Buy, Exit, Pass, SlotInput

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
# What the I/O mode (`Guard(io_only=True)`: the shadow's) refuses: files, directories, sockets,
# processes, threads (they would run outside the guard: its state is per thread) and imports
# of modules not loaded yet (the import system reads files; `import_ahead` loads them first).
IO_EVENTS = frozenset(
    {
        "open",
        "import",
        "_thread.start_new_thread",
        "mmap.__new__",
        "webbrowser.open",
        "tempfile.mkstemp",
        "tempfile.mkdtemp",
        "glob.glob",
    }
)
IO_PREFIXES = (
    "os.",
    "socket.",
    "subprocess.",
    "_posixsubprocess.",
    "ctypes.",
    "sqlite3.",
    "shutil.",
    "pathlib.",
    "fcntl.",
    "http.",
    "urllib.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
)
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
    io_only: bool = False


_state = _State()
_installed = False
_install_lock = threading.Lock()


_PROCESS_PREFIXES = ("subprocess.", "_posixsubprocess.", "os.exec", "os.spawn", "os.posix_spawn")


def _describe(event: str, args: tuple[Any, ...]) -> str:
    if event == "open" and args:
        return f"opened a file ({args[0]!r})"
    if event == "object.__getattr__" and len(args) >= 2:
        return f"reached for {type(args[0]).__name__}.{args[1]} (frames and code are not its input)"
    if event == "import" and args:
        return f"imported a module not loaded yet ({args[0]!r})"
    if event.startswith(("socket.", "http.", "urllib.", "ftplib.", "smtplib.")):
        return f"reached the network ({event}{_first(args)})"
    if event.startswith(_PROCESS_PREFIXES) or event in ("os.system", "os.fork"):
        return f"started a process ({event})"
    if event.startswith("gc."):
        return f"walked the heap ({event})"
    if event in ("sys._getframe", "sys._current_frames", "sys._getframemodulename"):
        return f"walked the call stack ({event})"
    return f"did {event}"


def _first(args: tuple[Any, ...]) -> str:
    """The first argument of an event that is not an object (an address, a command), shown."""
    for a in args[1:2]:
        if isinstance(a, (str, bytes, tuple, list)):
            return f" {a!r}"[:200]
    return ""


def _hook(event: str, args: tuple[Any, ...]) -> None:
    st = _state
    if st.name is None:
        return
    if st.io_only:
        if event in IO_EVENTS or event.startswith(IO_PREFIXES):
            what = _describe(event, args)
            if not st.refused:
                st.refused = what
            raise StrategyIORefused(f"strategy {st.name!r} {what} in a shadow: refused (I/O guard)")
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
    refused (the engine stops the backtest on it, whatever the strategy did with the error).
    `io_only` (the shadow's): only I/O is refused, raising StrategyIORefused."""

    def __init__(self, name: str, loading: bool = False, io_only: bool = False) -> None:
        self.name = name
        self.loading = loading  # the module's own code runs (load_module): only I/O is refused
        self.io_only = io_only
        self.refused = ""  # the first refusal's message, kept until the backtest ends
        install()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        st = _state
        outer = (st.name, st.loading, st.io_only)
        st.name, st.refused, st.loading, st.io_only = self.name, "", self.loading, self.io_only
        try:
            return fn(*args)
        finally:
            refused = st.refused
            st.name, st.loading, st.io_only = outer
            st.refused = ""
            if refused:
                if self.io_only:
                    # Raised even when the strategy swallowed the refusal: its answer is this.
                    raise StrategyIORefused(
                        f"strategy {self.name!r} {refused} in a shadow: refused (a strategy reads "
                        "only its input; the shadow holds no credentials)"
                    )
                msg = (
                    f"strategy {self.name!r} {refused} during a backtest: refused, nothing of this "
                    "backtest is reported (a strategy must read only its input)"
                )
                self.refused = self.refused or msg
                raise LookAheadError(msg)


def guarded(strategy: Any, name: str, io_only: bool = False) -> tuple[Any, Guard]:
    """A stand-in for the strategy module (returned with its guard) holding only what the
    kernel reads of it, as plain values read under the guard once: its declarations, and
    evaluate, needs_quotes and quotes_from_ms wrapped to run under the guard and hand back
    plain answers (`_plain_answer`, bool, int) or raise a kernel.raised.Raised (the
    exception's repr, taken under the guard: the kernel passes it on as it is).
    Raises LookAheadError when reading a declaration is refused, BacktestError when it
    raises. `io_only`: the shadow's guard (I/O refused, StrategyIORefused)."""
    guard = Guard(name, io_only=io_only)
    try:
        attrs = guard.call(_declarations, strategy)
    except (LookAheadError, StrategyIORefused):
        raise
    except Exception as e:
        raise BacktestError(f"strategy {name!r}: its declarations cannot be read: {safe_repr(e)}") from None
    fns = attrs.pop("_fns")
    for fn_name, plain in (("evaluate", _plain_answer), ("needs_quotes", bool), ("quotes_from_ms", int)):
        fn = fns.get(fn_name)
        if fn is not None:
            attrs[fn_name] = _wrap(guard, fn, plain)
    attrs["__name__"] = name
    return _Namespace(attrs), guard


class _Namespace:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.__dict__.update(attrs)


_NO = object()


def _declarations(strategy: Any) -> dict[str, Any]:
    """What the kernel reads of a strategy module, as builtin values (run under the guard)."""
    # (its keys and counts copied too: a str subclass's __hash__ would run in every lookup)
    out: dict[str, Any] = {"CANDLES": _plain(declared_candles(strategy))}
    # exits_on's rule (kernel/exits.py): EXITS is True, nothing else
    out["EXITS"] = getattr(strategy, "EXITS", False) is True
    for decl in ("API", "DEFAULTS", "PARAM_BOUNDS"):
        v = getattr(strategy, decl, _NO)
        if v is not _NO:
            out[decl] = _plain(v)
    fns: dict[str, Any] = {}
    for fn_name in ("evaluate", "needs_quotes", "quotes_from_ms"):
        fn = getattr(strategy, fn_name, None)
        if fn is not None and callable(fn):
            fns[fn_name] = fn
    out["_fns"] = fns
    return out


class _Opaque:
    """An answer that is none of None, Buy, Exit or Pass, as its repr (taken under the guard):
    the kernel refuses it as it would the original, without running its code."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_ATOMS = (type(None), bool, int, float, str)


def _plain(v: Any) -> Any:
    """`v` as builtin values: subclasses of int, float and str copied to the exact types (by
    the base types' own methods: no subclass code runs), containers rebuilt; anything else
    as an opaque text of its repr."""
    t = type(v)
    if t in _ATOMS:
        return v
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, int):
        return int.__int__(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in dict.items(v)}
    if isinstance(v, (list, tuple)):
        items = [_plain(x) for x in (list.__iter__(v) if isinstance(v, list) else tuple.__iter__(v))]
        return items if isinstance(v, list) else tuple(items)
    return _Opaque(safe_repr(v))


def _plain_answer(a: Any) -> Any:
    """An answer rebuilt as the exact kernel.strategy_api type with builtin field values (the
    kernel compares, formats and sizes them after the guarded call)."""
    if a is None:
        return None
    for cls in (Buy, Exit, Pass):
        if isinstance(a, cls):
            return cls(**{f: _plain(getattr(a, f)) for f in cls.__struct_fields__})
    return _Opaque(safe_repr(a))


def _wrap(guard: Guard, fn: Callable[..., Any], plain: Callable[[Any], Any]) -> Callable[..., Any]:
    def body(*args: Any) -> Any:
        err: Raised | None = None
        try:
            return plain(fn(*args))
        except Exception as e:
            err = plain_raised(e)  # the exception's repr is strategy code: under the guard
        # Raised outside the except clause: the original is nobody's __context__.
        raise err

    def run(*args: Any) -> Any:
        return guard.call(body, *args)

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


def load_module(
    name: str, source: bytes, filename: str, module_name: str, package_dir: str | None = None
) -> types.ModuleType:
    """A strategy module made from its source, its own code run under the guard (only I/O
    refused: a module that reads the history file when it loads reads the future as surely
    as one that reads it in evaluate). The modules it imports are imported first, outside
    the guard (the import system reads files). With `package_dir` (its strategies directory)
    it is a module of a throwaway package of that directory, so that its relative imports
    (`from ._helpers import x`) get that directory's siblings, fresh, as replay's loader does
    (kernel/strategy_load.py); neither it nor the package nor the siblings are left in
    sys.modules (what it imported at module level it keeps; an import run later, inside
    evaluate, finds no package)."""
    code = compile(source, filename, "exec", dont_inherit=True)
    pkg_name = f"_baton_pkg_{module_name}" if package_dir is not None else ""
    full_name = f"{pkg_name}.{module_name}" if pkg_name else module_name
    module = types.ModuleType(full_name)
    module.__file__ = filename
    if pkg_name:
        pkg = types.ModuleType(pkg_name, f"throwaway package of {package_dir}")
        pkg.__path__ = [str(package_dir)]
        pkg.__package__ = pkg_name
        sys.modules[pkg_name] = pkg
        module.__package__ = pkg_name
    try:
        for mod in _imports(ast.parse(source, filename), pkg_name):
            with contextlib.suppress(Exception):  # the module's own run raises it, named
                importlib.import_module(mod)
        sys.modules[full_name] = module  # dataclasses and typing look their module up while it runs
        Guard(name, loading=True).call(exec, code, module.__dict__)
    finally:
        sys.modules.pop(full_name, None)
        if pkg_name:
            for n in [n for n in sys.modules if n == pkg_name or n.startswith(f"{pkg_name}.")]:
                sys.modules.pop(n, None)
    return module


def import_ahead(module: Any) -> None:
    """Import what `module`'s source imports anywhere in it (inside functions too), now,
    outside any guard: an import a function makes later then finds its module loaded instead
    of reading files under the guard. Quiet on a module without a readable source."""
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return
    try:
        with open(filename, "rb") as f:
            tree = ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return
    for mod in _imports(tree):
        with contextlib.suppress(Exception):  # the strategy's own call raises it, named
            importlib.import_module(mod)


def _imports(tree: ast.AST, package: str = "") -> list[str]:
    """The module names a module imports, anywhere in it (an import inside evaluate would
    otherwise be a module loaded under the guard: refused); its relative imports of one
    level as modules of `package` (none without one)."""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and package:
            base = f"{package}.{node.module}" if node.module else package
            if node.module:
                out.append(base)
            out += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
    return out


def relative_imports(source: bytes, filename: str) -> list[str]:
    """The sibling modules a strategy's source imports relatively (one level), by name."""
    mods = _imports(ast.parse(source, filename), "_")
    return sorted({m.split(".")[1] for m in mods if m.startswith("_.")})
