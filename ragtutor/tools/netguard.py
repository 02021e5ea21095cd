"""A guard that makes every network connection beyond this machine fail, loudly.

The course runs offline: no notebook and no test may fetch anything. The test run
installs this guard in the pytest process and, through ``ragtutor/tools/netguard_site/sitecustomize.py``,
in every Python process that pytest starts — notebook kernels included. A blocked attempt raises
:class:`NetworkBlockedError`, whose message names the refused address, so that it cannot be
mistaken for an ordinary "no internet" failure.

Allowed: Unix sockets and other local families, 127.0.0.0/8, ::1 and the name "localhost" —
Jupyter's own traffic and a test server on loopback keep working — and the one host that the
variable ``RAGTUTOR_ES_URL`` names (:data:`ALLOW_ENV`), an Elasticsearch server the learner chose
to use (:mod:`ragtutor.elastic`): its name may be looked up, and the addresses that look-up returns,
or the address the URL spells out, may be connected to. The variable is read at each check, so
setting or clearing it takes effect at once; every other host stays blocked.

What it patches, both in ``socket`` and in the C module ``_socket`` beneath it (so that a
``_socket.socket`` made directly, or a ``socket`` module reloaded after the guard was installed,
is guarded too): ``connect``, ``connect_ex``, ``sendto`` and ``sendmsg`` of sockets (every TCP
client, synchronous or asyncio, ends in ``connect``; UDP sends name their address), and the name
look-ups ``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex`` and ``gethostbyaddr`` (so that a
host name fails before any DNS query leaves the machine; ``socket.create_connection``, urllib,
requests and httpx all resolve through ``getaddrinfo``).

What it cannot reach, and what covers it instead: native code with its own sockets (libzmq, the
Rust client of ``hf_xet``) — the test run sets the Hugging Face offline variables; child
processes that skip ``sitecustomize`` (``python -I``, ``-E``, ``-S``) and programs that are not
Python (``curl``, ``wget`` in a notebook's ``!`` cell) — the test run points the proxy variables
(:data:`PROXY_ENV`) at a closed loopback port, so that every tool that honours them fails at once,
loopback exempted.
"""
import _socket
import ipaddress
import os
import socket
from urllib.parse import urlsplit

__all__ = ["NetworkBlockedError", "PROXY_ENV", "ALLOW_ENV", "install", "uninstall", "is_installed"]

# The variable that names the one server beyond loopback the guard lets through.
ALLOW_ENV = "RAGTUTOR_ES_URL"

# Proxy variables for the processes a test run starts: a closed loopback port (the discard port,
# which nothing on a test machine serves), so that curl, wget, pip and any HTTP client that
# honours them fail at once; loopback is exempt (Jupyter, local servers such as Milvus Lite).
_DEAD_PROXY = "http://127.0.0.1:9"
PROXY_ENV = {name: _DEAD_PROXY for name in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy",
                                            "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY")}
PROXY_ENV.update(no_proxy="localhost,127.0.0.1,::1", NO_PROXY="localhost,127.0.0.1,::1")

# What the guard replaced, as (module or class, attribute, original), so that uninstall() can put
# every one back.
_originals = []


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


# Addresses that a look-up of the allowed host returned, by host name: a client connects to these,
# not to the name.
_resolved = {}


def _allowed_host():
    """The host named in RAGTUTOR_ES_URL, lower-cased (an IPv6 address without its brackets), or
    None when the variable is unset, blank or names no host."""
    url = os.environ.get(ALLOW_ENV, "").strip()
    if not url:
        return None
    try:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname
    except ValueError:  # a malformed URL allows nothing
        return None
    return host or None


def _is_allowed(host):
    """True for loopback, for the host RAGTUTOR_ES_URL names and for the addresses it resolved to."""
    if _is_loopback(host):
        return True
    allowed = _allowed_host()
    if allowed is None:
        return False
    text = str(_text(host)).lower()
    if text == allowed or text in _resolved.get(allowed, ()):
        return True
    address, allowed_address = _ip(host), _ip(allowed)
    return address is not None and address == allowed_address  # "::1" spelt another way


