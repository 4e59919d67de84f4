"""Human-readable experiment reports: a terminal table and a self-contained HTML page.

The HTML has two plots drawn as inline SVG (no plotting library, nothing fetched when the
page opens): the effect estimate with its always-valid confidence sequence over time, and the
assignment counts per variant.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ab_router.analysis import ExperimentReport


def table(report: ExperimentReport) -> str:
    lines = [
        f"experiment {report.experiment}: "
        + ", ".join(f"{v} {n:,} units" for v, n in report.counts.items()),
        f"sample-ratio check: p={report.srm_p_value:.3g}"
        + ("  MISMATCH: conclusions blocked" if report.srm_mismatch else "  ok")
        + (f"; {report.conflicts} units in two variants" if report.conflicts else ""),
        "",
        f"{'metric':14s} {'variant':12s} {'control':>9s} {'treat.':>9s} {'rel.':>8s} "
        f"{'p fixed':>8s} {'p valid':>8s} {'p adj.':>8s}  confidence sequence",
    ]
    for c in report.comparisons:
        lines.append(
            f"{c.metric:14s} {c.treatment:12s} {c.control_mean:9.4f} {c.treatment_mean:9.4f} "
            f"{_pct(c.relative_diff):>8s} {c.fixed_horizon_p:8.3g} {c.always_valid_p:8.3g} "
            f"{c.adjusted_p:8.3g}  [{c.cs_low:+.4f}, {c.cs_high:+.4f}]"
            + ("  *" if c.significant else "")
        )
    for g in report.guardrails:
        if not g.has_data:
            lines.append(f"guardrail {g.metric} ({g.treatment}): NO DATA: no outcomes recorded")
            continue
        lines.append(
            f"guardrail {g.metric} ({g.treatment}): change {_pct(g.relative_change)}, margin "
            f"{g.margin_relative:.0%}, p={g.p_value:.3g}: "
            + ("VIOLATED (not shown within margin)" if g.violated else "holds")
        )
    lines.append("")
    for variant, decision in report.decisions.items():
        lines.append(f"decision for {variant}: {decision.upper()}: {report.reasons[variant]}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:+.1%}"


def _effect_svg(points: Sequence[tuple[int, float, float, float]]) -> str:
    """x: exposed units; y: effect with its confidence sequence band."""
    width, height, pad = 640, 260, 40
    finite = [p for p in points if all(math.isfinite(v) for v in p[1:])]
    if len(finite) < 2:
        return "<p>Not enough data for the effect plot yet.</p>"
    xs = [p[0] for p in finite]
    # The first looks have very wide sequences; scale to the later ones so the estimate stays
    # readable, and clip the early band at the frame.
    settled = finite[len(finite) // 4 :]
    ys = [v for p in settled for v in p[1:]] + [0.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    y0, y1 = (y0 - 1e-9, y1 + 1e-9) if y0 == y1 else (y0, y1)

    def sx(x: float) -> float:
        return pad + (x - x0) / max(x1 - x0, 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        y = min(max(y, y0), y1)
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    band = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, _, hi in finite]
    band += [f"{sx(x):.1f},{sy(lo):.1f}" for x, _, lo, _ in reversed(finite)]
    line = " ".join(f"{sx(x):.1f},{sy(e):.1f}" for x, e, _, _ in finite)
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="effect over time">'
        f'<polygon points="{" ".join(band)}" fill="#9ecae1" opacity="0.6"/>'
        f'<polyline points="{line}" fill="none" stroke="#08519c" stroke-width="2"/>'
        f'<line x1="{pad}" x2="{width - pad}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" '
        'stroke="#444" stroke-dasharray="4 3"/>'
        f'<text x="{pad}" y="{height - 8}" font-size="12">exposed units: {x0:,} to {x1:,}</text>'
        f'<text x="4" y="{pad - 10}" font-size="12">effect {y1:+.4f}</text>'
        f'<text x="4" y="{height - pad + 14}" font-size="12">{y0:+.4f}</text></svg>'
    )


def _counts_svg(counts: dict[str, int]) -> str:
    width, bar, gap = 640, 26, 10
    top = max(counts.values(), default=0) or 1
    rows = []
    for i, (variant, n) in enumerate(counts.items()):
        y = i * (bar + gap)
        length = (width - 220) * n / top
        rows.append(
            f'<text x="0" y="{y + 18}" font-size="13">{html.escape(variant)}</text>'
            f'<rect x="120" y="{y}" width="{length:.1f}" height="{bar}" fill="#6baed6"/>'
            f'<text x="{125 + length:.1f}" y="{y + 18}" font-size="13">{n:,}</text>'
        )
    height = len(counts) * (bar + gap)
    return f'<svg width="{width}" height="{height}" role="img">{"".join(rows)}</svg>'


def render_html(
    report: ExperimentReport, timeline: Sequence[tuple[int, float, float, float]], title: str
) -> str:
    """A standalone page: decision, table, effect over time, assignment counts."""
    decisions = "".join(
        f"<li><b>{html.escape(v)}: {d.upper()}</b>: {html.escape(report.reasons[v])}</li>"
        for v, d in report.decisions.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.experiment)}</title>"
        "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style></head><body>"
        f"<h1>Experiment {html.escape(report.experiment)}</h1><ul>{decisions}</ul>"
        f"<h2>{html.escape(title)} over time (estimate and always-valid 95% sequence)</h2>"
        f"{_effect_svg(timeline)}<h2>Assignment counts</h2>{_counts_svg(report.counts)}"
        f"<h2>Details</h2><pre>{html.escape(table(report))}</pre></body></html>"
    )
