from kernel.risk import Account, RiskLimits, check_entry, daily_loss_breach

LIMITS = RiskLimits(max_stake_usd=10, max_exposure_usd=20, daily_loss_limit_usd=50)


def acct(**kw) -> Account:
    base = {"cash_micros": 1_000_000_000, "open_exposure_micros": 0, "day_pnl_micros": 0}
    base.update(kw)
    return Account(**base)


def test_a_stake_above_the_per_order_limit_is_refused():
    assert "exceeds max stake" in check_entry(11, LIMITS, acct())


def test_open_exposure_accumulates_across_one_ticks_entries():
    a = acct()
    assert check_entry(10, LIMITS, a) is None
    assert check_entry(10, LIMITS, a) is None
    assert "open exposure" in check_entry(1, LIMITS, a)


def test_cash_already_committed_is_not_spent_twice():
    a = acct(cash_micros=12_000_000)
    assert check_entry(8, LIMITS, a) is None
    assert "available cash" in check_entry(8, LIMITS, a)


def test_reaching_the_daily_loss_limit_gives_a_halt_reason_and_blocks_entries():
    assert daily_loss_breach(LIMITS, -49_990_000) is None
    reason = daily_loss_breach(LIMITS, -50_000_000)
    assert reason and "daily loss limit" in reason
    assert "daily loss limit" in check_entry(5, LIMITS, acct(day_pnl_micros=-60_000_000))


def test_a_stake_that_is_not_a_finite_positive_number_is_refused_not_raised():
    for stake in (float("nan"), float("inf"), -1.0, 0.0):
        acct = Account(cash_micros=10**9, open_exposure_micros=0, day_pnl_micros=0)
        assert "not a positive number" in (check_entry(stake, LIMITS, acct) or "")
        assert acct.open_exposure_micros == 0
