"""Turning ``--interface NAME|ADDR`` options into the IPv4 addresses to announce and bind."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import ifaddr

from ..errors import ConfigError

LOOPBACK_FALLBACK = "127.0.0.1"


def ipv4_addresses(adapter: ifaddr.Adapter) -> list[str]:
    """The IPv4 addresses of one adapter, in the order the system reports them."""
    return [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]


def resolve_interfaces(
    specs: Sequence[str] | None, adapters: Sequence[ifaddr.Adapter] | None = None
) -> list[str]:
    """The IPv4 addresses that ``specs`` (interface names or addresses) stand for.

    No specs means every non-loopback IPv4 address, or loopback when there is none.
    ``adapters`` defaults to the machine's (``ifaddr.get_adapters()``).
    Raises ``ConfigError`` (a ``ValueError``) naming the interfaces that exist when a spec
    matches none of them.
    """
    known = list(ifaddr.get_adapters() if adapters is None else adapters)
    if not specs:
        found = [
            address
            for adapter in known
            for address in ipv4_addresses(adapter)
            if not ipaddress.IPv4Address(address).is_loopback
        ]
        return _unique(found) or [LOOPBACK_FALLBACK]
    resolved: list[str] = []
    for spec in specs:
        resolved.extend(_resolve_one(spec.strip(), known))
    return _unique(resolved)


def describe_interfaces(adapters: Sequence[ifaddr.Adapter]) -> str:
    """A one-line list of the adapters and their IPv4 addresses, for error messages."""
    parts = []
    for adapter in adapters:
        addresses = ipv4_addresses(adapter)
        parts.append(f"{adapter.nice_name} ({', '.join(addresses) or 'no IPv4'})")
    return "; ".join(parts) or "none"


def _resolve_one(spec: str, adapters: Sequence[ifaddr.Adapter]) -> list[str]:
    if _is_ipv4(spec):
        if any(spec in ipv4_addresses(adapter) for adapter in adapters):
            return [spec]
        raise ConfigError(
            f"no interface has the address {spec}; interfaces: {describe_interfaces(adapters)}"
        )
    for adapter in adapters:
        if spec in (adapter.name, adapter.nice_name):
            addresses = ipv4_addresses(adapter)
            if not addresses:
                raise ConfigError(
                    f"interface {spec} has no IPv4 address; "
                    f"interfaces: {describe_interfaces(adapters)}"
                )
            return addresses
    raise ConfigError(
        f"no interface named {spec!r}; interfaces: {describe_interfaces(adapters)}"
    )


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
