"""The agent's side of the data port: where it dials (its fall back to gRPC needs a coordinator:
tests/server/test_data_port.py)."""

from __future__ import annotations

import pytest

from lola_deft.device_agent.data_link import split_host


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("edge:50052", "edge"),
        ("192.168.1.10:50052", "192.168.1.10"),
        ("[::1]:50052", "::1"),
        ("dns:///edge.lan:50052", "edge.lan"),
        ("edge", "edge"),
    ],
)
def test_the_data_port_is_dialled_on_the_coordinators_host(address: str, host: str) -> None:
    assert split_host(address) == host
