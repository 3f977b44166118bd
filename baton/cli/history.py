"""`baton history fetch|import|list`: the local candle history a backtest runs on (feed/history.py,
var/history/<asset>/<YYYY-MM-DD>.csv.gz).

- `fetch --asset A --from T0 --to T1`: 1 s klines from BATON_BINANCE_REST_URL (Binance in live
  mode; in paper mode the sim, which serves any past second of its seeded model);
- `import [--asset A]`: the closed candles the feed holds in Redis (the last
  BATON_CANDLE_RETENTION_S, an hour by default), so that a paper or live run's prices are kept;
- `list [--asset A]`: what the store holds, per asset and day.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from baton.cli.output import fail
from baton.cli.timespec import time_range_ms
from baton.errors import BackfillError, BadFrame
from baton.settings import CANDLE_INTERVAL, Settings
from control import render
from feed import history, history_fetch
from kernel.clock import wall_ms
from state.keys import Keys

HTTP_TIMEOUT_S = 30.0


class FetchOut(msgspec.Struct, frozen=True):
    asset: str
    from_ms: int
    to_ms: int
    requests: int
    candles: int
    added: int
    replaced: int
    missing: int
    days: list[str]


class ImportOut(msgspec.Struct, frozen=True):
    asset: str
    added: int
    replaced: int
    refused: int
    days: list[str]


class DayOut(msgspec.Struct, frozen=True):
    asset: str
    day: str
    candles: int
    first_ms: int
    last_ms: int


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("history", help="the local 1 s candle history backtests run on (var/history/)")
    hsub = p.add_subparsers(dest="history_cmd", required=True, metavar="{fetch,import,list}")
    q = hsub.add_parser("fetch", help="fetch 1 s klines from the Binance REST (the sim in paper mode)")
    q.add_argument("--asset", default="", help="asset(s), comma-separated (default: BATON_ASSETS)")
    q.add_argument("--from", dest="from_", required=True, help="unix seconds or ISO 8601 (UTC if no zone)")
    q.add_argument("--to", required=True, help="unix seconds or ISO 8601; not included")
    json_flag(q)
    q = hsub.add_parser("import", help="store the closed candles the feed holds in Redis")
    q.add_argument("--asset", default="", help="asset(s), comma-separated (default: BATON_ASSETS)")
    json_flag(q)
    q = hsub.add_parser("list", help="what the store holds, per asset and day")
    q.add_argument("--asset", default="", help="one asset (default: all)")
    json_flag(q)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    return render.table(head, [[str(x) for x in r] for r in rows])


def _assets(s: Settings, text: str) -> list[str]:
    return [a.strip().lower() for a in text.split(",") if a.strip()] if text else list(s.assets)


def _print_problems(problems: list[str]) -> None:
    for p in problems[:20]:
        print(f"baton: {p}", file=sys.stderr)
    if len(problems) > 20:
        print(f"baton: ... and {len(problems) - 20} more problems", file=sys.stderr)


def cmd_history(s: Settings, args: argparse.Namespace, redis_client: Callable[[Settings], Any]) -> int:
    if args.history_cmd == "fetch":
        return _fetch(s, args)
    if args.history_cmd == "import":
        return _import(s, args, redis_client)
    return _list(s, args)


def _fetch(s: Settings, args: argparse.Namespace) -> int:
    try:
        from_ms, to_ms = time_range_ms(args.from_, args.to)
    except ValueError as e:
        print(f"baton: {e}", file=sys.stderr)
        return 2
    problems: list[str] = []
    try:
        results = asyncio.run(_fetch_all(s, _assets(s, args.asset), from_ms, to_ms, problems, not args.json))
    except (BackfillError, BadFrame, aiohttp.ClientError, TimeoutError) as e:
        _print_problems(problems)
        return fail(f"history fetch from {s.binance_rest_url}: {type(e).__name__}: {e}")
    _print_problems(problems)
    out = [
        FetchOut(
            r.asset,
            r.from_ms,
            r.to_ms,
            r.requests,
            r.candles,
            r.counts.added,
            r.counts.replaced,
            r.missing,
            r.counts.days,
        )
        for r in results
    ]
    if args.json:
        print(msgspec.json.encode(out).decode())
    else:
        print(
            _table(
                ["asset", "candles", "new", "replaced", "missing s", "requests", "days written"],
                [
                    [o.asset, o.candles, o.added, o.replaced, o.missing, o.requests, ", ".join(o.days) or "-"]
                    for o in out
                ],
            )
        )
        print(f"from {s.binance_rest_url} into {history.history_dir(s.home)}")
    return 0


def _progress(asset: str, day: str, candles: int) -> None:
    print(f"{asset} {day}: {candles:,} candles", file=sys.stderr, flush=True)


async def _fetch_all(
    s: Settings, assets: list[str], from_ms: int, to_ms: int, problems: list[str], progress: bool
) -> list[history_fetch.FetchResult]:
    pacer = history_fetch.Pacer()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return [
            await history_fetch.fetch(
                http,
                s.binance_rest_url,
                s.home,
                a,
                from_ms,
                to_ms,
                clock_ms=wall_ms,
                pace=pacer.wait,
                problems=problems,
                on_day=_progress if progress else None,
            )
            for a in assets
        ]


def _import(s: Settings, args: argparse.Namespace, redis_client: Callable[[Settings], Any]) -> int:
    r = redis_client(s)
    k = Keys(s.prefix)
    assets = _assets(s, args.asset)
    pipe = r.pipeline(transaction=False)
    for a in assets:
        pipe.zrange(k.candles(a, CANDLE_INTERVAL), 0, -1)
    windows = dict(zip(assets, pipe.execute(), strict=True))
    problems: list[str] = []
    counts = history.import_recorded(s.home, windows, problems)
    _print_problems(problems)
    out = [ImportOut(a, c.added, c.replaced, c.refused, c.days) for a, c in counts.items()]
    if args.json:
        print(msgspec.json.encode(out).decode())
    else:
        print(
            _table(
                ["asset", "in redis", "new", "replaced", "refused", "days written"],
                [
                    [o.asset, len(windows[o.asset]), o.added, o.replaced, o.refused, ", ".join(o.days) or "-"]
                    for o in out
                ],
            )
        )
        print(f"into {history.history_dir(s.home)}")
    return 0


def _list(s: Settings, args: argparse.Namespace) -> int:
    problems: list[str] = []
    days = history.coverage(s.home, args.asset.strip().lower() or None, problems)
    _print_problems(problems)
    out = [DayOut(d.asset, d.day, d.candles, d.first_ms, d.last_ms) for d in days]
    if args.json:
        print(msgspec.json.encode(out).decode())
        return 0
    if not out:
        print(f"no history in {history.history_dir(s.home)} (fill it: baton history fetch|import)")
        return 0

    def hms(ms: int) -> str:
        t = ms // 1000 % 86400
        return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"

    print(
        _table(
            ["asset", "day (UTC)", "candles", "first", "last", "holes s"],
            [
                [
                    o.asset,
                    o.day,
                    o.candles,
                    hms(o.first_ms),
                    hms(o.last_ms),
                    (o.last_ms - o.first_ms) // 1000 + 1 - o.candles,
                ]
                for o in out
            ],
        )
    )
    return 0
