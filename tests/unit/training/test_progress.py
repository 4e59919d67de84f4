"""Progress off a terminal: a line every interval saying how far and how long is left."""

from __future__ import annotations

from training.progress import Progress


def test_lines_come_at_the_interval_with_share_and_time_left() -> None:
    now = [0.0]
    lines: list[str] = []
    bar = Progress(
        100, "retrieval", "step", terminal=False, clock=lambda: now[0], emit=lines.append
    )
    for _ in range(25):
        now[0] += 0.1  # 2.5 s for 25 steps: no line yet
        bar.update()
    assert lines == []
    now[0] = 10.0
    bar.set_postfix(loss="0.512")
    bar.update()
    assert lines == ["   retrieval: 26/100 steps (26%), 10s elapsed, ~28s left; loss 0.512"]
    bar.close()  # the last line says where it ended
    assert lines[-1].startswith("   retrieval: 26/100 steps")


def test_nothing_when_disabled() -> None:
    lines: list[str] = []
    bar = Progress(10, "x", "step", enabled=False, terminal=False, emit=lines.append)
    for _ in range(10):
        bar.update()
    bar.close()
    assert lines == []
