"""The randomized VJP benchmark's timing protocol: rotation, paired ratios, re-measurement.

No time is asserted: a fake clock makes every call's duration known.
"""

from __future__ import annotations

import math

import pytest
import torch

from tnconv.bench import randomized as bench


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock advanced by each thunk by the duration it is given; records the call order."""
    state = {"now": 0.0, "order": []}
    monkeypatch.setattr(bench, "_clock", lambda: state["now"])

    def thunk(name, durations):
        def run():
            state["order"].append(name)
            state["now"] += durations(len([n for n in state["order"] if n == name]))

        return run

    return state, thunk


def test_rounds_rotate_the_order_and_ratios_pair_one_round(fake_clock):
    state, thunk = fake_clock
    thunks = {
        "randomized": thunk("randomized", lambda i: 0.5 + 0.01 * i),
        "exact": thunk("exact", lambda i: 1.0 + 0.02 * i),
        "masked": thunk("masked", lambda i: 1.0 + 0.02 * i),
    }
    times = bench._timed(thunks, 6, torch.device("cpu"), lambda times: False)
    assert {name: len(values) for name, values in times.items()} == {"randomized": 6, "exact": 6, "masked": 6}
    rounds = [state["order"][6 + 3 * r : 9 + 3 * r] for r in range(6)]  # after 2 warm-up rounds
    assert [r[0] for r in rounds] == ["randomized", "exact", "masked"] * 2
    assert all(sorted(r) == ["exact", "masked", "randomized"] for r in rounds)
    ratios = bench.paired_ratios(times, "randomized", "exact")
    # the i-th timed call of each (warm-ups are calls 1 and 2): (0.5 + 0.01 i) / (1 + 0.02 i) = 0.5
    assert ratios == pytest.approx([0.5] * 6)
    assert bench.spread(ratios) == pytest.approx(0.0)


def test_noisy_measurements_are_extended_at_most_max_extensions_times(fake_clock):
    state, thunk = fake_clock
    thunks = {"exact": thunk("exact", lambda i: 1.0), "masked": thunk("masked", lambda i: 1.0 + (i % 2))}
    calls = []

    def noisy(times):
        calls.append(len(times["exact"]))
        return bench.spread(bench.paired_ratios(times, "masked", "exact")) > bench.NOISE

    times = bench._timed(thunks, 4, torch.device("cpu"), noisy)
    assert calls == [4 * k for k in range(1, bench.MAX_EXTENSIONS + 1)]
    assert len(times["exact"]) == 4 * (bench.MAX_EXTENSIONS + 1)


def test_small_calls_get_enough_rounds_for_min_seconds(fake_clock):
    state, thunk = fake_clock
    seconds = bench.MIN_SECONDS / 50
    thunks = {"exact": thunk("exact", lambda i: seconds), "masked": thunk("masked", lambda i: 2 * seconds)}
    times = bench._timed(thunks, 5, torch.device("cpu"), lambda times: False)
    assert len(times["exact"]) == 50
    tiny = {"exact": thunk("exact", lambda i: 1e-12), "masked": thunk("masked", lambda i: 1e-12)}
    assert len(bench._timed(tiny, 5, torch.device("cpu"), lambda times: False)["exact"]) == bench.MAX_ROUNDS


def test_rounds_are_not_sized_on_a_call_whose_time_depends_on_the_draw(fake_clock):
    # A Bernoulli draw that keeps nothing makes the randomized call (almost) free: one such
    # call must not buy MAX_ROUNDS rounds of the exact VJP and masking.
    state, thunk = fake_clock
    draws = [1e-9, 1e-9, 0.5, 1e-9, 0.5, 0.5, 1e-9, 0.5] * 50  # kept counts vary from call to call
    thunks = {
        "randomized": thunk("randomized", lambda i: draws[i - 1] * bench.MIN_SECONDS),
        "exact": thunk("exact", lambda i: bench.MIN_SECONDS),
        "masked": thunk("masked", lambda i: bench.MIN_SECONDS),
    }
    steady = ("exact", "masked")
    times = bench._timed(thunks, 4, torch.device("cpu"), lambda times: False, steady=steady)
    assert {name: len(values) for name, values in times.items()} == {"randomized": 4, "exact": 4, "masked": 4}
    # always noisy: still bounded by the extensions, whatever the draws
    times = bench._timed(thunks, 4, torch.device("cpu"), lambda times: True, steady=steady)
    assert len(times["exact"]) == 4 * (bench.MAX_EXTENSIONS + 1)
    with pytest.raises(ValueError, match="steady"):
        bench._timed(thunks, 4, torch.device("cpu"), lambda times: False, steady=("nope",))


def test_measure_sizes_bernoulli_rounds_on_the_exact_vjp(fake_clock, monkeypatch):
    # measure() itself: the randomized estimator free (empty draws), the exact VJP and masking
    # taking MIN_SECONDS each: `repeats` rounds, not MAX_ROUNDS.
    state, _ = fake_clock
    real = bench.estimators.conv_weight_vjp
    real_masked = bench._masked_vjp

    def masked(*args, **kwargs):
        state["now"] += bench.MIN_SECONDS
        return real_masked(*args, **kwargs)

    monkeypatch.setattr(bench.estimators, "conv_weight_vjp", lambda *args, **kwargs: real(*args, **kwargs))
    monkeypatch.setattr(bench, "_masked_vjp", masked)
    case = bench.Case("demo", "0", (1, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1))
    row = bench.measure(case, 0.1, mode="bernoulli", repeats=3, batch=2)
    assert row["rounds"] == 3
    assert row["vs_exact_mean"] >= 0.0


def test_draw_dependent_calls_get_min_draws_per_case_and_a_round_records_their_mean(fake_clock):
    state, thunk = fake_clock
    durations = [0.0, 2.0, 4.0] * 40  # kept counts vary: the mean per round is what a draw costs
    thunks = {
        "randomized": thunk("randomized", lambda i: durations[i - 1]),
        "exact": thunk("exact", lambda i: bench.MIN_SECONDS),
    }
    times = bench._timed(
        thunks, 4, torch.device("cpu"), lambda times: False, steady=("exact",), draws={"randomized": 30}
    )
    calls = state["order"].count("randomized")
    assert calls == 1 + 4 * 8  # the warm-up, then ceil(30 / 4) = 8 per round in 4 rounds
    assert len(times["randomized"]) == len(times["exact"]) == 4
    # round r's value is the mean of its 8 calls (call 1 was the warm-up)
    expected = [sum(durations[1 + 8 * r : 1 + 8 * (r + 1)]) / 8 for r in range(4)]
    assert times["randomized"] == pytest.approx(expected)
    assert state["order"].count("exact") == 1 + 1 + 4  # warm-up, the sizing call, the rounds
    with pytest.raises(ValueError, match="draws"):
        bench._timed(thunks, 4, torch.device("cpu"), lambda times: False, draws={"randomized": 0})


@pytest.mark.parametrize("mode", ["fixed", "bernoulli"])
def test_measure_draws_the_bernoulli_estimator_at_least_min_draws_times(mode, monkeypatch):
    real = bench.estimators.conv_weight_vjp
    count = [0]

    def counted(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.estimators, "conv_weight_vjp", counted)
    monkeypatch.setattr(bench, "MIN_SECONDS", 0.0)  # `repeats` rounds, whatever the machine
    case = bench.Case("demo", "0", (1, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1))
    monkeypatch.setattr(bench, "NOISE", float("inf"))  # no re-measurement
    row = bench.measure(case, 0.5, mode=mode, repeats=3, batch=2)
    assert row["rounds"] == 3
    timed = count[0] - 2  # one draw for the error, one warm-up
    assert timed == (3 * math.ceil(bench.MIN_DRAWS / 3) if mode == "bernoulli" else 3)


def test_spread_is_half_the_interquartile_range_over_the_median():
    assert bench.spread([1.0]) == 0.0
    assert bench.spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((4.0 - 2.0) / (2 * 3.0))


def test_measure_reports_rounds_and_a_noise_floor():
    case = bench.Case("demo", "0", (1, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1))
    rows = bench.run([case], keeps=(1.0, 0.5), repeats=2, batch=2)
    assert all(row["rounds"] >= 2 for row in rows)
    assert all(row["vs_exact"] > 0 and row["masked_vs_exact"] > 0 for row in rows)
    assert "noise floor" in bench.format_table(rows)


def test_command_line_checks_its_options(capsys):
    from tnconv.cli import build_parser, main

    bad = ((["--keeps", "2"], "--keeps"), (["--legs", "nope"], "--legs"), (["--repeats", "0"], "--repeats"))
    for argv, option in bad:
        with pytest.raises(ValueError, match=option):
            bench.run_from_args(build_parser().parse_args(["bench-randomized", *argv]))
        with pytest.raises(SystemExit) as stop:
            main(["bench-randomized", *argv])
        assert stop.value.code == 2
        assert f"tnconv bench-randomized: error: {option}" in capsys.readouterr().err
