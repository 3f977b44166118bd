"""Every exception Baton raises, in one shallow tree under `BatonError`.

One family per concern; a member that callers catch as `ValueError` or `RuntimeError` keeps
that built-in base beside its family, so `except ValueError` around a setting still works.
This module imports nothing of ours: every layer may import it.
"""

from __future__ import annotations


class BatonError(Exception):
    """The root: anything Baton raises on purpose."""


# --- configuration ------------------------------------------------------------------------------


class ConfigError(BatonError):
    """A setting, a credential or a token that Baton cannot use."""


class SettingsError(ConfigError, ValueError):
    """A setting has a value Baton cannot use; the message names the variable."""


class CredentialsError(ConfigError, ValueError):
    """Live mode cannot sign: the message lists what is missing, never a secret's value."""


class SecretFileError(ConfigError, ValueError):
    """A secret file that others could read, that belongs to another user, or is empty."""


class TokenError(ConfigError, ValueError):
    """The token cannot be used; the message names the file or variable, never the value."""


# --- state (Redis) --------------------------------------------------------------------------------


class StateError(BatonError):
    """What Redis holds cannot be used, or may not be spent."""


class SchemaMismatch(StateError, RuntimeError):
    """The Redis data was written by a schema this code cannot read."""


class CountsLost(StateError, RuntimeError):
    """A count of the intents and positions into baton:counts was begun again by another
    process while this one ran (state/counts.py): this one's result is not installed."""


class BookingError(StateError, ValueError):
    """A fill that cannot be booked against its position as the venue told it (a sale of more
    shares than held, of none, a fee above the proceeds, an exit of another slot-window):
    nothing is written; the intent stays open and the message names what was wrong."""


class SnapshotError(StateError, RuntimeError):
    """Redis refused part of the tick's read (e.g. a key holding the wrong type)."""


class UnreadableValue(StateError):
    """A value in Redis that a write or a decision depends on cannot be read (garbage, out of
    range, a key of the wrong type). A script that meets one writes nothing and answers
    `BADVALUE <key> <field>: <what>` (state/lua/_check.lua); what depended on it waits, and
    entries are blocked, until the value is repaired. `field` is `(type)` or `(value)` when
    the whole key is at fault."""

    def __init__(self, key: str, field: str, problem: str) -> None:
        self.key = key
        self.field = field
        self.problem = problem
        super().__init__(f"{key} {field}: {problem}")


class RateLimited(StateError):
    """A request the rate budget refused; it must not be sent. `wait_ms` is the wait it would
    have needed (-1: never, its cost exceeds a bucket's capacity)."""

    def __init__(self, budget: str, bucket: str, cost: float, wait_ms: int, allowed_ms: int, capacity: float):
        self.budget = budget
        self.bucket = bucket
        self.cost = cost
        self.wait_ms = wait_ms
        self.allowed_ms = allowed_ms
        if wait_ms < 0:
            why = f"the cost exceeds bucket {bucket}'s capacity of {capacity:g}"
        else:
            why = f"bucket {bucket} needs a wait of {wait_ms} ms, more than the {allowed_ms} ms allowed"
        super().__init__(f"rate limit {budget}: refused a request of cost {cost:g}: {why}; not sent")


# --- lease --------------------------------------------------------------------------------------


class NotReplicated(StateError):
    """A write that must survive a Redis failover (the lease, the epoch, an intent before its
    post) was not acknowledged by enough replicas in time (state/replication.py): what
    depends on it is not done (no post, no lease), and the reason names both counts."""


class LeaseError(BatonError):
    """This worker may not trade: it lost the lease, or may not take it."""


class LeaseLost(LeaseError, RuntimeError):
    """Another worker holds a newer lease: this one must stop trading at once."""


class NotReady(LeaseError, RuntimeError):
    """The readiness check failed: this worker must not take the lease."""


# --- trading --------------------------------------------------------------------------------------


class HaltedBeforePost(BatonError):
    """The halt closed the gate between this intent's commit and its post: never sent."""


class LeaseDeadlinePassed(BatonError):
    """This worker's lease may have passed to another (its last renewal is older than the
    lease length less the margin, on its monotonic clock): the order is not posted."""


class StrategyCheckError(BatonError):
    """A strategy module misbehaved on a dry evaluation."""


class StrategyIORefused(BatonError):
    """A strategy running in a shadow (a release under test) opened a file, a socket or a
    process: refused by the I/O guard (kernel/backtest/guard.py), its answer an error."""


