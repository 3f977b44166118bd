"""The worker's view of Redis: one object with every repository's methods, as the kernel
uses them. Each concept lives in its own module (state/intents.py, state/positions.py,
state/ledger.py, ...); this only puts them together on one client.
"""

from __future__ import annotations

from state.blocked import BlockedRepo
from state.control import ControlRepo
from state.counts import CountsRepo
from state.decisions import DecisionsRepo
from state.history import HistoryRepo
from state.inputs import InputsRepo
from state.intents import IntentsRepo
from state.journal import JournalRepo
from state.lease import LeaseRepo
from state.ledger import LedgerRepo
from state.markets import MarketsRepo
from state.positions import PositionsRepo
from state.schema import SchemaRepo
from state.settlements import SettlementsRepo
from state.slots import SlotsRepo
from state.system import SystemRepo
from state.wakes import WakesRepo
from state.workers import WorkersRepo


class Store(
    SchemaRepo,
    SlotsRepo,
    ControlRepo,
    CountsRepo,
    LeaseRepo,
    MarketsRepo,
    IntentsRepo,
    PositionsRepo,
    SettlementsRepo,
    LedgerRepo,
    HistoryRepo,
    JournalRepo,
    WorkersRepo,
    SystemRepo,
    BlockedRepo,
    DecisionsRepo,
    WakesRepo,
    InputsRepo,
):
    """Constructed as every repository is, `Store(redis, keys)`."""
