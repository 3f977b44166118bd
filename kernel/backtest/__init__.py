"""The backtest engine (`baton backtest`): the kernel's tick path on a virtual clock over
candle history (engine.py), the fill model (fills.py) and the look-ahead guard (guard.py).
`run(config, candles, strategy, books) -> BacktestReport` is its interface."""
