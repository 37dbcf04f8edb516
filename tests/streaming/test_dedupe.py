"""``proxy.dedupe`` without sockets: the first of a key leads and the others follow; a follower reads what came
so far and the rest; a failure before any byte is the follower's; a cut answer, an overflow and a leader that
left end the follower with an error; an ended twin takes no more followers."""
from __future__ import annotations

import threading

import pytest

from proxy import dedupe
from proxy.errors import BackendUnavailable, UpstreamStatus


def test_the_first_of_a_key_leads_and_the_next_follows_until_it_ends():
    twins = dedupe.Twins()
    shared, leading = twins.join(("k",), "leader")
    assert leading and twins.join(("k",), "other") == (shared, False) and shared.followers == 1
    assert twins.join(("other",), "x")[1]
    shared.end(True)
    assert twins.join(("k",), "late")[1]  # an ended twin takes nobody: a new leader
    twins.leave(("k",), shared)  # the old leader leaving does not remove the new one
    assert twins.running() == 2


def test_a_follower_reads_what_came_so_far_then_the_rest():
    shared = dedupe.Shared("leader")
    shared.add(b"a")
    shared.add(b"b")
    reader = shared.read()
    assert next(reader) == b"ab"
    threading.Timer(0.05, lambda: (shared.add(b"c"), shared.end(True))).start()
    assert b"".join(reader) == b"c"


def test_a_failure_before_any_byte_is_raised_to_the_follower():
    shared = dedupe.Shared("leader")
    shared.end(False, UpstreamStatus("busy", status=503))
    with pytest.raises(UpstreamStatus):
        next(shared.read())


@pytest.mark.parametrize("how, message", [("left", "send the request again"), ("overflow", "grew past")])
def test_a_cut_answer_ends_the_follower_with_an_error(how, message, monkeypatch):
    monkeypatch.setattr(dedupe, "MAX_SHARED_BYTES", 4)
    shared = dedupe.Shared("leader")
    shared.add(b"abc")
    if how == "left":
        shared.end(False, BackendUnavailable("the client closed the connection"))
    else:
        shared.add(b"de")
    reader = shared.read()
    assert next(reader) == b"abc"
    with pytest.raises(BackendUnavailable, match=message):
        next(reader)
