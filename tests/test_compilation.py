import threading

import pytest

from inas_jax.runtime.compilation import CompileAhead


def _blocking(ran):
    """A warm-up that runs until released: (function, started, release)."""
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        ran.append("slow")
    return slow, started, release


def test_claim_waits_for_a_started_warm_up_and_cancels_a_queued_one():
    ran = []
    slow, started, release = _blocking(ran)
    with CompileAhead(enabled=True) as ahead:
        ahead.submit("a", slow)
        ahead.submit("b", lambda: ran.append("b"))  # queued behind "a" on the one thread
        ahead.submit("a", lambda: ran.append("again"))  # once per key
        assert started.wait(10)
        ahead.claim("b")  # not started: cancelled, the caller does the work
        threading.Timer(0.2, release.set).start()
        ahead.claim("a")  # started: returns once it has finished
        assert ran == ["slow"]
        ahead.claim("never submitted")
    assert ran == ["slow"]


def test_a_failed_warm_up_is_left_to_the_real_call_and_a_disabled_one_does_nothing():
    def broken():
        raise ValueError("shapes")

    with CompileAhead(enabled=True) as ahead:
        ahead.submit("x", broken)
        ahead.claim("x")  # no raise: the real call meets the error in its own context
    ran = []
    with CompileAhead(enabled=False) as ahead:
        ahead.submit("x", lambda: ran.append(1))
        ahead.claim("x")
    assert ran == []


def test_leaving_cancels_what_has_not_started_and_waits_for_a_running_one_unless_interrupted():
    ran = []
    slow, started, release = _blocking(ran)
    with pytest.raises(KeyboardInterrupt):
        with CompileAhead(enabled=True) as ahead:
            ahead.submit("a", slow)
            ahead.submit("b", lambda: ran.append("b"))
            assert started.wait(10)
            raise KeyboardInterrupt
    assert ran == []  # the interrupt went on while "a" still ran; "b" never starts
    release.set()

    ran = []
    slow, started, release = _blocking(ran)
    with CompileAhead(enabled=True) as ahead:
        ahead.submit("a", slow)
        assert started.wait(10)
        threading.Timer(0.2, release.set).start()
    assert ran == ["slow"]  # a clean exit waited for it
