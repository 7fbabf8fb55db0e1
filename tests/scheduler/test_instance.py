"""Every malformed-input path of parse_instance names the field and builds nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lola_deft.scheduler import InstanceError, parse_instance

EXAMPLE = Path(__file__).parents[2] / "scheduler" / "examples" / "paper_round.json"


def base_doc() -> dict[str, Any]:
    return {
        "blocks": 2,
        "block_memory_bytes": [1.0, 2.0],
        "block_seconds": [0.5, 1.0],
        "local_iterations": 4,
        "payload_bits": 1000.0,
        "bandwidth_hz": 1e6,
        "devices": [
            {"id": "a", "memory_bytes": 2, "compute_factor": 0.5, "spectral_efficiency": 2.0},
            {"id": "b", "memory_bytes": 1, "spectral_efficiency": 1.0, "block_seconds": [1, 3]},
        ],
    }


def test_cost_model_follows_the_paper() -> None:
    instance = parse_instance(base_doc())
    # J[k,l] = M d_l / f_k, or M times the device's own measured seconds.
    assert np.allclose(instance.compute_seconds, [[4.0, 8.0], [4.0, 12.0]])
    assert instance.fits.tolist() == [[True, True], [True, False]]
    # Equal bandwidth: T = J + S L / (B r_k); inf where memory does not fit.
    upload = 1000.0 * 2 / (1e6 * np.array([2.0, 1.0]))
    expected = np.array([[4.0, 8.0], [4.0, np.inf]]) + upload[:, None]
    assert np.array_equal(instance.equal_bandwidth_latency, expected)
    assert instance.depth_monotone


def test_the_embedded_example_parses() -> None:
    instance = parse_instance(json.loads(EXAMPLE.read_text()))
    assert (instance.num_devices, instance.num_blocks) == (20, 12)


def mutated(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base_doc())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


DELETE = object()

MALFORMED = [
    (("blocks",), DELETE, "blocks", "required"),
    (("blocks",), 0, "blocks", ">= 1"),
    (("blocks",), 1.5, "blocks", "integer"),
    (("blocks",), "2", "blocks", "integer"),
    (("blocks",), True, "blocks", "integer"),
    (("block_memory_bytes",), [1.0], "block_memory_bytes", "2 entries"),
    (("block_memory_bytes",), "big", "block_memory_bytes", "list"),
    (("block_memory_bytes", 1), -1.0, "block_memory_bytes[1]", ">= 0"),
    (("block_memory_bytes", 0), float("nan"), "block_memory_bytes[0]", "finite"),
    (("block_seconds", 0), 0.0, "block_seconds[0]", "> 1e-09"),
    (("block_seconds", 0), 1.7e308, "block_seconds[0]", "at most 1e+06"),
    (("block_seconds", 1), float("inf"), "block_seconds[1]", "finite"),
    (("local_iterations",), -3, "local_iterations", ">= 1"),
    (("payload_bits",), 0, "payload_bits", ">= 1"),
    (("payload_bits",), 1e300, "payload_bits", "at most 1e+15"),
    (("payload_bits",), None, "payload_bits", "required"),
    (("bandwidth_hz",), -1e6, "bandwidth_hz", ">= 1"),
    (("bandwidth_hz",), [1e6], "bandwidth_hz", "number"),
    (("devices",), [], "devices", "non-empty"),
    (("devices",), {"id": "a"}, "devices", "list"),
    (("devices", 0), "a", "devices[0]", "object"),
    (("devices", 0, "id"), "", "devices[0].id", "non-empty"),
    (("devices", 0, "id"), 7, "devices[0].id", "string"),
    (("devices", 1, "id"), "a", "devices[1].id", "duplicate"),
    (("devices", 0, "memory_bytes"), DELETE, "devices[0].memory_bytes", "required"),
    (("devices", 0, "memory_bytes"), -5, "devices[0].memory_bytes", ">= 0"),
    (("devices", 0, "compute_factor"), DELETE, "devices[0].compute_factor", "required"),
    (("devices", 0, "compute_factor"), 0, "devices[0].compute_factor", "> 1e-06"),
    (("devices", 0, "compute_factor"), 1e-320, "devices[0].compute_factor", "> 1e-06"),
    (("devices", 0, "spectral_efficiency"), 0.0, "devices[0].spectral_efficiency", "> 1e-09"),
    (("devices", 0, "spectral_efficiency"), 5e-324, "devices[0].spectral_efficiency", "> 1e-09"),
    (("devices", 0, "spectral_efficiency"), 1e6, "devices[0].spectral_efficiency", "at most"),
    (("local_iterations",), 2**32 - 1, "local_iterations", "at most 1,000,000"),
    (("blocks",), 10**9, "blocks", "at most 4,096"),
    (("devices", 1, "block_seconds"), [1.0], "devices[1].block_seconds", "2 entries"),
    (("devices", 1, "block_seconds"), [1.0, -2.0], "devices[1].block_seconds[1]", "> 1e-09"),
    (("devices", 1, "speed"), 3, "devices[1].speed", "unknown field"),
    (("bandwith_hz",), 1e6, "bandwith_hz", "unknown field"),
]


@pytest.mark.parametrize(("path", "value", "field", "problem"), MALFORMED)
def test_malformed_input_names_the_field(
    path: tuple[Any, ...], value: Any, field: str, problem: str
) -> None:
    with pytest.raises(InstanceError) as caught:
        parse_instance(mutated(path, value))
    assert caught.value.field == field
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_reference_seconds_are_needed_only_when_a_device_lacks_its_own() -> None:
    doc = mutated(("block_seconds",), DELETE)
    with pytest.raises(InstanceError, match=r"^block_seconds: is required because devices\[0\]"):
        parse_instance(doc)
    doc["devices"][0]["block_seconds"] = [2.0, 2.0]
    del doc["devices"][0]["compute_factor"]
    assert parse_instance(doc).compute_seconds[0].tolist() == [8.0, 8.0]


def test_not_an_object() -> None:
    with pytest.raises(InstanceError, match=r"^instance: must be a JSON object"):
        parse_instance([1, 2])


def test_instance_arrays_cannot_be_modified() -> None:
    instance = parse_instance(base_doc())
    with pytest.raises(ValueError):
        instance.compute_seconds[0, 0] = 0.0


def test_depth_violations_are_described() -> None:
    doc = base_doc()
    doc["devices"][1]["block_seconds"] = [3.0, 1.0]
    instance = parse_instance(doc)
    assert not instance.depth_monotone
    assert instance.first_depth_violation() == "device 'b' computes block 2 faster than block 1"
    doc["block_memory_bytes"] = [2.0, 1.0]
    assert "block_memory_bytes falls" in str(parse_instance(doc).first_depth_violation())


def test_errors_name_the_device_by_its_place_in_the_instance() -> None:
    doc = base_doc()
    doc["devices"].append({"id": "c", "memory_bytes": 1, "spectral_efficiency": 1.0})
    with pytest.raises(InstanceError, match=r"^devices\[2\]\.compute_factor: is required"):
        parse_instance(doc)
    doc["devices"][2]["compute_factor"] = 0.0
    with pytest.raises(InstanceError, match=r"^devices\[2\]\.compute_factor: must be > 1e-06"):
        parse_instance(doc)
    doc["devices"][2]["compute_factor"] = 1e-320
    with pytest.raises(InstanceError, match=r"^devices\[2\]\.compute_factor: must be > 1e-06"):
        parse_instance(doc)
    doc["devices"][2] = {"id": "a", "memory_bytes": 1, "spectral_efficiency": 1.0}
    with pytest.raises(InstanceError, match=r"^devices\[2\]\.id: duplicate device id 'a'"):
        parse_instance(doc)
    doc["devices"][2] = {"id": "c", "memory_bytes": 10**400, "spectral_efficiency": 1.0}
    with pytest.raises(InstanceError, match=r"^devices\[2\]\.memory_bytes: must be finite"):
        parse_instance(doc)
