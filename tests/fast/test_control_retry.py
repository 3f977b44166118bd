"""A flag change whose reply is lost is retried by the client (state/connection.py); the retry
must answer as the change did, not apply it twice or refuse a resume for its own seq."""

import fakeredis

from state.control import ControlRepo, parse_control
from state.keys import Keys


def _repo() -> ControlRepo:
    return ControlRepo(fakeredis.FakeRedis(decode_responses=True), Keys("baton:"))


def test_a_retried_resume_answers_as_the_resume_did() -> None:
    repo = _repo()
    halted = repo.set_flags("halt", 1_000, "test", "cli:me", request_id="h1")
    seq = int(halted[0])
    first = repo.set_flags("resume", 2_000, "", "cli:me", expect_seq=seq, request_id="r1")
    assert int(first[0]) == seq + 1
    # The same request again (its reply lost): the same answer, not a Conflict (-1).
    again = repo.set_flags("resume", 2_001, "", "cli:me", expect_seq=seq, request_id="r1")
    assert [int(x) for x in again] == [int(x) for x in first]
    flags = parse_control(repo.r.hgetall("baton:control"))
    assert flags.seq == seq + 1 and not flags.halted


def test_a_retried_halt_is_counted_once_and_a_new_request_is_not_a_retry() -> None:
    repo = _repo()
    first = repo.set_flags("halt", 1_000, "test", "cli:me", request_id="h1")
    again = repo.set_flags("halt", 1_001, "test", "cli:me", request_id="h1")
    assert int(again[0]) == int(first[0])
    # A resume on a stale view with a new id is still refused: the guard stays.
    stale = repo.set_flags("resume", 1_002, "", "cli:me", expect_seq=int(first[0]) - 1, request_id="r2")
    assert int(stale[0]) == -1


def test_an_unreadable_stored_reply_makes_the_request_new() -> None:
    repo = _repo()
    first = repo.set_flags("halt", 1_000, "test", "cli:me", request_id="h1")
    repo.r.hset("baton:control", "request_reply", "{not json")
    again = repo.set_flags("halt", 1_001, "test", "cli:me", request_id="h1")
    assert int(again[0]) == int(first[0]) + 1
