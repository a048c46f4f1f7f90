"""How the dialer names an endpoint: libzmq spells addresses back in monitor events in its
own way, and every spelling of one address must find the same link."""

from __future__ import annotations

from meshchat.transport.dialer import endpoint_key
from meshchat.transport.sockets import endpoint


def test_ipv4_endpoints_match_as_given() -> None:
    assert endpoint_key(endpoint("10.0.0.2", 5555)) == ("10.0.0.2", "5555")
    assert endpoint_key("tcp://10.0.0.2:5555") != endpoint_key("tcp://10.0.0.2:5556")


def test_ipv6_spellings_are_one_address() -> None:
    ours = endpoint_key(endpoint("fe80::1%eth0", 7000))
    assert ours == endpoint_key("tcp://[fe80:0:0:0:0:0:0:1%2]:7000")
    assert ours == endpoint_key("tcp://[fe80::1]:7000") == ("fe80::1", "7000")
    assert endpoint_key("tcp://[2001:db8::1]:7000") != ours


def test_a_name_that_is_no_ip_is_kept() -> None:
    assert endpoint_key("tcp://lab-host:9") == ("lab-host", "9")
