"""Health output of the model runtime: what serves the models, and whether it is ready.

The in-process fallback is reported as such (``"fallback": true``), never hidden behind a
plain "ok".
"""

from __future__ import annotations

from typing import Any

from inference.runtime import ModelRuntime


def runtime_health(runtime: ModelRuntime) -> dict[str, Any]:
    readiness = getattr(runtime, "readiness", None)
    reason = readiness(1.0) if callable(readiness) else None
    return {
        "runtime": runtime.kind,
        "fallback": runtime.kind == "onnxruntime",
        "ready": reason is None,
        **({"reason": reason} if reason is not None else {}),
    }
