"""Turn a MediaRef into bytes safely: inline base64, files under media roots, or vetted HTTP(S).

Every failure is a ModerationError carrying the caller's field name. Messages never echo a
URI's userinfo or query string (signed URLs carry secrets there); they name the scheme and host.
"""

from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from moderation.errors import InputTooLarge, InvalidInput, MediaFetchDenied, MediaFetchFailed

if TYPE_CHECKING:
    import httpx

    from moderation.domain import MediaRef
    from moderation.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URI_CHARS = 8192
_REMOTE_SCHEMES = frozenset({"http", "https"})
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_DATA_URL = re.compile(rf"data:{_TOKEN}/{_TOKEN}(?:;{_TOKEN}={_TOKEN})*;base64,", re.IGNORECASE)
_HOST_CHARS = re.compile(r"[a-z0-9._:%-]+")
# The numeric spellings inet_aton accepts (127.1, 2130706433, 0x7f.1, 0177.0.0.1).
_NUMERIC_V4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may come from and how much of it; build with ``from_settings``."""

    roots: tuple[Path, ...]
    schemes: frozenset[str]
    hosts: tuple[str, ...]
    allow_private: bool
    max_bytes: int
    timeout_s: float
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaPolicy:
        """The policy a deployment configured (media_roots, allowed_* and limits)."""
        return cls(
            roots=tuple(Path(root) for root in settings.media_roots),
            schemes=frozenset(s.strip().lower() for s in settings.allowed_uri_schemes),
            hosts=tuple(_normalise_pattern(h) for h in settings.allowed_hosts),
            allow_private=settings.fetch_allow_private,
            max_bytes=settings.limits.max_media_bytes,
            timeout_s=settings.limits.fetch_timeout_s,
        )


def load_media(ref: MediaRef, policy: MediaPolicy, *, field: str = "media[0]") -> bytes:
    """Return the bytes of ``ref`` or raise a ModerationError subclass naming ``field``."""
    if ref.data_b64 is not None:
        return _decode_inline(ref.data_b64, policy, field)
    if ref.uri is None:
        raise InvalidInput("media has neither 'uri' nor 'data_b64'", field=field)
    uri = ref.uri.strip()
    if not uri:
        raise InvalidInput("media URI is empty", field=field)
    if len(uri) > _MAX_URI_CHARS:
        raise InvalidInput(f"media URI is longer than {_MAX_URI_CHARS} characters", field=field)
    if uri.startswith("/") and not uri.startswith("//"):
        return _load_file(uri, policy, field)
    parts = _split(uri, field)
    scheme = parts.scheme.lower()
    if not scheme:
        raise MediaFetchDenied("media URI must be absolute and have a scheme", field=field)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise MediaFetchDenied("file URIs must not name a host", field=field)
        if parts.query or parts.fragment:
            raise InvalidInput("file URIs must not have a query or fragment", field=field)
        return _load_file(unquote(parts.path), policy, field)
    if scheme in _REMOTE_SCHEMES:
        return _fetch(uri, policy, field)
    raise MediaFetchDenied(f"URI scheme {scheme[:20]!r} is not supported", field=field)


# --- inline base64 -------------------------------------------------------------------------


def _decode_inline(data: str, policy: MediaPolicy, field: str) -> bytes:
    text = data.strip()
    if text[:5].lower() == "data:":
        match = _DATA_URL.match(text)
        if match is None:
            raise InvalidInput(
                "malformed data URL: only 'data:<type>/<subtype>;base64,' is accepted", field=field
            )
        text = text[match.end() :]
    padding = min(len(text) - len(text.rstrip("=")), 2)
    implied = len(text) * 3 // 4 - padding
    if implied > policy.max_bytes:
        raise InputTooLarge(
            f"inline media is {implied} bytes, over the limit of {policy.max_bytes} bytes",
            field=field,
            limit=policy.max_bytes,
        )
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("data_b64 is not valid base64", field=field) from None
    if not decoded:
        raise InvalidInput("inline media is empty (data_b64 decodes to no bytes)", field=field)
    return decoded


# --- local files ---------------------------------------------------------------------------


def _load_file(raw: str, policy: MediaPolicy, field: str) -> bytes:
    if "file" not in policy.schemes:
        raise MediaFetchDenied(
            "local file media is not allowed ('file' is not an allowed URI scheme)", field=field
        )
    if "\x00" in raw:
        raise InvalidInput("media file path contains a NUL byte", field=field)
    path = Path(raw)
    if not path.is_absolute():
        raise MediaFetchDenied(f"media file path {raw!r} is not absolute", field=field)
    # Refused outright rather than normalised: no legitimate caller needs '..'.
    if ".." in path.parts:
        raise MediaFetchDenied(f"media file path {raw!r} contains '..'", field=field)
    if not policy.roots:
        raise MediaFetchDenied("local file media is not allowed (no media roots)", field=field)
    try:
        resolved = path.resolve()
        roots = [root.resolve() for root in policy.roots]
    except (OSError, RuntimeError):
        raise MediaFetchDenied(f"media file path {raw!r} cannot be resolved", field=field) from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise MediaFetchDenied(f"media file {raw!r} lies outside the media roots", field=field)
    # O_NOFOLLOW: the last component was just resolved, so a symlink there now is a swap.
    # O_NONBLOCK: opening a FIFO must not hang the worker.
    flags = os.O_RDONLY
    for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        raise InvalidInput(f"media file {raw!r} does not exist", field=field) from None
    except PermissionError:
        raise MediaFetchDenied(f"media file {raw!r} is not readable", field=field) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaFetchDenied(f"media file {raw!r} is a symlink", field=field) from None
        raise InvalidInput(
            f"media file {raw!r} cannot be opened: {exc.strerror}", field=field
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"media file {raw!r} is not a regular file", field=field)
        if info.st_size > policy.max_bytes:
            raise _file_too_large(raw, info.st_size, policy, field)
        data = _read_fd(fd, policy.max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > policy.max_bytes:  # the file grew after fstat
        raise _file_too_large(raw, len(data), policy, field)
    if not data:
        raise InvalidInput(f"media file {raw!r} is empty", field=field)
    return data


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _file_too_large(raw: str, size: int, policy: MediaPolicy, field: str) -> InputTooLarge:
    return InputTooLarge(
        f"media file {raw!r} is {size} bytes, over the limit of {policy.max_bytes} bytes",
        field=field,
        limit=policy.max_bytes,
    )


# --- remote fetches ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One vetted hop: what to connect to and what to call it."""

    scheme: str
    host: str  # ASCII, lower-case, without brackets or trailing dot
    port: int
    host_header: str
    request_target: str  # path and query
    label: str  # scheme://host[:port]; safe to put in messages

    @property
    def is_ip_literal(self) -> bool:
        return _literal_ip(self.host) is not None


