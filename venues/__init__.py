"""The venue adapters: Polymarket's CLOB and Gamma, Binance's formats, the venues' request
budgets, and an in-memory stand-in venue for tests and benchmarks."""
