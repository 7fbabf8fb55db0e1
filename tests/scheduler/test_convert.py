"""The protobuf path validates exactly as the JSON path: same Instance, same named errors."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from lola_deft.scheduler import InstanceError, parse_instance
from lola_deft.scheduler.convert import instance_from_request, request_from_instance_doc
from tests.scheduler.test_instance import base_doc


def both(doc: dict[str, Any]) -> tuple[Any, Any]:
    def outcome(parse: Any) -> Any:
        try:
            return parse()
        except InstanceError as error:
            return str(error)

    request = request_from_instance_doc(doc, "ba")
    return outcome(lambda: parse_instance(doc)), outcome(lambda: instance_from_request(request))


def test_valid_instances_come_out_the_same() -> None:
    measured = base_doc()
    measured["devices"][0]["block_seconds"] = [0.5, 0.75]
    for doc in (base_doc(), measured):
        from_json, from_proto = both(doc)
        assert from_json.device_ids == from_proto.device_ids
        for field in ("device_memory", "spectral_efficiency", "compute_seconds", "block_memory"):
            assert np.array_equal(getattr(from_json, field), getattr(from_proto, field))


@pytest.mark.parametrize(
    ("device", "field", "value", "message"),
    [
        (0, "memory_bytes", -1.0, "devices[0].memory_bytes: must be >= 0"),
        (1, "spectral_efficiency", None, "devices[1].spectral_efficiency: is required"),
        (1, "block_seconds", [1.0, 0.0], "devices[1].block_seconds[1]: must be > 1e-09"),
        (1, "block_seconds", [1.0], "devices[1].block_seconds: must have 2 entries"),
        (0, "compute_factor", None, "devices[0].compute_factor: is required"),
        (1, "id", "a", "devices[1].id: duplicate device id 'a'"),
    ],
)
def test_malformed_devices_get_the_same_message(
    device: int, field: str, value: Any, message: str
) -> None:
    doc = copy.deepcopy(base_doc())
    if value is None:
        del doc["devices"][device][field]
    else:
        doc["devices"][device][field] = value
    from_json, from_proto = both(doc)
    assert from_json == from_proto
    assert from_json.startswith(message)
