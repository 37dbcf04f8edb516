"""Redis limits admitted ahead of the verdict (LIMITS_EXACT=false): a caller far from every limit is admitted
from the process's view of the counters, near a limit every request waits for Redis, every admitted request is
counted, other processes' charges reach the view at once, and a lost channel sends everything down the exact
path. Against the real server (TEST_REDIS_URL) and a private redis-server the tests stop and start."""
from __future__ import annotations

import time

import pytest
from policy_support import *  # noqa: F401,F403
from policy_support import unique

from proxy.errors import RateLimited
from proxy.policy.limits import Limiter, Rules
from proxy.policy.rates import parse_rate


def until(predicate, seconds: float = 5.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def listening(url: str, **kw) -> Limiter:
    limiter = Limiter(url, exact=False, **kw)
    limiter.mirror.listening()
    until(limiter.mirror.listening, what="the charge channel to be subscribed")
    return limiter


def confirmed(limiter: Limiter) -> None:
    until(lambda: limiter.mirror.outstanding() == 0, what="admissions taken ahead to reach Redis")


def take(limiter: Limiter, who: str, rules: Rules):
    """One admission as the gate makes it: (taken ahead of the verdict?, its ticket)."""
    admission = limiter.begin(who, "x", rules)
    ahead = not admission.pending
    return ahead, admission.ticket()


def test_far_from_every_limit_a_request_is_admitted_without_waiting_and_counted_in_redis(shared_redis_url):
    limiter = listening(shared_redis_url, strategy="fixed-window")
    who, rules = unique("ahead"), Rules(rate=parse_rate("100/minute"))
    first = take(limiter, who, rules)
    assert first[0] is False  # nothing known of this caller yet: wait for Redis
    taken = [take(limiter, who, rules) for _ in range(5)]
    assert all(ahead for ahead, _ in taken)
    confirmed(limiter)
    key = limiter.storage.prefixed_key(rules.rate[0].key_for(who, "requests-fixed"))
    assert int(limiter.redis.get(key)) == 6


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_near_a_limit_every_request_waits_for_the_verdict_and_none_passes_it(shared_redis_url, strategy):
    limiter = listening(shared_redis_url, strategy=strategy)
    who, rules = unique("near"), Rules(rate=parse_rate("10/minute"))
    outcomes = []
    for _ in range(14):
        try:
            outcomes.append(take(limiter, who, rules)[0])
        except RateLimited as exc:
            assert "10 requests per minute" in exc.message
            outcomes.append("429")
        confirmed(limiter)
    assert outcomes.count("429") == 4 and outcomes[10:] == ["429"] * 4
    assert True in outcomes[:10]  # some were taken ahead
    assert outcomes[9] is False  # the last one before the limit waited (the headroom: 1 request of 10)


def test_an_admission_taken_ahead_is_counted_even_when_another_process_took_the_room(shared_redis_url):
    a, b = listening(shared_redis_url, strategy="fixed-window"), listening(shared_redis_url, strategy="fixed-window")
    who, rules = unique("race"), Rules(rate=parse_rate("20/minute"))
    take(a, who, rules)  # process A learns the caller's room
    for _ in range(19):  # process B uses all of it
        b.admit(who, "x", rules)
    assert take(a, who, rules)[0] is True  # A's view is older than B's admissions: admitted ahead...
    confirmed(a)
    key = a.storage.prefixed_key(rules.rate[0].key_for(who, "requests-fixed"))
    assert int(a.redis.get(key)) == 21  # ...and counted: nothing admitted goes uncounted
    with pytest.raises(RateLimited):  # its reply told A: the next request waits for Redis, and is refused
        take(a, who, rules)


def test_another_process_charging_tokens_reaches_this_process_view_at_once(shared_redis_url):
    a, b = listening(shared_redis_url), listening(shared_redis_url)
    who, rules = unique("tok"), Rules(tokens=parse_rate("100/minute"))
    a.settle(take(a, who, rules)[1], 1)
    confirmed(a)
    assert take(a, who, rules)[0] is True  # far from the token limit
    b.settle(b.admit(who, "x", rules), 150)  # process B uses up the window
    until(lambda: not a.mirror.ahead(who, rules), what="process B's charge to reach A's view")
    with pytest.raises(RateLimited) as info:
        take(a, who, rules)
    assert "100 tokens per minute" in info.value.message


def test_a_settlement_asked_before_its_ahead_admission_reached_redis_frees_the_slot_after_it(shared_redis_url):
    limiter = listening(shared_redis_url)
    who, rules = unique("slot"), Rules(concurrency=40)
    take(limiter, who, rules)[1].settled = True  # the first (exact) one stays running
    tickets = [take(limiter, who, rules) for _ in range(20)]
    assert all(ahead for ahead, _ in tickets)
    for _, ticket in tickets:
        limiter.settle(ticket, 0)  # at once: most of these admissions have not even been sent
    confirmed(limiter)
    until(lambda: limiter.slots.running(who) == 1, what="the settled slots to be released")
    time.sleep(0.2)
    assert limiter.slots.running(who) == 1  # and none comes back (a release that overtook its admission)


def test_losing_the_channel_sends_every_admission_to_redis_and_its_return_restores_the_view(private_redis):
    server = private_redis()
    limiter = listening(server.url, timeout=0.5)
    who, rules = unique("lost"), Rules(rate=parse_rate("100/minute"))
    take(limiter, who, rules)
    assert take(limiter, who, rules)[0] is True
    confirmed(limiter)
    server.stop()
    until(lambda: not limiter.mirror.listening(), what="the listener to notice")
    ahead, ticket = take(limiter, who, rules)  # Redis is gone: decided by LIMITS_FAIL_OPEN (open), not ahead
    assert ahead is False and ticket.settled
    server.start()
    until(limiter.mirror.listening, seconds=10, what="the channel to be subscribed again")
    time.sleep(1.1)  # the pause after a failure
    assert take(limiter, who, rules)[0] is False  # views from before the loss are not trusted
    assert take(limiter, who, rules)[0] is True


@pytest.mark.parametrize("settings", [{"exact": True}, {"exact": False, "fail_open": False}])
def test_limits_exact_or_failing_closed_waits_for_every_verdict(shared_redis_url, settings):
    limiter = Limiter(shared_redis_url, **settings)
    who, rules = unique("exact"), Rules(rate=parse_rate("100/minute"))
    assert limiter.mirror is None
    assert [take(limiter, who, rules)[0] for _ in range(5)] == [False] * 5
