"""The metric names a PromQL expression reads, found by a small tokenizer instead of a parser.

It knows just enough PromQL to tell metric names from everything else: functions and
aggregations (an identifier before ``(``, or an aggregation before ``by``/``without``),
keywords, label names (inside ``{}`` and in the lists after ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right``), strings, range selectors and durations, numbers,
and Grafana's ``$variables``. Characters it does not know raise, so a dashboard cannot slip
an unchecked expression past it.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
)
#: Aggregation operators: a name before ``(``, ``by`` or ``without`` is one of these.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
#: Keywords followed by a parenthesised list of label names, not of expressions.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@,:(){}\[\]])
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)

_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<args>.*)\)\s*$", re.S)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs, spaces dropped; raises ``ValueError`` on an unknown character."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    toks = tokens(expr)
    names: set[str] = set()
    braces = brackets = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text in ("{", "}", "[", "]"):
            braces += {"{": 1, "}": -1}.get(text, 0)
            brackets += {"[": 1, "]": -1}.get(text, 0)
        elif kind == "ident" and braces == 0 and brackets == 0:
            word = text.lower()
            if word in LABEL_LISTS and following == "(":
                i = next(j for j in range(i + 2, len(toks)) if toks[j][1] == ")")
            elif word in AGGREGATIONS and following.lower() in ("by", "without"):
                pass
            elif word not in KEYWORDS and following != "(":
                names.add(text)
        i += 1
    if braces or brackets:
        raise ValueError(f"unbalanced braces or brackets in {expr!r}")
    return names


def grafana_query_metrics(query: str) -> set[str]:
    """Metric names of a Grafana template-variable query (``label_values(metric, label)``)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return metric_names(query)
    args = match.group("args")
    if "," not in args:
        return set()  # label_values(label): every series, no metric named
    return metric_names(args.rsplit(",", 1)[0])
