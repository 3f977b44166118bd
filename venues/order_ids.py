"""The id the CLOB will give an order, computed when it is signed (before it is posted), so
that an intent can record it first.
"""

from __future__ import annotations

from eth_abi import encode as abi_encode
from eth_utils import keccak
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ORDER_TYPE_HASH
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2


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
