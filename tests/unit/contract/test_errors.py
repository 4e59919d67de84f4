"""One root error, one status map: every kind is a CascadeError and every status a real code."""

from __future__ import annotations

import grpc
import pytest

from ab_router.errors import ExperimentError
from contract.errors import GRPC_CODES, CascadeError, RepositoryError, grpc_code_name
from inference.errors import BadRequest, DeadlineExceeded, InferenceError, Unavailable
from training.errors import DataError, FactoryError


def test_every_package_error_is_a_cascade_error_except_the_standalone_router() -> None:
    for kind in (InferenceError, BadRequest, FactoryError, DataError, RepositoryError):
        assert issubclass(kind, CascadeError)
    assert not issubclass(ExperimentError, CascadeError)  # ab_router imports nothing of ours


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable, grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (InferenceError, grpc.StatusCode.INTERNAL),
    ],
)
def test_a_status_maps_to_its_grpc_code(kind: type[CascadeError], code: grpc.StatusCode) -> None:
    assert grpc.StatusCode[grpc_code_name(kind.status)] is code


def test_every_mapped_name_is_a_grpc_status_code() -> None:
    for name in GRPC_CODES.values():
        assert name in grpc.StatusCode.__members__


def test_a_grpc_code_read_back_from_another_server_keeps_its_kind() -> None:
    from contract.errors import HTTP_STATUSES, http_status
    from inference.errors import ModelNotFound, ServerError, kind_for_status

    for name in HTTP_STATUSES:
        assert name in grpc.StatusCode.__members__
    # What the graph sends as a code reads back as the same kind (a round trip).
    for kind in (BadRequest, ModelNotFound, Unavailable, DeadlineExceeded):
        assert kind_for_status(http_status(grpc_code_name(kind.status))) is kind
    assert kind_for_status(http_status("RESOURCE_EXHAUSTED")) is Unavailable  # overload passes
    assert kind_for_status(http_status("FAILED_PRECONDITION")) is BadRequest
    assert kind_for_status(http_status("DATA_LOSS")) is ServerError
