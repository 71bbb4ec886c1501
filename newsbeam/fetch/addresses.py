"""Where a fetch may connect: the address guard under every newsbeam socket.

The check runs when a socket is opened, not when a URL is read: the host is
resolved once, *every* resolved address must pass, and the socket connects
to one of those same addresses. A name that resolves to a public address for
a check and to 127.0.0.1 for the connection (DNS rebinding) therefore cannot
reach a private service, and neither can a redirect hop, which opens a
socket like any other request.

Three tiers:

- public addresses: always allowed;
- loopback, private (RFC 1918, ULA), carrier-grade NAT, reserved and the
  like: refused unless the policy allows private addresses
  (``--allow_private_addresses`` for feeds, ``--allow_private_page_addresses``
  for pages);
- link-local (169.254.0.0/16, fe80::/10) and the cloud metadata services
  (their addresses and host names): refused under every flag. Nothing a news
  feed or an intranet page needs lives there, and a request to
  169.254.169.254 can hand out the machine's cloud credentials.

Each opened socket also joins the current exchange's deadline
(:mod:`newsbeam.fetch.deadline`).
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Optional, Union

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

from newsbeam.fetch.deadline import ResolutionTimeout, resolve, watch_socket

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Refused under every flag. Link-local holds the metadata service of AWS, GCP,
# Azure, OCI and DigitalOcean (169.254.169.254) and Tencent (169.254.0.23);
# the others are metadata or host-agent endpoints outside link-local.
NEVER_ALLOWED_NETWORKS = tuple(ipaddress.ip_network(network) for network in (
    "169.254.0.0/16",  # IPv4 link-local
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure WireServer (host agent), a public-looking address
))
# Names of metadata services, refused before any DNS lookup: on a cloud VM
# they resolve to a link-local address, elsewhere an intranet DNS could make
# them resolve anywhere.
METADATA_HOST_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata",  # GCP
    "instance-data", "instance-data.ec2.internal",  # AWS
    "metadata.tencentyun.com",  # Tencent Cloud
})
# RFC 6052: a NAT64 gateway turns 64:ff9b::a.b.c.d into a connection to a.b.c.d.
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class ConnectFailure(Exception):
    """Raised from inside urllib3's connect step.

    Deliberately not an ``OSError``: urllib3 and requests pass it through
    unwrapped, so the reason survives to the fetcher.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _parse(ip: Union[str, IPAddress]) -> Optional[IPAddress]:
    try:
        return ipaddress.ip_address(str(ip).split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv6 form reaches: ::ffff:a.b.c.d, 6to4, NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_never_allowed_address(ip: Union[str, IPAddress]) -> bool:
    """True for link-local and cloud metadata addresses (and their IPv6 forms); unparsable counts."""
    address = _parse(ip)
    if address is None:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and is_never_allowed_address(embedded):
            return True
    return address.is_link_local or any(
        address.version == network.version and address in network for network in NEVER_ALLOWED_NETWORKS)


def is_private_address(ip: Union[str, IPAddress]) -> bool:
    """True for any address a fetch must not reach by default.

    Loopback, private (RFC 1918, ULA), link-local (169.254.169.254 cloud
    metadata included), carrier-grade NAT, unspecified, multicast, reserved
    and documentation ranges all count; so does an IPv6 form (mapped, 6to4,
    NAT64) of any of them. Anything unparsable counts as private (fail closed).
    """
    address = _parse(ip)
    if address is None:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
            return is_private_address(embedded)
        if embedded is not None and is_private_address(embedded):
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def is_metadata_host_name(host: str) -> bool:
    return host.lower().rstrip(".") in METADATA_HOST_NAMES


def address_refusal(host: str, addresses: list[str], allow_private_addresses: bool) -> Optional[str]:
    """Why ``host`` (resolved to ``addresses``) must not be connected to; None when it may."""
    never = [address for address in addresses if is_never_allowed_address(address)]
    if never:
        return (f"{host!r} resolves to {never[0]}, a link-local or cloud metadata address, "
                f"which is never fetched (no flag allows it)")
    if not allow_private_addresses:
        blocked = [address for address in addresses if is_private_address(address)]
        if blocked:
            return f"{host!r} resolves to non-public address {blocked[0]}"
    return None


class _GuardedConnectionMixin:
    """Resolve once, check every address, connect only to a checked one."""

    allow_private_addresses = False

    def _new_conn(self) -> socket.socket:
        host = self._dns_host  # type: ignore[attr-defined]
        port = self.port  # type: ignore[attr-defined]
        if is_metadata_host_name(host):
            raise ConnectFailure("blocked_address",
                                 f"{host!r} is a cloud metadata host name, which is never fetched")
        try:
            infos = resolve(host, port)  # ends at the exchange's deadline, like its sockets
        except ResolutionTimeout as exc:
            raise ConnectFailure("timeout", str(exc)) from exc
        except (socket.gaierror, UnicodeError) as exc:
            raise ConnectFailure("dns", f"cannot resolve {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        refusal = address_refusal(host, addresses, self.allow_private_addresses)
        if refusal:
            raise ConnectFailure("blocked_address", refusal)
        failure = ConnectFailure("connection_error", f"no address for {host!r}")
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (address, port),
                    self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except socket.timeout as exc:
                failure = ConnectFailure("timeout", f"connect to {address} timed out")
                failure.__cause__ = exc
            except ConnectionRefusedError as exc:
                failure = ConnectFailure("connection_refused", f"{address}:{port} refused")
                failure.__cause__ = exc
            except OSError as exc:
                failure = ConnectFailure("connection_error", f"{address}:{port}: {exc}")
                failure.__cause__ = exc
            else:
                try:
                    watch_socket(sock)  # before TLS: the handshake is inside the deadline too
                except OSError as exc:  # no descriptor left to watch it with: fail closed
                    sock.close()
                    raise ConnectFailure("connection_error", f"cannot watch {address}:{port}: {exc}") from exc
                return sock
        raise failure

    def getresponse(self, *args, **kwargs):
        if self.sock is not None:  # type: ignore[attr-defined]
            # A kept-alive socket was opened by an earlier exchange; it joins this one's deadline.
            watch_socket(self.sock)  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _CheckedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _PrivateHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    allow_private_addresses = True


class _PrivateHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    allow_private_addresses = True


def _pool_classes(allow_private_addresses: bool) -> dict[str, type]:
    http_cls = _PrivateHTTPConnection if allow_private_addresses else _CheckedHTTPConnection
    https_cls = _PrivateHTTPSConnection if allow_private_addresses else _CheckedHTTPSConnection
    return {
        "http": type("_HTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_cls}),
        "https": type("_HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_cls}),
    }


class AddressCheckingAdapter(HTTPAdapter):
    """A ``requests`` adapter whose every connection goes through the guard above."""

    def __init__(self, allow_private_addresses: bool) -> None:
        self._pool_classes = _pool_classes(allow_private_addresses)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
