"""resolve_interfaces: --interface NAME|ADDR options to IPv4 addresses, on given adapters."""

from __future__ import annotations

import ifaddr
import pytest

from meshchat.discovery.interfaces import resolve_interfaces


def adapter(name: str, *ips: str | tuple[str, int, int]) -> ifaddr.Adapter:
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, 24, name) for ip in ips])


LO = adapter("lo", "127.0.0.1", ("::1", 0, 0))
ETH = adapter("eth0", "192.168.1.10", ("fe80::1", 0, 2), "10.0.0.5")
WLAN = adapter("wlan0", "172.16.0.7")
V6ONLY = adapter("wg0", ("fd00::1", 0, 0))
MACHINE = [LO, ETH, WLAN, V6ONLY]


@pytest.mark.parametrize("specs", [None, []])
def test_default_is_every_non_loopback_ipv4_address(specs: list[str] | None) -> None:
    assert resolve_interfaces(specs, MACHINE) == ["192.168.1.10", "10.0.0.5", "172.16.0.7"]


def test_default_falls_back_to_loopback() -> None:
    assert resolve_interfaces(None, [LO, V6ONLY]) == ["127.0.0.1"]
    assert resolve_interfaces(None, []) == ["127.0.0.1"]


def test_a_name_stands_for_all_its_ipv4_addresses() -> None:
    assert resolve_interfaces(["eth0"], MACHINE) == ["192.168.1.10", "10.0.0.5"]


def test_an_address_stands_for_itself() -> None:
    assert resolve_interfaces(["172.16.0.7"], MACHINE) == ["172.16.0.7"]


def test_loopback_can_be_chosen_explicitly() -> None:
    assert resolve_interfaces(["lo"], MACHINE) == ["127.0.0.1"]


def test_repeated_options_keep_order_without_duplicates() -> None:
    got = resolve_interfaces(["wlan0", "eth0", "10.0.0.5", " wlan0 "], MACHINE)
    assert got == ["172.16.0.7", "192.168.1.10", "10.0.0.5"]


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(ValueError, match="no interface named 'eth9'") as caught:
        resolve_interfaces(["eth9"], MACHINE)
    message = str(caught.value)
    for expected in ("lo (127.0.0.1)", "eth0 (192.168.1.10, 10.0.0.5)", "wg0 (no IPv4)"):
        assert expected in message


def test_unknown_address_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no interface has the address 192\.168\.1\.99"):
        resolve_interfaces(["192.168.1.99"], MACHINE)


def test_interface_without_ipv4_is_refused() -> None:
    with pytest.raises(ValueError, match="wg0 has no IPv4 address"):
        resolve_interfaces(["wg0"], MACHINE)


def test_the_machine_adapters_are_the_default() -> None:
    # Reads this machine's adapters (no sockets); loopback is always there.
    assert resolve_interfaces(["127.0.0.1"]) == ["127.0.0.1"]
