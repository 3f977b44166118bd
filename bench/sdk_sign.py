"""Order signing, side by side: py-clob-client-v2 (what Baton signs with) against the unified SDK
`polymarket-client`, for the same V2 orders, EOA (signature type 0) and deposit wallet (type 3,
POLY_1271: the ERC-7739 TypedDataSign wrap). Issue #27's SDK evaluation; docs/venue-2026.md.

Why a venv of its own: polymarket-client 0.14.0 requires eth-abi < 6 and Baton's lock has
eth-abi 6.0.0, so the SDK cannot be installed beside Baton. Run it from the repo root with a
throwaway venv that holds both clients (and coincurve, so that both sign with libsecp256k1):

    python3 -m venv /tmp/pmc-venv
    /tmp/pmc-venv/bin/pip install polymarket-client==0.14.0 py-clob-client-v2==1.2.1 coincurve
    /tmp/pmc-venv/bin/python -m bench.sdk_sign [--orders 300] [--rounds 3]

Each client signs with its own code path, offline, as its order builder does:
- py-clob-client-v2: `ExchangeOrderBuilderV2.build_signed_order` (salt, EIP-712 digest, signature;
  for type 3 the digest and the wrapped signature it builds by hand);
- polymarket-client: the steps of `SecureClient._sign_order` (its public API only signs inside a
  connected client, which first fetches tick size and fees): `build_order_typed_data`,
  `LocalAccount.sign_typed_data`, `build_order_signature`.
Before timing, both sign one order with the same salt and timestamp per type, and the signatures
must be byte for byte equal (ECDSA here is deterministic, RFC 6979): the two clients agree on the
digest and on the type-3 wrap, or the benchmark stops. Rounds alternate the two clients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import machine_info, publish

REPO = Path(__file__).resolve().parent.parent
# Any fixed key will do: nothing signed here is sent anywhere.
PRIVATE_KEY = "0x" + "11" * 32
CHAIN_ID = 137
TOKEN_ID = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
# A deposit wallet address for type 3: the order's maker and signer; the EOA key signs for it.
DEPOSIT_WALLET = "0x00000000000000000000000000000000DeaDBeef"
MAKER_AMOUNT = 5_000_000  # 5 USDC at 6 decimals
TAKER_AMOUNT = 10_000_000  # 10 shares: a BUY at 0.50


def _clob_v2() -> tuple[Callable[[int, int, int], str], str]:
    from eth_account import Account
    from py_clob_client_v2.config import get_contract_config
    from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ExchangeOrderBuilderV2
    from py_clob_client_v2.order_utils.model.order_data_v2 import OrderDataV2
    from py_clob_client_v2.order_utils.model.side import Side
    from py_clob_client_v2.signer import Signer

    exchange = get_contract_config(CHAIN_ID).exchange_v2
    eoa = Account.from_key(PRIVATE_KEY).address
    salts: list[int] = []  # the next salt the builder takes: set right before each signing

    def salt() -> str:
        return str(salts.pop())

    builder = ExchangeOrderBuilderV2(exchange, CHAIN_ID, Signer(PRIVATE_KEY, CHAIN_ID), generate_salt=salt)

    def sign(sig_type: int, salt_value: int, ts_ms: int) -> str:
        salts.append(salt_value)
        maker = DEPOSIT_WALLET if sig_type == 3 else eoa
        data = OrderDataV2(
            maker=maker,
            tokenId=TOKEN_ID,
            makerAmount=str(MAKER_AMOUNT),
            takerAmount=str(TAKER_AMOUNT),
            side=Side.BUY,
            signer=maker,
            signatureType=sig_type,
            timestamp=str(ts_ms),
        )
        return str(builder.build_signed_order(data).signature)

    return sign, exchange


def _unified(exchange: str) -> Callable[[int, int, int], str]:
    from eth_account import Account
    from polymarket._internal.actions.orders.typed_data import build_order_signature, build_order_typed_data
    from polymarket._internal.actions.orders.types import BYTES32_ZERO, UnsignedOrder

    account = Account.from_key(PRIVATE_KEY)

    def sign(sig_type: int, salt_value: int, ts_ms: int) -> str:
        maker = DEPOSIT_WALLET if sig_type == 3 else account.address
        order = UnsignedOrder(
            chain_id=CHAIN_ID,
            builder=BYTES32_ZERO,
            exchange_address=exchange,
            expiration=0,
            maker=maker,
            maker_amount=MAKER_AMOUNT,
            metadata=BYTES32_ZERO,
            order_type="FOK",
            salt=salt_value,
            side="BUY",
            signature_type=sig_type,
            signer=maker,
            taker_amount=TAKER_AMOUNT,
            timestamp=ts_ms,
            token_id=TOKEN_ID,
        )
        signed = account.sign_typed_data(full_message=build_order_typed_data(order))
        raw = signed.signature.hex()
        return str(build_order_signature(order, raw if raw.startswith("0x") else "0x" + raw))

    return sign


def _norm(sig: str) -> str:
    return sig.lower().removeprefix("0x")


def _per_order_us(sign: Callable[[int, int, int], str], sig_type: int, orders: int, seed: int) -> list[float]:
    out = []
    ts = int(time.time() * 1000)
    for i in range(orders):
        t = time.perf_counter_ns()
        sign(sig_type, seed + i, ts + i)
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    import eth_keys

    clob_sign, exchange = _clob_v2()
    sdk_sign = _unified(exchange)
    signers = {"py-clob-client-v2": clob_sign, "polymarket-client": sdk_sign}
    ts = int(time.time() * 1000)
    agree = {}
    for sig_type in (0, 3):
        a, b = _norm(clob_sign(sig_type, 12345, ts)), _norm(sdk_sign(sig_type, 12345, ts))
        if a != b:
            sys.exit(f"type {sig_type}: the clients sign differently:\n  {a}\n  {b}")
        agree[str(sig_type)] = {"equal": True, "signature_bytes": len(a) // 2}
    samples: dict[str, dict[str, list[float]]] = {n: {"0": [], "3": []} for n in signers}
    for r in range(args.rounds):
        order = list(signers.items()) if r % 2 == 0 else list(reversed(signers.items()))
        for name, sign in order:
            for sig_type in (0, 3):
                sign(sig_type, 1, ts)  # warm
                samples[name][str(sig_type)] += _per_order_us(sign, sig_type, args.orders, r * 10**6)
    summary: dict[str, dict[str, Any]] = {}
    for t in ("0", "3"):
        row: dict[str, Any] = {}
        for name in signers:
            xs = samples[name][t]
            row[name] = {"median_us": round(statistics.median(xs), 1), "p99_us": round(_p99(xs), 1)}
            row[name]["n"] = len(xs)
        ratio = row["polymarket-client"]["median_us"] / row["py-clob-client-v2"]["median_us"]
        row["ratio_median"] = round(ratio, 2)
        summary[t] = row
    clients = ", ".join(f"{n} {version(n)}" for n in signers)
    return {
        "benchmark": "sdk_sign",
        "command": "python -m bench.sdk_sign " + " ".join(sys.argv[1:]),
        "machine": machine_info(
            clients=clients,
            eth_keys_backend=type(eth_keys.KeyAPI().backend).__name__,
        ),
        "orders_per_round": args.orders,
        "rounds": args.rounds,
        "signatures_agree": agree,
        "summary": summary,
    }


def render(summary: dict[str, Any]) -> str:
    lines = [
        "| signature type | py-clob-client-v2 median / p99 (µs) "
        "| polymarket-client median / p99 (µs) | ratio |",
        "|---|---|---|---|",
    ]
    names = {"0": "0 (EOA)", "3": "3 (POLY_1271, deposit wallet)"}
    for t, row in summary.items():
        a, b = row["py-clob-client-v2"], row["polymarket-client"]
        lines.append(
            f"| {names[t]} | {a['median_us']:.0f} / {a['p99_us']:.0f} "
            f"| {b['median_us']:.0f} / {b['p99_us']:.0f} | {row['ratio_median']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.sdk_sign", description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=300, help="orders per client, type and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, alternating which client goes first")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "sdk_sign.json")
    args = ap.parse_args(argv)
    res = run(args)
    publish(res, render(res["summary"]), args.json_out)


if __name__ == "__main__":
    main()
