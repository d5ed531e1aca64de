"""benchmarks/soak.py's judgement: which errors an injected fault explains, and the memory target."""

from __future__ import annotations

from benchmarks.soak import GRACE_S, Outcome, Windows, classify, summarise, targets_met


def _error(status: int, code: str) -> bytes:
    return b'{"error": {"message": "m", "type": "t", "param": null, "code": "%s"}}' % code.encode()


def test_upstream_errors_in_openai_shape_are_explained_by_faults():
    assert classify(502, _error(502, "upstream_error")) == ("502 upstream_error", True)
    assert classify(504, _error(504, "upstream_timeout"))[1] is True


def test_internal_errors_and_unshaped_bodies_are_never_expected():
    assert classify(500, _error(500, "internal_error"))[1] is False
    assert classify(400, _error(400, "invalid_value"))[1] is False
    assert classify(502, b"Bad Gateway") == ("502 not in OpenAI's shape", False)


def test_windows_cover_the_fault_and_its_grace():
    w = Windows([(10.0, 20.0)])
    assert w.covers(10) and w.covers(20 + GRACE_S) and not w.covers(9.9) and not w.covers(20.1 + GRACE_S)
    assert w.covers(9.5, 15.0)  # in flight when the fault began
    assert not w.covers(5.0, 9.9)


def test_targets_missed_on_memory_growth_or_unexpected_errors():
    outcomes = [Outcome(1.0, 0.1, False), Outcome(2.0, 0.1, True, "500 internal_error", False)]
    flat = {1: [(0.0, 100.0), (5.0, 100.0), (10.0, 105.0)]}
    grown = {1: [(0.0, 100.0), (5.0, 100.0), (10.0, 111.0)]}
    result = summarise(outcomes, 10.0, flat, 5.0, [], Windows())
    assert result["unexpected_errors"] == {"500 internal_error": 1} and not targets_met(result)
    assert targets_met(summarise(outcomes[:1], 10.0, flat, 5.0, [], Windows()))
    assert not targets_met(summarise(outcomes[:1], 10.0, grown, 5.0, [], Windows()))