@dataclass(frozen=True)
class _Redirect:
    location: str


_client_lock = threading.Lock()
_client: httpx.Client | None = None


def _get_client() -> httpx.Client:
    """The process's one HTTP client, created on first use so importing stays cheap."""
    global _client
    with _client_lock:
        if _client is None:
            from http.cookiejar import CookieJar, DefaultCookiePolicy

            import httpx

            _client = httpx.Client(
                trust_env=False,
                follow_redirects=False,
                # No cookie may carry over from one caller's fetch to another's.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                # Connections are pooled by IP; reuse would send one name's request over a
                # TLS session verified for another name.
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"User-Agent": "moderation-media-fetch/1", "Accept-Encoding": "identity"},
            )
        return _client


def _fetch(uri: str, policy: MediaPolicy, field: str) -> bytes:
    deadline = time.monotonic() + policy.timeout_s
    current = uri
    redirects = 0
    while True:
        target = _vet_url(current, policy, field)
        addresses = _resolve(target, policy, field)
        result = _get(_get_client(), target, addresses, policy, field, deadline)
        if isinstance(result, bytes):
            return result
        redirects += 1
        if redirects > policy.max_redirects:
            raise MediaFetchFailed(
                f"too many redirects fetching media (more than {policy.max_redirects})",
                field=field,
            )
        following = urljoin(current, result.location)
        if target.scheme == "https" and _split(following, field).scheme.lower() == "http":
            raise MediaFetchDenied(
                f"{target.label} redirected from https to http; downgrade refused", field=field
            )
        current = following


def _split(uri: str, field: str) -> SplitResult:
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InvalidInput("media URI is malformed", field=field) from None
    # Checked before anything else so no later message can carry credentials.
    if "@" in parts.netloc:
        raise MediaFetchDenied(
            "media URIs with user credentials (userinfo 'user:password@') are refused",
            field=field,
        )
    return parts


def _vet_url(uri: str, policy: MediaPolicy, field: str) -> _Target:
    parts = _split(uri, field)
    scheme = parts.scheme.lower()
    if scheme not in _REMOTE_SCHEMES:
        raise MediaFetchDenied(
            f"URI scheme {scheme[:20]!r} is not supported for remote media", field=field
        )
    if scheme not in policy.schemes:
        raise MediaFetchDenied(f"URI scheme {scheme!r} is not allowed", field=field)
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput("media URI has an invalid port", field=field) from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidInput("media URI has no host", field=field)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise InvalidInput("media URI has an invalid host name", field=field) from None
    if not _HOST_CHARS.fullmatch(host):
        raise InvalidInput("media URI has an invalid host name", field=field)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port is None else f"{shown}:{port}"
    label = f"{scheme}://{host_header}"
    if not _host_allowed(host, policy.hosts):
        raise MediaFetchDenied(f"host {shown!r} is not in the allowed hosts", field=field)
    request_target = parts.path or "/"
    if parts.query:
        request_target += "?" + parts.query
    return _Target(
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "https" else 80),
        host_header=host_header,
        request_target=request_target,
        label=label,
    )