def _remember(host, infos):
    """Record the addresses that ``getaddrinfo`` returned for the allowed host."""
    if host is not None and str(_text(host)).lower() == _allowed_host():
        _resolved.setdefault(_allowed_host(), set()).update(
            str(info[4][0]).lower() for info in infos)
    return infos


def _check(sock, address):
    # Only internet sockets leave the machine; a malformed address goes on to the real connect,
    # which explains what is wrong with it.
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
            and len(address) >= 2 and not _is_allowed(address[0]):
        raise NetworkBlockedError(address[0], address[1])


_C_SOCKET = _socket.socket  # the C type every Python socket class derives from


class _GuardedSocket(_C_SOCKET):
    """``_socket.socket`` with the guard's checks: what ``_socket.socket()`` makes while the guard
    is installed, and the base of a ``socket.socket`` class defined after it (a reloaded module)."""

    __slots__ = ()  # as the C type: socket.socket adds its own __weakref__ slot

    def connect(self, address):
        _check(self, address)
        return _C_SOCKET.connect(self, address)

    def connect_ex(self, address):
        # connect_ex reports refusals as an errno; the guard raises instead, so it is never silent.
        _check(self, address)
        return _C_SOCKET.connect_ex(self, address)

    def sendto(self, data, *args):
        # sendto(data, address) or sendto(data, flags, address)
        _check(self, args[-1])
        return _C_SOCKET.sendto(self, data, *args)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        if address is not None:
            _check(self, address)
            return _C_SOCKET.sendmsg(self, buffers, ancdata, flags, address)
        return _C_SOCKET.sendmsg(self, buffers, ancdata, flags)


def _refuse_name(host, port=None):
    # An IP literal or None resolves without a query; any other name except localhost and the
    # allowed host needs DNS.
    if host is not None and not _is_allowed(host) and _ip(host) is None:
        raise NetworkBlockedError(host, port)


def _guarded_lookups(originals):
    def getaddrinfo(host, port, *args, **kwargs):
        _refuse_name(host, port)
        return _remember(host, originals["getaddrinfo"](host, port, *args, **kwargs))

    def gethostbyname(host):
        _refuse_name(host)
        address = originals["gethostbyname"](host)
        _remember(host, [(None, None, None, None, (address, None))])
        return address

    def gethostbyname_ex(host):
        _refuse_name(host)
        name, aliases, addresses = originals["gethostbyname_ex"](host)
        _remember(host, [(None, None, None, None, (a, None)) for a in addresses])
        return name, aliases, addresses

    def gethostbyaddr(host):
        # A reverse look-up of an address beyond loopback is a DNS query too.
        if not _is_allowed(host):
            raise NetworkBlockedError(host, None)
        return originals["gethostbyaddr"](host)

    return {"getaddrinfo": getaddrinfo, "gethostbyname": gethostbyname,
            "gethostbyname_ex": gethostbyname_ex, "gethostbyaddr": gethostbyaddr}


_LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")
_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")


def _replace(owner, name, value):
    _originals.append((owner, name, owner.__dict__[name] if isinstance(owner, type)
                       else getattr(owner, name)))
    setattr(owner, name, value)


def install():
    """Block connections beyond loopback in this process. Installing twice changes nothing."""
    if _originals:
        return
    for module in (_socket, socket):
        lookups = _guarded_lookups({name: getattr(module, name) for name in _LOOKUPS})
        for name in _LOOKUPS:
            _replace(module, name, lookups[name])
    _replace(_socket, "socket", _GuardedSocket)
    # socket.socket was defined on the original C type, before the guard: give it the checks.
    for name in _METHODS:
        if name in socket.socket.__dict__:
            _originals.append((socket.socket, name, socket.socket.__dict__[name]))
        else:
            _originals.append((socket.socket, name, None))
        setattr(socket.socket, name, _GuardedSocket.__dict__[name])


def uninstall():
    """Restore everything that install() replaced."""
    while _originals:
        owner, name, original = _originals.pop()
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def is_installed():
    """True when the guard is in place — checked on the socket class in use now, so that a
    ``socket`` module reloaded without the guard's base class reads as unguarded."""
    return bool(_originals) and (socket.socket.connect is _GuardedSocket.connect
                                 or issubclass(socket.socket, _GuardedSocket))
