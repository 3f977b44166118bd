"""Risk checks the kernel applies to every decision; a strategy cannot bypass them.

Pure functions of the decision, the limits and the account state read from Redis.
"""

from __future__ import annotations

import math

import msgspec

from state.structs import MICROS


class RiskLimits(msgspec.Struct, frozen=True):
    max_stake_usd: float
    max_exposure_usd: float
    daily_loss_limit_usd: float


class Account(msgspec.Struct):
    """What the checks need; exposure grows as decisions of one tick are accepted."""

    cash_micros: int
    # Cost of open positions plus stakes committed but not yet filled.
    open_exposure_micros: int
    day_pnl_micros: int
    # Stakes committed but not yet debited from cash (open intents, this tick's entries).
    pending_micros: int = 0


def daily_loss_breach(limits: RiskLimits, day_pnl_micros: int) -> str | None:
    """The halt reason when today's realised loss has reached the limit."""
    limit = round(limits.daily_loss_limit_usd * MICROS)
    if limit > 0 and -day_pnl_micros >= limit:
        return (
            f"daily loss limit reached: realised {day_pnl_micros / MICROS:.2f} USD today, "
            f"limit {limits.daily_loss_limit_usd:.2f} USD"
        )
    return None


def check_entry(stake_usd: float, limits: RiskLimits, acct: Account) -> str | None:
    """None when the entry may go ahead (and acct takes on its exposure), else the reason."""
    if not math.isfinite(stake_usd) or stake_usd <= 0:
        return f"stake {stake_usd} USD is not a positive number"
    if stake_usd > limits.max_stake_usd:
        return f"stake {stake_usd:.2f} USD exceeds max stake {limits.max_stake_usd:.2f} USD"
    stake = round(stake_usd * MICROS)
    if acct.open_exposure_micros + stake > round(limits.max_exposure_usd * MICROS):
        return (
            f"open exposure {(acct.open_exposure_micros + stake) / MICROS:.2f} USD would exceed "
            f"{limits.max_exposure_usd:.2f} USD"
        )
    available = acct.cash_micros - acct.pending_micros
    if stake > available:
        return f"stake {stake_usd:.2f} USD exceeds available cash {available / MICROS:.2f} USD"
    breach = daily_loss_breach(limits, acct.day_pnl_micros)
    if breach:
        return breach
    acct.open_exposure_micros += stake
    acct.pending_micros += stake
    return None