class SettlementError(BatonError):
    """A settlement job that cannot finish yet: rq retries it later."""


class Unresolved(SettlementError):
    """The venue has not resolved the market yet: rq retries the job later."""


class PositionChanged(SettlementError):
    """The position changed between the job's read and its write: rq retries the job."""


class ExitPending(SettlementError):
    """An exit leg of the position is still working at the venue (not final): the settlement
    waits for its fill to be booked, so that it pays on the shares still held."""


class JobRefused(SettlementError):
    """A job on the settle queue that is not a settlement: never run, left failed."""


# --- venues ---------------------------------------------------------------------------------------


class VenueError(BatonError):
    """A venue call that failed; `retryable` says whether the same call may succeed later,
    `kind` what went wrong: transport, timeout, server (5xx), throttled (408/425/429),
    rate_limited (our own budget refused to send it), auth, insufficient_balance,
    version_mismatch, rejected (any other 4xx), bad_answer."""

    def __init__(
        self, message: str, *, retryable: bool, kind: str = "", status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind or ("transport" if retryable else "rejected")
        self.status = status  # the HTTP status, when the venue answered
        self.detail = detail or message  # the venue's own words, for the intent's error


class ExchangeError(BatonError):
    """A request the sim's stand-in exchanges refuse, answered as the real venue would."""


class Rejected(ExchangeError):
    """An order the exchange refuses; the message is the venue's error text (HTTP 400)."""


class BinanceBadRequest(ExchangeError):
    """A request the Binance stand-in refuses with Binance's own error `code` and `msg`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


# --- feed ---------------------------------------------------------------------------------------


class FeedError(BatonError):
    """Market data the feed could not get or use."""


class BadFrame(FeedError, ValueError):
    """A frame the feed cannot use; the message says what was wrong with it."""


class BackfillError(FeedError, RuntimeError):
    """The REST venue answered a klines request with something other than rows. `status` is
    the HTTP status (0: not an HTTP answer) and `retry_after_s` the venue's Retry-After, when
    it said one (429 and 418: the IP is over its budget or banned for that long)."""

    def __init__(self, message: str, status: int = 0, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


# --- operations (the control calls; `status` is the HTTP status that fits) ----------------------


class OpError(BatonError):
    """A control call that cannot be carried out; `status` is the HTTP status that fits."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OpError):
    status = 400


class Unauthorized(OpError):
    """No credential, or a wrong one. Answered with `WWW-Authenticate: Bearer`."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="baton"'}  # noqa: RUF012 (read-only)


class Forbidden(OpError):
    """Not allowed, e.g. a right credential used from the wrong place (a cookie sent by another
    site's page), or a path outside what may be read."""

    status = 403


class NotFound(OpError):
    status = 404


class MisdirectedRequest(OpError):
    """A request for a Host this server does not answer to (421): a page whose name was
    rebound to this address (DNS rebinding) reaches the port but not the API."""

    status = 421


class Conflict(OpError):
    status = 409


class TooManyRequests(OpError):
    """Too many calls; `Retry-After` says when the caller may try again."""

    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(OpError):
    status = 503


# --- deploy (stack, releases, blue/green, hot reload) ---------------------------------------------


class RolloutError(BatonError):
    """Code could not be staged, started, handed over or reloaded."""


class StackError(RolloutError, RuntimeError):
    """The local stack (supervisord and its programs) could not be started or reached."""


class ReleaseError(RolloutError, RuntimeError):
    """A release could not be staged, read or pointed at; the message says what was wrong."""


class DeployError(RolloutError, RuntimeError):
    """A deploy or rollback that did not happen; the message says why and what still runs."""


class ReloadError(RolloutError, RuntimeError):
    """A hot reload that could not be checked, copied, asked for or confirmed."""


# --- benchmarks -----------------------------------------------------------------------------------


class OpFailed(BatonError, RuntimeError):
    """A benchmark's operation that did not complete; recorded, and the run goes on."""


# --- evaluation (replay, backtest) ----------------------------------------------------------------


class BacktestError(BatonError, ValueError):
    """A backtest that cannot run as asked: no candles for an asset, a slot that names nothing
    known, a strategy that cannot be loaded; the message says which."""


class LookAheadError(BacktestError):
    """A strategy reached for what its input does not hold during a backtest (a file, the
    caller's frames, the heap), or an input held data from after its time: the backtest is
    refused, and the message names the strategy and what it did."""
