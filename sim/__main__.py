"""`python -m sim`: the local stand-in venues, one price model behind two servers.

Binance-format market data on settings.binance_port, the Polymarket-CLOB-format API (with
Gamma discovery) on settings.clob_port, both on 127.0.0.1 (BATON_SIM_BIND: another address, e.g.
the venue namespace's in `make cluster`). SIGTERM or SIGINT stops both
cleanly with exit status 0. The sim's own knobs (balance, fees, page size, fault injection)
are read from BATON_SIM_* variables here: docs/sim.md lists them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from baton.errors import SettingsError

HOST = os.environ.get("BATON_SIM_BIND", "").strip() or "127.0.0.1"


async def _serve(app: Any, port: int, name: str) -> Any:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    print(f"sim: {name} listening on {HOST}:{port}", flush=True)
    return runner


def _page_limit(env: Any, error: type[Exception]) -> int | None:
    # Rows per page of /data/orders and /data/trades (default: the CLOB's 500); a small value
    # lets a test walk the pagination of a sim running as its own process.
    raw = env.get("BATON_SIM_PAGE_LIMIT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise error(f"BATON_SIM_PAGE_LIMIT={raw!r} must be an integer from 1 to 10000")
    return int(raw)


async def main() -> int:
    # Imported here, after the early SIGTERM handler: they take about a second.
    from baton import settings as settings_mod
    from sim import binance, clob, faults
    from sim.accounts import balance_from_env
    from sim.book import BookParams
    from sim.fees import fees_from_env
    from sim.model import PriceModel

    try:
        cfg = settings_mod.load()
        params = BookParams.from_env(os.environ)
        balance = balance_from_env(os.environ)
        fees = fees_from_env(os.environ)
        page_limit = _page_limit(os.environ, SettingsError)
        clob_faults = faults.Faults.from_env(os.environ, "clob", clob.fault_body, cfg.sim_seed)
        binance_faults = faults.Faults.from_env(os.environ, "binance", binance.fault_body, cfg.sim_seed)
    except SettingsError as e:
        print(f"sim: bad setting: {e}", file=sys.stderr, flush=True)
        return 2
    model = PriceModel(cfg.sim_seed, cfg.sim_vol_scale)
    clob_sim = clob.ClobSim(
        model,
        seed=cfg.sim_seed,
        chain_id=cfg.chain_id,
        params=params,
        assets=cfg.assets,
        timeframes=cfg.timeframes,
        balance_micro=balance,
        fees=fees,
        page_limit=page_limit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    try:
        runners.append(
            await _serve(
                binance.create_app(binance.BinanceSim(model, cfg.assets), binance_faults),
                cfg.binance_port,
                "binance",
            )
        )
        runners.append(await _serve(clob.create_app(clob_sim, clob_faults), cfg.clob_port, "clob+gamma"))
        await stop.wait()
    except OSError as e:
        print(f"sim: cannot listen: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    print("sim: stopped", flush=True)
    return 0


if __name__ == "__main__":
    # A SIGTERM during start-up (imports, model set-up) is still a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main()))
