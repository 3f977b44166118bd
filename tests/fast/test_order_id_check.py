"""The venue client's start-up check that Baton's order ids are the client's own: a venue whose
ids match starts, one fed another computation (through the `order_ids` seam) or whose client
signs for another exchange refuses with a VenueError naming the values. No network: the check
signs offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from py_clob_client_v2.clob_types import CreateOrderOptions
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2
from py_clob_client_v2.order_utils.model.signature_type_v2 import SignatureTypeV2
from py_clob_client_v2.signer import Signer

from baton.errors import VenueError
from baton.settings import SIM_PRIVATE_KEY
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer
from venues.order_ids import SAMPLE_TOKEN_ID, OrderIds, check_order_ids, client_order_hash
from venues.polymarket import ClobVenue

CHAIN_ID = 137
NOWHERE = "http://127.0.0.1:9"  # never called: the check signs offline
FUNDER = "0x1111111111111111111111111111111111111111"
ZERO32 = "0x" + "0" * 64


def test_known_vector_the_order_id_of_a_fixed_order():
    # Pinned from the client's build_order_hash, so that a change of both sides at once (a new
    # client release) shows here too.
    order = SignedOrderV2(
        salt="123456789",
        maker="0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        signer="0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        tokenId=SAMPLE_TOKEN_ID,
        makerAmount="5000000",
        takerAmount="10000000",
        side=0,
        signatureType=0,
        timestamp="1796000000000",
        metadata=ZERO32,
        builder=ZERO32,
        expiration="0",
        signature="0x",
    )
    cfg = get_contract_config(CHAIN_ID)
    plain = "0x8325abf159bc168dab77ba1f4e357255d949c42a15daa5a43564b70a0f7ad43f"
    neg_risk = "0x903c94da2436d0bbe8c14ce6afcd87aab9449870284da5b1162de63516726222"
    ids = OrderIds(CHAIN_ID)
    assert ids(order, False) == client_order_hash(order, cfg.exchange_v2, CHAIN_ID) == plain
    assert ids(order, True) == client_order_hash(order, cfg.neg_risk_exchange_v2, CHAIN_ID) == neg_risk


@pytest.mark.parametrize(
    "sig_type", [SignatureTypeV2.EOA, SignatureTypeV2.POLY_PROXY, SignatureTypeV2.POLY_1271]
)
def test_baton_order_ids_pass_the_check_for_every_signature_type(sig_type):
    builder = OrderBuilder(Signer(SIM_PRIVATE_KEY, CHAIN_ID), sig_type, FUNDER)
    check_order_ids(builder, CHAIN_ID, OrderIds(CHAIN_ID))  # raises on a mismatch


def test_a_venue_whose_order_ids_match_the_client_starts():
    venue = ClobVenue(NOWHERE, NOWHERE, SIM_PRIVATE_KEY, CHAIN_ID)
    venue.close()


def test_a_venue_computing_other_order_ids_refuses_to_start_naming_both():
    seen: list[tuple[SignedOrderV2, str]] = []
    amoy = OrderIds(80002)  # another chain's domain: every id differs

    def wrong(order: SignedOrderV2, neg_risk: bool) -> str:
        seen.append((order, amoy(order, neg_risk)))
        return seen[-1][1]

    with pytest.raises(VenueError) as e:
        ClobVenue(NOWHERE, NOWHERE, SIM_PRIVATE_KEY, CHAIN_ID, order_ids=wrong)
    [(order, ours)] = seen  # refused at the first sample
    theirs = client_order_hash(order, get_contract_config(CHAIN_ID).exchange_v2, CHAIN_ID)
    assert ours != theirs
    assert e.value.kind == "order_id_mismatch" and not e.value.retryable
    message = str(e.value)
    assert ours in message and theirs in message and "build_order_hash" in message


class SignsForExchangeV3(OrderBuilder):
    """The client's builder as a later release might behave: it signs for another exchange
    contract while its typed data (and so build_order_hash) still names the V2 one."""

    def build_order(self, order_args: Any, options: CreateOrderOptions, version: int = 2, **kw: Any) -> Any:
        return super().build_order(order_args, options, version=3, **kw)


def test_ids_that_are_not_the_digest_the_client_signed_refuse_to_start():
    builder = SignsForExchangeV3(Signer(SIM_PRIVATE_KEY, CHAIN_ID))
    with pytest.raises(VenueError) as e:
        check_order_ids(builder, CHAIN_ID, OrderIds(CHAIN_ID))
    assert e.value.kind == "order_id_mismatch"
    assert re.search(r"another digest than its id 0x[0-9a-f]{64}", str(e.value))


def test_an_order_of_another_version_than_the_ids_know_is_refused_before_any_commit():
    # The venue's GET /version names the order version the client signs; Baton's ids are
    # version 2's. A sim answering 3 makes the client sign for another exchange.
    clock = Clock()
    sim = ClobSim(PriceModel(5), seed=5, chain_id=CHAIN_ID, clock_ms=clock)
    app = create_app(sim)
    answer = {"version": 2}

    @web.middleware
    async def version(request: web.Request, handler: Any) -> web.StreamResponse:
        return web.json_response(answer) if request.path == "/version" else await handler(request)

    app.middlewares.append(version)
    with ThreadServer(app) as url:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID)
        try:
            m = venue.discover(f"btc-updown-5m-{clock.ms // 1000 - 100}")
            assert m is not None
            assert venue.sign_buy(m.up_token, 0.5, 5).order_id.startswith("0x")
            answer["version"] = 3
            venue._refresh_version()  # what a post answered order_version_mismatch does
            with pytest.raises(VenueError) as e:
                venue.sign_buy(m.up_token, 0.5, 5)
            assert e.value.kind == "version_mismatch" and "version 3 orders" in str(e.value)
        finally:
            venue.close()