def _normalise_pattern(pattern: str) -> str:
    return pattern.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def _host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    literal = _literal_ip(host) is not None
    for raw in patterns:
        pattern = _normalise_pattern(raw)
        if pattern == host:
            return True
        # Wildcards name subdomains only, never the apex, and never match IP literals.
        if pattern.startswith("*.") and not literal:
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
    return False


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_V4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _resolve(target: _Target, policy: MediaPolicy, field: str) -> list[IPAddress]:
    """Every address ``target`` names; all must pass, since any one may be used."""
    literal = _literal_ip(target.host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise MediaFetchFailed(
                f"could not resolve the host of {target.label}", field=field
            ) from None
        addresses = []
        for info in infos:
            try:
                address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            except ValueError:
                continue
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise MediaFetchFailed(f"the host of {target.label} has no address", field=field)
    if not policy.allow_private:
        for address in addresses:
            problem = _address_problem(address)
            if problem is not None:
                raise MediaFetchDenied(
                    f"refused to fetch media from {target.label}: it resolves to {problem}",
                    field=field,
                    address=str(address),
                )
    return addresses


def _address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _address_problem(embedded)
            if inner is not None:
                return f"{inner} (embedded in {address})"
    checks = (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
        ("a site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("a non-public", not address.is_global),
    )
    for kind, hit in checks:
        if hit:
            return f"{kind} address {address}"
    return None


def _get(
    client: httpx.Client,
    target: _Target,
    addresses: list[IPAddress],
    policy: MediaPolicy,
    field: str,
    deadline: float,
) -> bytes | _Redirect:
    """GET ``target`` from the addresses already vetted, never re-resolving its name."""
    import httpx

    headers = {"Host": target.host_header}
    extensions: dict[str, str] = {}
    if target.scheme == "https" and not target.is_ip_literal:
        # Connecting by IP, so TLS must still be told (and verify) the real name.
        extensions["sni_hostname"] = target.host
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(target, policy, field)
        shown = f"[{address}]" if address.version == 6 else str(address)
        url = f"{target.scheme}://{shown}:{target.port}{target.request_target}"
        try:
            request = client.build_request(
                "GET", url, headers=headers, extensions=extensions, timeout=remaining
            )
            response = client.send(request, stream=True)
        except httpx.ConnectError:
            continue  # try the next vetted address, as a resolver-driven client would
        except httpx.TimeoutException:
            raise _timed_out(target, policy, field) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise MediaFetchFailed(
                f"fetching media from {target.label} failed ({type(exc).__name__})", field=field
            ) from None
        try:
            return _read(response, target, policy, field, deadline)
        except httpx.TimeoutException:
            raise _timed_out(target, policy, field) from None
        except httpx.HTTPError as exc:
            raise MediaFetchFailed(
                f"fetching media from {target.label} failed ({type(exc).__name__})", field=field
            ) from None
        finally:
            response.close()
    raise MediaFetchFailed(f"could not connect to {target.label}", field=field)


def _read(
    response: httpx.Response, target: _Target, policy: MediaPolicy, field: str, deadline: float
) -> bytes | _Redirect:
    status = response.status_code
    if status in _REDIRECT_CODES and response.headers.get("location"):
        return _Redirect(response.headers["location"])
    if not 200 <= status < 300:
        raise MediaFetchFailed(
            f"{target.label} answered HTTP {status} for the media", field=field, status=status
        )
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing would let a small body expand past every limit before it is counted.
        raise MediaFetchFailed(
            f"{target.label} sent media with unsupported Content-Encoding {encoding[:20]!r}",
            field=field,
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise InputTooLarge(
            f"media at {target.label} has Content-Length {int(declared)}, over the limit of "
            f"{policy.max_bytes} bytes",
            field=field,
            limit=policy.max_bytes,
        )
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_raw():
        total += len(chunk)
        if total > policy.max_bytes:
            raise InputTooLarge(
                f"media at {target.label} is over the limit of {policy.max_bytes} bytes",
                field=field,
                limit=policy.max_bytes,
            )
        chunks.append(chunk)
        # Per-read timeouts alone would let a slow drip run for max_bytes reads.
        if time.monotonic() > deadline:
            raise _timed_out(target, policy, field)
    body = b"".join(chunks)
    if not body:
        raise InvalidInput(f"media at {target.label} is empty", field=field)
    return body


def _timed_out(target: _Target, policy: MediaPolicy, field: str) -> MediaFetchFailed:
    return MediaFetchFailed(
        f"fetching media from {target.label} timed out after {policy.timeout_s} s", field=field
    )
