"""The id the CLOB will give an order, computed when it is signed (before it is posted), so
that an intent can record it first; and the start-up check that this id is the one the client
itself computes for the orders it signs.
"""

from __future__ import annotations

from collections.abc import Callable

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ORDER_TYPE_HASH
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2
from py_clob_client_v2.order_utils.model.signature_type_v2 import SignatureTypeV2

from baton.errors import VenueError

# (signed order, neg_risk) -> order id; OrderIds is the one Baton uses.
OrderIdFn = Callable[[SignedOrderV2, bool], str]


def _bytes32(value: str | bytes) -> bytes:
    """A 0x-prefixed hex string as 32 bytes, zero-padded on the left (as the client's builder)."""
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(value.removeprefix("0x").zfill(64))


# The ABI types of the CTF exchange V2 Order struct, its type hash first (OrderIds).
_ORDER_FIELD_TYPES = [
    "bytes32", "uint256", "address", "address", "uint256", "uint256", "uint256", "uint8", "uint8",
    "uint256", "bytes32", "bytes32",
]  # fmt: skip


class OrderIds:
    """Order ids of one chain, with an order builder cached per exchange (plain or neg-risk)."""

    def __init__(self, chain_id: int) -> None:
        self.chain_id = chain_id
        self._builders: dict[bool, ExchangeOrderBuilderV2] = {}

    def __call__(self, order: SignedOrderV2, neg_risk: bool) -> str:
        # The id the CLOB will give the order: its EIP-712 hash on the exchange it is signed for,
        # keccak(0x1901, domain separator, hash of the Order struct). Computed from the struct's
        # fixed-size fields with the builder's own constants and cached domain separator, as the
        # client does for its POLY_1271 orders: the client's build_order_hash encodes the whole
        # typed data again, a third of the cost of signing an order (bench/venue_sign.py).
        hasher = self._builders.get(neg_risk)
        if hasher is None:
            cfg = get_contract_config(self.chain_id)
            address = cfg.neg_risk_exchange_v2 if neg_risk else cfg.exchange_v2
            hasher = ExchangeOrderBuilderV2(address, self.chain_id, signer=None)
            self._builders[neg_risk] = hasher
        struct_hash = keccak(
            abi_encode(
                _ORDER_FIELD_TYPES,
                [
                    ORDER_TYPE_HASH,
                    int(order.salt),
                    order.maker,
                    order.signer,
                    int(order.tokenId),
                    int(order.makerAmount),
                    int(order.takerAmount),
                    int(order.side),
                    int(order.signatureType),
                    int(order.timestamp),
                    _bytes32(order.metadata),
                    _bytes32(order.builder),
                ],
            )
        )
        return "0x" + keccak(b"\x19\x01" + hasher.app_domain_separator + struct_hash).hex()


# The sample order of the start-up check: a BUY of 10 at 0.50 of an arbitrary token, signed by
# the client's own builder, never posted.
SAMPLE_TOKEN_ID = "52114319501245915516055106046884209969926127482827954674443846427813813222426"


def client_order_hash(order: SignedOrderV2, exchange: str, chain_id: int) -> str:
    """The client's own id of an order it signed for `exchange`: its `build_order_hash` of the
    typed data its builder signs (the whole EIP-712 encoding, the slow way)."""
    builder = ExchangeOrderBuilderV2(exchange, chain_id, signer=None)
    return str(builder.build_order_hash(builder.build_order_typed_data(order)))


def check_order_ids(builder: OrderBuilder, chain_id: int, order_ids: OrderIdFn) -> None:
    """Sign one sample order per exchange (plain and neg-risk) with the client's builder and
    raise VenueError unless `order_ids` gives the id the client computes for it. An order
    recorded under a wrong id would never be found again by reconciliation, so that a
    restarted worker could post it a second time. With an ECDSA signature (every type but
    POLY_1271) the id must also be the digest the client actually signed, which checks the
    exchange address and domain it signed for as well."""
    cfg = get_contract_config(chain_id)
    for neg_risk, exchange in ((False, cfg.exchange_v2), (True, cfg.neg_risk_exchange_v2)):
        args = OrderArgsV2(token_id=SAMPLE_TOKEN_ID, price=0.5, size=10.0, side="BUY")
        order = builder.build_order(args, CreateOrderOptions(tick_size="0.01", neg_risk=neg_risk), version=2)
        ours = order_ids(order, neg_risk)
        theirs = client_order_hash(order, exchange, chain_id)
        where = f"chain {chain_id}, {'neg-risk ' if neg_risk else ''}exchange {exchange}"
        if ours != theirs:
            raise VenueError(
                f"order ids: Baton computes {ours} for a sample order, the venue client's "
                f"build_order_hash {theirs} ({where}); refusing to start, since orders would be "
                "recorded under ids the venue does not know",
                retryable=False,
                kind="order_id_mismatch",
            )
        if int(order.signatureType) != SignatureTypeV2.POLY_1271:
            signer = Account._recover_hash(bytes.fromhex(ours[2:]), signature=order.signature)
            if signer.lower() != order.signer.lower():
                raise VenueError(
                    f"order ids: the venue client signed a sample order over another digest than "
                    f"its id {ours} ({where}; the signature recovers {signer}, not the signer "
                    f"{order.signer}); refusing to start",
                    retryable=False,
                    kind="order_id_mismatch",
                )
