"""A guard that makes every network connection beyond this machine fail, loudly.

The course runs offline: no notebook and no test may fetch anything. The test run
installs this guard in the pytest process and, through ``ragtutor/tools/netguard_site/sitecustomize.py``,
in every Python process that pytest starts — notebook kernels included. A blocked attempt raises
:class:`NetworkBlockedError`, whose message names the refused address, so that it cannot be
mistaken for an ordinary "no internet" failure.

Allowed: Unix sockets and other local families, 127.0.0.0/8, ::1 and the name "localhost" —
Jupyter's own traffic and a test server on loopback keep working.

What it patches: ``socket.socket.connect`` and ``connect_ex`` (every TCP client, synchronous or
asyncio, ends there) and ``socket.getaddrinfo`` (so that a host name fails before any DNS query
leaves the machine; ``socket.create_connection``, urllib, requests and httpx all resolve through
it). Native code with its own sockets (libzmq, the Rust client of ``hf_xet``) is beyond its reach,
which is why the test run also sets the Hugging Face offline variables.
"""
import ipaddress
import socket

__all__ = ["NetworkBlockedError", "install", "uninstall", "is_installed"]

# The socket functions the guard replaced, so that uninstall() can put them back.
_originals = {}


class NetworkBlockedError(ConnectionError):
    """A connection beyond loopback was attempted while the guard was installed.

    A ``ConnectionError`` (an ``OSError``), so code that copes with a missing network copes with
    this too. ``host`` and ``port`` say what was refused.
    """

    def __init__(self, host, port):
        self.host, self.port = host, port
        super().__init__(
            f"ragtutor's network guard refused a connection to {host}:{port}: the course and its "
            "tests run offline (only loopback and Unix sockets are allowed). Load data and models "
            "from the repository instead of the network.")


def _text(host):
    return host.decode("ascii", "replace") if isinstance(host, bytes) else host


def _ip(host):
    """The IP address that ``host`` spells out, or None for a name."""
    try:
        return ipaddress.ip_address(_text(host))
    except ValueError:
        return None


def _is_loopback(host):
    """True for "localhost" and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x.y.z)."""
    if str(_text(host)).lower() == "localhost":
        return True
    address = _ip(host)
    if address is not None and address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def _check(sock, address):
    # Only internet sockets leave the machine; a malformed address goes on to the real connect,
    # which explains what is wrong with it.
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
            and len(address) >= 2 and not _is_loopback(address[0]):
        raise NetworkBlockedError(address[0], address[1])


def _connect(sock, address):
    _check(sock, address)
    return _originals["connect"](sock, address)


def _connect_ex(sock, address):
    # connect_ex reports refusals as an errno; the guard raises instead, so it is never silent.
    _check(sock, address)
    return _originals["connect_ex"](sock, address)


def _getaddrinfo(host, port, *args, **kwargs):
    # An IP literal or None resolves without a query; any other name except localhost needs DNS.
    if host is not None and not _is_loopback(host) and _ip(host) is None:
        raise NetworkBlockedError(host, port)
    return _originals["getaddrinfo"](host, port, *args, **kwargs)


def install():
    """Block connections beyond loopback in this process. Installing twice changes nothing."""
    if _originals:
        return
    _originals.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                      getaddrinfo=socket.getaddrinfo)
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _getaddrinfo


def uninstall():
    """Restore the socket functions that install() replaced."""
    if not _originals:
        return
    socket.socket.connect = _originals.pop("connect")
    socket.socket.connect_ex = _originals.pop("connect_ex")
    socket.getaddrinfo = _originals.pop("getaddrinfo")


def is_installed():
    return bool(_originals)
