"""The HAProxy in front of a local graph, confined to its host and refusing overload itself.

Ray Serve renders HAProxy's configuration from a template that has no setting for two
things a local run needs:

* its Prometheus and stats listeners bind every interface (``bind :9101``, ``bind *:8404``),
  with no authentication;
* every request reaches the ingress replica before anything may refuse it, so under
  overload a refusal waits its turn in a Python event loop busy with admitted work: at
  concurrency 128 on two cores that costs ~85 ms at p99, and a closed loop's refusal latency
  is bounded by how many refusals per second the replica can write (~2,800).

Ray does let the HAProxy binary be chosen (``RAY_SERVE_HAPROXY_BINARY_PATH``). Cascade's is
a two-line script that runs this module: it rewrites the rendered file (listeners onto the
graph's host; an admission rule per backend, answered by HAProxy in C) and then becomes the
real HAProxy with the same arguments, so Ray's process checks (the config path in the
command line) hold. The rules are read from a small JSON file beside the script, so a
redeploy with another admission limit applies at Ray's next reload.

The replica keeps its own admission check: it is what gRPC requests and in-cluster proxies
meet. Refusals at the front are counted by HAProxy's exporter
(``haproxy_frontend_http_responses_total{code="5xx"}``), not by ``cascade_requests_total``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from inference.graph.types import GUARDED_PATHS, OVERLOAD_MESSAGE

#: The rules file beside the wrapper script; rewritten on a redeploy.
RULES_FILE = "front.json"

_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)(.*)$")
_MARK = "# Cascade:"
_BACKEND_ACL = re.compile(r"^\s*acl\s+is_(\S+)\s+path")
_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|resolvers|peers)\b\s*(\S*)")


@dataclass(frozen=True)
class FrontRules:
    """What the rewrite applies: ``host`` for the listeners Ray binds everywhere, the
    number of guarded requests each app backend may hold before HAProxy answers 503, and
    the time a client has to send its request."""

    host: str = "127.0.0.1"
    max_in_flight: int = 64
    retry_after_s: int = 1
    #: How long a client may take to send a whole request (head and body) before a 408.
    request_timeout_s: int = 10

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)  # the wrapper never reads half a file

    @classmethod
    def read(cls, path: Path) -> FrontRules:
        return cls(**json.loads(path.read_text()))


def confine(config: str, rules: FrontRules) -> str:
    """The rendered ``config`` with wildcard listeners bound to ``rules.host`` and, in the
    HTTP frontend, requests buffered before they are passed on and a 503 for a guarded POST
    while its backend holds ``max_in_flight``. A file already rewritten is returned as it is
    (the wrapper may see one file twice: a check run, then the start)."""
    if _MARK in config:
        return config
    out: list[str] = []
    section, name = "", ""
    backends: list[str] = []  # those the HTTP frontend routes a path to (an is_<name> ACL)
    guarded = False
    for line in config.splitlines():
        header = _SECTION.match(line)
        if header:
            section, name = header.group(1), header.group(2)
        bind = _BIND.match(line)
        if bind:
            line = f"{bind.group(1)}{_host(rules.host)}:{bind.group(2)}{bind.group(3)}"
        in_http_frontend = section == "frontend" and name == "http_frontend"
        routes = line.strip().startswith(("use_backend", "default_backend"))
        if in_http_frontend and routes and not guarded:
            # http-request rules may name only ACLs declared above them.
            out.extend(_admission_rules(list(dict.fromkeys(backends)), rules))
            guarded = True
        out.append(line)
        if in_http_frontend and header:
            out.extend(_slow_client_rules(rules))
        acl = _BACKEND_ACL.match(line)
        if in_http_frontend and acl:
            backends.append(acl.group(1))
    return "\n".join(out) + "\n"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _slow_client_rules(rules: FrontRules) -> list[str]:
    return [
        f"    {_MARK} a request goes to a replica once its body is in, so a slow client",
        "    # holds a connection here rather than one of the replica's admission slots.",
        "    option http-buffer-request",
        f"    timeout http-request {rules.request_timeout_s}s",
    ]


def _admission_rules(backends: Sequence[str], rules: FrontRules) -> list[str]:
    body = json.dumps({"error": OVERLOAD_MESSAGE})
    paths = " ".join(GUARDED_PATHS)
    lines = [f"    {_MARK} refuse overload here, before the request reaches a replica."]
    for backend in backends:
        lines.append(
            f"    http-request return status 503 content-type application/json"
            f" hdr Retry-After {rules.retry_after_s} string '{body}'"
            f" if METH_POST is_{backend} {{ path_beg {paths} }}"
            f" {{ be_conn({backend}) ge {rules.max_in_flight} }}"
        )
    return lines


def install(folder: Path, rules: FrontRules, haproxy: str) -> Path:
    """Writes the wrapper script and its rules into ``folder``; returns the script's path,
    for ``RAY_SERVE_HAPROXY_BINARY_PATH``."""
    rules.write(folder / RULES_FILE)
    script = folder / "haproxy"
    script.write_text(
        "#!/bin/sh\n"
        f'exec "{sys.executable}" -m inference.graph.haproxy "{folder / RULES_FILE}"'
        f' "{haproxy}" "$@"\n'
    )
    script.chmod(0o700)
    return script


def _config_path(args: Sequence[str]) -> Path | None:
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return Path(value)
    return None


def main(argv: Sequence[str]) -> None:
    """``python -m inference.graph.haproxy RULES REAL_HAPROXY ARGS...``"""
    rules_path, haproxy, *args = argv
    config = _config_path(args)
    if config is not None and config.is_file():
        rewritten = confine(config.read_text(), FrontRules.read(Path(rules_path)))
        tmp = config.with_name(config.name + ".cascade")
        tmp.write_text(rewritten)
        tmp.replace(config)
    os.execv(haproxy, [haproxy, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
