from state.keys import Keys


def test_every_key_string_is_pinned():
    k = Keys("baton:")
    assert k.schema_version() == "baton:schema:version"
    assert k.lease() == "baton:lease"
    assert k.lease_epoch() == "baton:lease:epoch"
    assert k.lease_log() == "baton:lease:log"
    assert k.control() == "baton:control"
    assert k.slots() == "baton:slots"
    assert k.candles("btc", "1s") == "baton:candles:btc:1s"
    assert k.feed_status() == "baton:feed:status"
    assert k.feed_stats() == "baton:feed:stats"
    assert k.feed_claim("btc:1s") == "baton:feed:claim:btc:1s"
    assert k.market("btc-updown-15m-1700000100") == "baton:market:btc-updown-15m-1700000100"
    assert k.ratelimit("clob:post_order:10s") == "baton:ratelimit:clob:post_order:10s"
    assert k.intents() == "baton:intents"
    assert k.intents_open() == "baton:intents:open"
    assert k.positions() == "baton:positions"
    assert k.positions_open() == "baton:positions:open"
    assert k.counts() == "baton:counts"
    assert k.ledger() == "baton:ledger"
    assert k.ledger_totals() == "baton:ledger:totals"
    assert k.ledger_refs() == "baton:ledger:refs"
    assert k.ledger_day("20261121") == "baton:ledger:day:20261121"
    assert k.journal_ticks() == "baton:journal:ticks"
    assert k.journal_errors() == "baton:journal:errors"
    assert k.blocked() == "baton:blocked"
    assert k.stats() == "baton:stats"
    assert k.worker("blue") == "baton:worker:blue"
    assert k.system("worker-blue") == "baton:system:worker-blue"
    assert k.schema_readable_by() == "baton:schema:readable_by"
    assert k.handover() == "baton:handover"
    assert k.wake("green:h:1:ab") == "baton:wake:green:h:1:ab"
    assert k.deploys() == "baton:deploys"
    assert k.reload() == "baton:reload"
    assert k.deploy_lock() == "baton:deploy:lock"
    assert k.settle_claim("btc-15m:1700000100") == "baton:settle:claim:btc-15m:1700000100"
    assert k.control_events() == "baton:control:events"
    assert k.control_ack(7) == "baton:control:ack:7"
    assert k.audit() == "baton:audit"
    assert k.decisions() == "baton:decisions"
    assert k.settle_stats() == "baton:settle:stats"
    assert k.session("ab" * 32) == "baton:session:" + "ab" * 32
    assert k.sessions() == "baton:sessions"


def test_the_prefix_is_configurable():
    assert Keys("t1:").lease() == "t1:lease"


def test_every_key_builder_is_documented_in_docs_state_md():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "state.md").read_text()
    k = Keys("baton:")
    samples = {
        "candles": ("btc", "1s"),
        "market": ("btc-updown-15m-1700000100",),
        "ledger_day": ("20261121",),
        "worker": ("blue",),
        "system": ("api",),
        "wake": ("green:host:123:ab12",),
        "control_ack": (7,),
        "ratelimit": ("binance:rest_weight:1m",),
        "settle_claim": ("btc-15m:1700000100",),
        "feed_claim": ("btc:1s",),
        "session": ("ab" * 32,),
        "decision_log": ("btc-5m",),
    }
    for name in dir(k):
        if name.startswith("_") or name == "p":
            continue
        key = getattr(k, name)(*samples.get(name, ()))
        # Documented either literally or as a pattern with <placeholders>.
        stem = key.split(":")[1]
        assert f"`baton:{stem}" in doc, f"{key} missing from docs/state.md"
