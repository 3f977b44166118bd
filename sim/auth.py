"""The sim CLOB's two levels of authentication, verified as the live CLOB verifies them.

L1 (`/auth/api-key`, `/auth/derive-api-key`): POLY_ADDRESS, POLY_SIGNATURE, POLY_TIMESTAMP,
POLY_NONCE, the signature being the EIP-712 `ClobAuth` struct (domain "ClobAuthDomain",
version "1", the chain id; address, timestamp, nonce and the fixed attestation text) signed
by the key of POLY_ADDRESS (py-clob-client-v2's `signing/eip712.py`). A signature by any other
key is refused with 401 `Invalid L1 Request headers`.

L2 (everything that acts for an account): POLY_ADDRESS, POLY_SIGNATURE, POLY_TIMESTAMP,
POLY_API_KEY, POLY_PASSPHRASE, the signature being the URL-safe base64 HMAC-SHA256, keyed with
the API secret, of timestamp + method + path + body (py-clob-client-v2's `signing/hmac.py`).
An unknown key, a key of another address, a wrong passphrase or a wrong HMAC is refused with
401 `Unauthorized/Invalid api key`. Both texts are the live ones (Polymarket's error-codes
reference, https://docs.polymarket.com/resources/error-codes, "Global errors").

The API keys are derived from (address, nonce) (sim/clob_state.py's `api_creds`), so a key
issued before a restart of the sim (nonce 0, the client's default) still verifies.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from eth_account import Account
from eth_utils import keccak
from poly_eip712_structs import make_domain
from py_clob_client_v2.signing.eip712 import CLOB_DOMAIN_NAME, CLOB_VERSION, MSG_TO_SIGN
from py_clob_client_v2.signing.hmac import build_hmac_signature
from py_clob_client_v2.signing.model import ClobAuth

L1_HEADERS = ("POLY_ADDRESS", "POLY_SIGNATURE", "POLY_TIMESTAMP")
L2_HEADERS = (*L1_HEADERS, "POLY_API_KEY", "POLY_PASSPHRASE")
INVALID_L1 = "Invalid L1 Request headers"
INVALID_L2 = "Unauthorized/Invalid api key"


class Creds:
    """The API keys the sim has issued: key -> (address, secret, passphrase)."""

    def __init__(self, derive) -> None:  # derive(address, nonce) -> the client's creds dict
        self._derive = derive
        self._issued: dict[str, tuple[str, str, str]] = {}

    def issue(self, address: str, nonce: str) -> dict[str, str]:
        creds = self._derive(address, nonce)
        self._issued[creds["apiKey"]] = (address.lower(), creds["secret"], creds["passphrase"])
        return creds

    def lookup(self, key: str, address: str) -> tuple[str, str, str] | None:
        known = self._issued.get(key)
        if known is None:
            default = self._derive(address, "0")
            if default["apiKey"] == key:
                known = (address.lower(), default["secret"], default["passphrase"])
        return known


def missing(headers: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not headers.get(n)]


def l1_error(headers: Mapping[str, str], chain_id: int) -> str:
    """Why the L1 headers are refused ("" when they are good): the ClobAuth signature must
    recover to POLY_ADDRESS."""
    gone = missing(headers, L1_HEADERS)
    if gone:
        return f"{INVALID_L1}: missing {', '.join(gone)}"
    address = headers["POLY_ADDRESS"]
    try:
        nonce = int(headers.get("POLY_NONCE") or "0")
        msg = ClobAuth(address=address, timestamp=headers["POLY_TIMESTAMP"], nonce=nonce, message=MSG_TO_SIGN)
        domain = make_domain(name=CLOB_DOMAIN_NAME, version=CLOB_VERSION, chainId=chain_id)
        digest = keccak(msg.signable_bytes(domain))
        signer = Account._recover_hash(
            digest, signature=bytes.fromhex(headers["POLY_SIGNATURE"].removeprefix("0x"))
        )
    except Exception as e:  # a malformed address, nonce or signature: eth libraries raise several types
        return f"{INVALID_L1}: {type(e).__name__}: {e}"
    if signer.lower() != address.lower():
        return f"{INVALID_L1}: the signature is not POLY_ADDRESS's"
    return ""


def l2_error(headers: Mapping[str, str], creds: Creds, method: str, path: str, body: str) -> str:
    """Why the L2 headers are refused ("" when they are good)."""
    gone = missing(headers, L2_HEADERS)
    if gone:
        return f"{INVALID_L2}: missing {', '.join(gone)}"
    address = headers["POLY_ADDRESS"]
    known = creds.lookup(headers["POLY_API_KEY"], address)
    if known is None or known[0] != address.lower():
        return f"{INVALID_L2}: no such API key for POLY_ADDRESS"
    _, secret, passphrase = known
    if not hmac.compare_digest(headers["POLY_PASSPHRASE"], passphrase):
        return f"{INVALID_L2}: wrong passphrase"
    want = build_hmac_signature(secret, headers["POLY_TIMESTAMP"], method, path, body or None)
    if not hmac.compare_digest(headers["POLY_SIGNATURE"], want):
        return f"{INVALID_L2}: the HMAC does not match the request"
    return ""
