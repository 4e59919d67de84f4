"""SLO autoscaling: ratios, bounds, hysteresis (stabilization windows), bottleneck first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from operators.crds.specs import Autoscaling, ReplicaBounds
from operators.crds.status import Recommendation
from operators.reconcile.autoscale import Signals, decide

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SPEC = Autoscaling(
    scale_up_stabilization_seconds=30,
    scale_down_stabilization_seconds=300,
    graph=ReplicaBounds(min_replicas=1, max_replicas=6),
    triton=ReplicaBounds(min_replicas=1, max_replicas=3),
)


def graph(replicas: int, p99: float | None = 10.0, in_flight: float | None = None) -> Signals:
    return Signals(replicas=replicas, latency=[(p99, 15.0)], in_flight=in_flight)


def triton(replicas: int, p99: float | None = 10.0, queue: float | None = None) -> Signals:
    return Signals(replicas=replicas, latency=[(p99, 25.0)], queue=queue)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(
    rounds: list[tuple[float, dict[str, Signals]]], spec: Autoscaling = SPEC
) -> list[dict[str, int]]:
    """Feed rounds of signals in time order; replicas carry over as the cluster would."""
    history: list[Recommendation] = []
    out = []
    for t, signals in rounds:
        d = decide(spec, signals, history, at(t))
        history = d.history
        out.append(d.replicas)
    return out


def test_pressure_is_the_worst_signal_against_its_target() -> None:
    s = Signals(
        replicas=2, latency=[(30.0, 15.0), (5.0, 10.0)], in_flight=8.0, in_flight_target=8.0
    )
    assert s.pressure() == 2.0  # latency 2x its budget beats 0.5 in-flight per target
    assert Signals(replicas=2).pressure() is None


def test_within_tolerance_nothing_moves() -> None:
    d = decide(SPEC, {"graph": graph(2, p99=15.5)}, [], T0)
    assert d.replicas == {"graph": 2}


def test_scale_up_by_the_pressure_ratio_after_the_up_window() -> None:
    hot = {"graph": graph(2, p99=30.0)}  # 2x the 15 ms budget -> 4
    # The first hot sample alone moves it: the up window holds only samples that agree.
    assert run([(0, hot)])[-1] == {"graph": 4}


def test_a_single_spike_does_not_scale_up_when_the_window_disagrees() -> None:
    calm, hot = {"graph": graph(2, p99=15.0)}, {"graph": graph(2, p99=30.0)}
    # Calm 10 s ago is inside the 30 s up window: the lowest recommendation (2) wins.
    assert run([(0, calm), (10, hot)])[-1] == {"graph": 2}
    # After the window has only hot samples, it scales.
    assert run([(0, calm), (10, hot), (45, hot)])[-1] == {"graph": 4}


def test_scale_down_waits_for_the_whole_down_window() -> None:
    busy, idle = {"graph": graph(4, p99=15.0)}, {"graph": graph(4, p99=3.0)}
    rounds = [(0, busy), (60, idle), (120, idle)]
    assert run(rounds)[-1] == {"graph": 4}  # the busy sample at t=0 is still in the 300 s window
    rounds.append((301, idle))
    assert run(rounds)[-1] == {"graph": 2}  # at most halved per decision


def test_bounds_clamp_both_ways() -> None:
    assert run([(0, {"graph": graph(5, p99=60.0)})])[-1] == {"graph": 6}
    assert run([(0, {"triton": triton(3, p99=100.0)})])[-1] == {"triton": 3}
    assert run([(0, {"graph": graph(1, p99=1.0)})])[-1] == {"graph": 1}
    # Below the minimum (first reconcile, or a raised minimum): brought up to it.
    spec = SPEC.model_copy(update={"graph": ReplicaBounds(min_replicas=2, max_replicas=6)})
    assert run([(0, {"graph": graph(0, p99=None)})], spec)[-1] == {"graph": 2}


def test_one_step_is_at_most_a_doubling() -> None:
    assert run([(0, {"graph": graph(1, p99=150.0)})])[-1] == {"graph": 2}


def test_only_the_bottleneck_scales_up() -> None:
    both_hot = {"graph": graph(2, p99=24.0), "triton": triton(1, p99=75.0)}
    d = decide(SPEC, both_hot, [], T0)
    # Triton is under 3x pressure, the graph 1.6x: only Triton grows this round.
    assert d.replicas == {"graph": 2, "triton": 2}
    assert "bottleneck" in d.reasons["triton"]
    assert "held while triton" in d.reasons["graph"]


def test_nothing_scales_down_while_another_stage_scales_up() -> None:
    signals = {"graph": graph(4, p99=2.0), "triton": triton(1, p99=75.0)}
    history = [Recommendation(deployment="graph", replicas=2, at=T0.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    d = decide(SPEC, signals, history, at(400))
    assert d.replicas == {"graph": 4, "triton": 2}


def test_queue_depth_drives_triton() -> None:
    d = decide(SPEC, {"triton": triton(1, p99=None, queue=12.0)}, [], T0)
    assert d.replicas == {"triton": 2}  # 3x the queue target, capped at a doubling


def test_disabled_runs_the_minimum() -> None:
    spec = SPEC.model_copy(update={"enabled": False})
    d = decide(spec, {"graph": graph(4, p99=100.0), "triton": triton(2)}, [], T0)
    assert d.replicas == {"graph": 1, "triton": 1}


def test_history_outside_every_window_is_dropped() -> None:
    old = Recommendation(deployment="graph", replicas=9, at="2026-11-28T00:00:00Z")
    d = decide(SPEC, {"graph": graph(2)}, [old], T0)
    assert all(r.replicas != 9 for r in d.history)
    assert len(d.history) == 1


def test_one_step_down_is_at_most_a_halving() -> None:
    spec = SPEC.model_copy(update={"scale_down_stabilization_seconds": 0})
    assert run([(0, {"triton": triton(3, p99=0.5)})], spec)[-1] == {"triton": 2}
    assert run([(0, {"graph": graph(5, p99=0.5)})], spec)[-1] == {"graph": 3}


def test_fallbacks_scale_even_when_latency_holds_its_budget() -> None:
    """Degrading stages keep p99 at the budget; their fallback rate shows the shortage."""
    degraded = Signals(replicas=1, latency=[(24.0, 25.0)], fallbacks=[(0.3, 0.01)])
    assert degraded.pressure() == 30.0
    assert decide(SPEC, {"triton": degraded}, [], T0).replicas == {"triton": 2}
    healthy = Signals(replicas=2, latency=[(24.0, 25.0)], fallbacks=[(0.0, 0.01)])
    assert decide(SPEC, {"triton": healthy}, [], T0).replicas == {"triton": 2}
