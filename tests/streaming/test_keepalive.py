"""``keepalive.Beating`` without sockets: the opening first, beats while the work has not handed over, the
answer's own chunks after, a failure answered per ``head_sent``, and a body closed early stopping the work."""

from __future__ import annotations

import gevent
import pytest
from flask import Response

from proxy.errors import BackendUnavailable
from proxy.keepalive import Beating


def beating(work, **kw):
    calls = []
    kw.setdefault("failed", lambda exc, head_sent: calls.append(("failed", head_sent))
                  or (b"ERR" if head_sent else Response(b"ERR", status=502)))
    kw.setdefault("abandoned", lambda: calls.append(("abandoned",)))
    body = Beating(work, every_s=kw.pop("every_s", 0.05), beat=kw.pop("beat", b"."), **kw)
    return body, calls


def slow(seconds, chunks=(b"a", b"b")):
    def work():
        gevent.sleep(seconds)
        return iter(chunks)
    return work


def test_beats_go_out_while_the_work_waits_then_the_answer_follows():
    body, _ = beating(slow(0.3), opening=b"<open>")
    out = list(body)
    assert out[0] == b"<open>" and out[-2:] == [b"a", b"b"]
    assert set(out[1:-2]) == {b"."} and len(out[1:-2]) >= 3
    assert body.sent == sum(map(len, out))


def test_a_fast_answer_sends_no_beat_and_the_opening_with_its_first_chunk():
    body, _ = beating(slow(0), opening=b"<open>", every_s=5)
    assert list(body) == [b"<open>a", b"b"]


def test_first_s_zero_sends_the_opening_at_once():
    body, _ = beating(slow(0.01), opening=b"<open>", every_s=5, first_s=0)
    assert list(body) == [b"<open>", b"a", b"b"]


def test_without_beats_the_opening_still_goes_first():
    body, _ = beating(slow(0.2), opening=b"<open>", every_s=0)
    assert list(body) == [b"<open>a", b"b"]


def test_a_beat_can_number_itself():
    numbers = iter(range(100))
    body, _ = beating(slow(0.2), beat=lambda: b"%d" % next(numbers))
    beats = [x for x in body if x not in (b"a", b"b")]
    assert beats == [b"%d" % n for n in range(len(beats))]


@pytest.mark.parametrize("wait, head_sent", [(0, False), (0.2, True)])
def test_a_failure_before_the_hand_over_is_answered_per_head_sent(wait, head_sent):
    def work():
        gevent.sleep(wait)
        raise BackendUnavailable("refused")
    body, calls = beating(work, every_s=0.05 if wait else 5)
    if head_sent:
        assert list(body)[-1] == b"ERR"
    else:
        with pytest.raises(BackendUnavailable):  # no EarlyResponse: nothing to restart, the server answers
            list(body)
    assert calls[0] == ("failed", head_sent)


def test_closing_the_body_before_the_hand_over_kills_the_work_and_says_so():
    cleaned = []

    def work():
        try:
            gevent.sleep(30)
        finally:
            cleaned.append(True)
        return iter(())
    body, calls = beating(work)
    it = iter(body)
    assert next(it) == b"."
    it.close()
    assert cleaned == [True] and calls == [("abandoned",)]


def test_closing_after_the_hand_over_closes_the_answer():
    closed = []

    def chunks():
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)
    body, calls = beating(lambda: chunks(), every_s=5)
    hooks = []
    body.add_close_hook(hooks.append)
    it = iter(body)
    assert next(it) == b"a"
    it.close()
    assert closed == [True] and calls == [] and hooks == [1]
