"""Tests for moderation.media: inline, file and HTTP(S) media loading and its refusals."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from moderation import media
from moderation.domain import MediaRef
from moderation.errors import (
    InputTooLarge,
    InvalidInput,
    MediaFetchDenied,
    MediaFetchFailed,
    ModerationError,
)
from moderation.media import MediaPolicy, load_media
from moderation.settings import Limits, Settings

pytestmark = pytest.mark.timeout(10)

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value
LIMIT = 64 * 1024
PUBLIC_IP = "93.184.216.34"  # a global address; the fake network routes it to the test server

_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


def policy(**changes: Any) -> MediaPolicy:
    base = MediaPolicy(
        roots=(),
        schemes=frozenset({"http", "https"}),
        hosts=(),
        allow_private=False,
        max_bytes=LIMIT,
        timeout_s=1.0,
    )
    return replace(base, **changes)


def uri(value: str) -> MediaRef:
    return MediaRef(kind="image", uri=value)


def inline(value: str) -> MediaRef:
    return MediaRef(kind="image", data_b64=value)


def refused(
    exc_type: type[ModerationError], ref: MediaRef, pol: MediaPolicy, *needles: str
) -> ModerationError:
    """Assert loading fails with exactly ``exc_type``, on the field, naming every needle."""
    with pytest.raises(ModerationError) as info:
        load_media(ref, pol, field="media[3]")
    err = info.value
    assert type(err) is exc_type, f"{type(err).__name__}: {err.message}"
    assert err.field == "media[3]"
    for needle in needles:
        assert needle in err.message, err.message
    return err


# --- a real local HTTP server ----------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, location: str) -> None:
        self._send(302, headers={"Location": location})

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        port = self.server.server_address[1]
        routes: dict[str, Callable[[], None]] = {
            "/bytes": lambda: self._send(200, PAYLOAD, {"Content-Type": "image/png"}),
            "/host": lambda: self._send(200, self.headers.get("Host", "").encode()),
            "/empty": lambda: self._send(200),
            "/missing": lambda: self._send(404, b"no such thing"),
            "/gzip": lambda: self._send(200, b"\x1f\x8b...", {"Content-Encoding": "gzip"}),
            "/redirect-relative": lambda: self._redirect("/bytes"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
            "/redirect-loopback": lambda: self._redirect(f"http://127.0.0.1:{port}/bytes"),
            "/redirect-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data"),
            "/redirect-rebind": lambda: self._redirect(f"http://rebind.example.test:{port}/bytes"),
            "/redirect-private": lambda: self._redirect(f"http://10.0.0.5:{port}/bytes"),
            "/redirect-loopback6": lambda: self._redirect(f"http://[::1]:{port}/bytes"),
            "/redirect-linklocal6": lambda: self._redirect(f"http://[fe80::1]:{port}/bytes"),
            "/redirect-linklocal-name": lambda: self._redirect(
                f"http://ll.example.test:{port}/bytes"
            ),
            "/redirect-file": lambda: self._redirect("file:///etc/passwd"),
            "/redirect-userinfo": lambda: self._redirect(
                f"http://user:hunter2@127.0.0.1:{port}/bytes"
            ),
            "/huge-length": self._huge_length,
            "/chunked": self._chunked,
            "/slow": self._slow,
            "/drip": self._drip,
        }
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(404)
            return
        # The client hanging up early (limits, timeouts) is what several tests provoke.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route()

    def _huge_length(self) -> None:
        self._send(200, b"x" * 100, {"Content-Length": str(10**12)})

    def _chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"y" * 16384
        for _ in range(LIMIT // len(chunk) + 4):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def _slow(self) -> None:
        time.sleep(1.0)
        self._send(200, PAYLOAD)

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "40")
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(40):
            self.wfile.write(b"z")
            self.wfile.flush()
            time.sleep(0.05)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str]]


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def port(server: _Server) -> int:
    server.seen.clear()
    return server.server_address[1]


@pytest.fixture()
def local() -> MediaPolicy:
    return policy(allow_private=True, hosts=("127.0.0.1", "localhost"))


# --- a fake resolver and network, so "public" names can be pointed at the local server -------


class FakeNet:
    """Answers for chosen names, in order; routes PUBLIC_IP:port to 127.0.0.1:port."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        self.routes: dict[tuple[str, int], int] = {}

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.answers:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(name)
        queue = self.answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        out: list[Any] = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out

    def create_connection(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host, port = address[0], int(address[1])
        self.connects.append((host, port))
        if host == PUBLIC_IP:
            target = self.routes.get((host, port), port)
            return _real_create_connection(("127.0.0.1", target), *args, **kwargs)
        if host in ("127.0.0.1", "::1"):
            return _real_create_connection(address, *args, **kwargs)
        raise ConnectionRefusedError(f"test network has no route to {host}")


@pytest.fixture()
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", fake.create_connection)
    return fake


# --- policy ------------------------------------------------------------------------------------


def test_policy_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        media_roots=[tmp_path],
        allowed_uri_schemes=["HTTPS", "file"],
        allowed_hosts=["CDN.Example.com.", "*.img.example.com"],
        fetch_allow_private=False,
        limits=Limits(max_media_bytes=1234, fetch_timeout_s=2.5),
    )
    pol = MediaPolicy.from_settings(settings)
    assert pol.roots == (tmp_path,)
    assert pol.schemes == frozenset({"https", "file"})
    assert pol.hosts == ("cdn.example.com", "*.img.example.com")
    assert (pol.allow_private, pol.max_bytes, pol.timeout_s, pol.max_redirects) == (
        False,
        1234,
        2.5,
        3,
    )


# --- inline base64 -----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_base64_valid() -> None:
    assert load_media(inline(b64(PAYLOAD)), policy()) == PAYLOAD


@pytest.mark.parametrize(
    "wrapped",
    [
        "  {}\n",
        "data:image/png;base64,{}",
        "DATA:image/jpeg;name=a.jpg;base64,{}",
        "\n data:video/mp4;base64,{} \n",
    ],
)
def test_base64_whitespace_and_data_url(wrapped: str) -> None:
    assert load_media(inline(wrapped.format(b64(PAYLOAD))), policy()) == PAYLOAD


@pytest.mark.parametrize(
    "value",
    ["not base64!", "aGVsbG8", "aGVs bG8=", "aGVs\nbG8=", "aGVsbG8=é", "aGVsbG8=aGVsbG8="],
)
def test_base64_invalid(value: str) -> None:
    refused(InvalidInput, inline(value), policy(), "not valid base64")


@pytest.mark.parametrize(
    "value", ["data:image/png,aGVsbG8=", "data:;base64,aGVsbG8=", "data:image/png;base64;x,aGk="]
)
def test_base64_malformed_data_url(value: str) -> None:
    refused(InvalidInput, inline(value), policy(), "data URL")


def test_base64_size_limit_is_exact() -> None:
    assert load_media(inline(b64(b"a" * 30)), policy(max_bytes=30)) == b"a" * 30
    err = refused(InputTooLarge, inline(b64(b"a" * 31)), policy(max_bytes=30), "31", "limit of 30")
    assert err.detail["limit"] == 30


def test_base64_size_refused_before_decoding() -> None:
    # Invalid characters would fail decoding; the size check must come first.
    refused(InputTooLarge, inline("!" * 4000), policy(max_bytes=100), "over the limit")


@pytest.mark.parametrize("value", ["", "   ", "data:image/png;base64,"])
def test_base64_empty(value: str) -> None:
    refused(InvalidInput, inline(value), policy(), "empty")


# --- local files -------------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "cat.jpg").write_bytes(PAYLOAD)
    (root / "with space.jpg").write_bytes(b"spaced")
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "escape-dir").symlink_to(outside)
    (root / "inner-link.jpg").symlink_to(root / "sub" / "cat.jpg")
    return {"root": root, "outside": outside}


@pytest.fixture()
def files(tree: dict[str, Path]) -> MediaPolicy:
    return policy(roots=(tree["root"],), schemes=frozenset({"file"}))


def test_file_inside_root(tree: dict[str, Path], files: MediaPolicy) -> None:
    path = tree["root"] / "sub" / "cat.jpg"
    assert load_media(uri(str(path)), files) == PAYLOAD
    assert load_media(uri(path.as_uri()), files) == PAYLOAD
    assert load_media(uri(f"file://localhost{path}"), files) == PAYLOAD
    assert load_media(uri((tree["root"] / "with space.jpg").as_uri()), files) == b"spaced"
    assert load_media(uri(str(tree["root"] / "inner-link.jpg")), files) == PAYLOAD


def test_file_scheme_must_be_allowed(tree: dict[str, Path], files: MediaPolicy) -> None:
    path = str(tree["root"] / "sub" / "cat.jpg")
    refused(MediaFetchDenied, uri(path), replace(files, schemes=frozenset({"https"})), "file")


def test_file_needs_roots(tree: dict[str, Path], files: MediaPolicy) -> None:
    path = str(tree["root"] / "sub" / "cat.jpg")
    refused(MediaFetchDenied, uri(path), replace(files, roots=()), "no media roots")


def test_file_outside_root(tree: dict[str, Path], files: MediaPolicy) -> None:
    path = str(tree["outside"] / "secret.jpg")
    refused(MediaFetchDenied, uri(path), files, "outside the media roots")
    refused(MediaFetchDenied, uri("/etc/passwd"), files, "outside the media roots")


@pytest.mark.parametrize("name", ["escape.jpg", "escape-dir/secret.jpg"])
def test_file_symlink_escape(tree: dict[str, Path], files: MediaPolicy, name: str) -> None:
    path = tree["root"] / name
    refused(MediaFetchDenied, uri(str(path)), files, "outside the media roots")
    refused(MediaFetchDenied, uri(path.as_uri()), files, "outside the media roots")


def test_file_dotdot(tree: dict[str, Path], files: MediaPolicy) -> None:
    root = tree["root"]
    refused(MediaFetchDenied, uri(f"{root}/../outside/secret.jpg"), files, "'..'")
    refused(MediaFetchDenied, uri(f"file://{root}/%2e%2e/outside/secret.jpg"), files, "'..'")
    # Even a '..' that would stay inside the root is refused.
    refused(MediaFetchDenied, uri(f"{root}/sub/../sub/cat.jpg"), files, "'..'")


def test_file_missing_names_path(tree: dict[str, Path], files: MediaPolicy) -> None:
    path = str(tree["root"] / "sub" / "nope.jpg")
    refused(InvalidInput, uri(path), files, path, "does not exist")


def test_file_too_large_checked_before_reading(
    tree: dict[str, Path], files: MediaPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tree["root"] / "big.bin"
    with path.open("wb") as fh:
        fh.truncate(LIMIT + 1)

    def no_read(fd: int, limit: int) -> bytes:
        raise AssertionError("read before the size check")

    monkeypatch.setattr(media, "_read_fd", no_read)
    err = refused(InputTooLarge, uri(str(path)), files, str(path), f"limit of {LIMIT}")
    assert err.detail["limit"] == LIMIT


def test_file_not_regular_or_empty(tree: dict[str, Path], files: MediaPolicy) -> None:
    refused(InvalidInput, uri(str(tree["root"] / "sub")), files, "not a regular file")
    os.mkfifo(tree["root"] / "fifo")
    refused(InvalidInput, uri(str(tree["root"] / "fifo")), files, "not a regular file")
    (tree["root"] / "empty.jpg").write_bytes(b"")
    refused(InvalidInput, uri(str(tree["root"] / "empty.jpg")), files, "empty")


def test_file_uri_with_host_or_relative(tree: dict[str, Path], files: MediaPolicy) -> None:
    refused(MediaFetchDenied, uri(f"file://evil.example{tree['root']}/sub/cat.jpg"), files, "host")
    refused(MediaFetchDenied, uri("file:sub/cat.jpg"), files, "not absolute")


# --- URI checks that need no network -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "http://user:hunter2@127.0.0.1/x.jpg",
        "https://user:hunter2@cdn.example.com/x.jpg",
        "https://hunter2@cdn.example.com/x.jpg",
        "file://user:hunter2@localhost/etc/passwd",
        "ftp://user:hunter2@cdn.example.com/x.jpg",
        "http://cdn.example.com\\@hunter2.evil/x.jpg",
    ],
)
def test_userinfo_refused_and_not_echoed(value: str) -> None:
    pol = policy(allow_private=True, hosts=("127.0.0.1", "cdn.example.com"))
    err = refused(MediaFetchDenied, uri(value), pol, "userinfo")
    assert "hunter2" not in err.message
    assert "hunter2" not in str(err.to_dict())


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        ("ftp://cdn.example.com/x.jpg", "ftp"),
        ("gopher://cdn.example.com:70/_x", "gopher"),
        ("javascript:alert(1)", "javascript"),
        ("data:image/png;base64,aGVsbG8=", "data"),
        ("dict://127.0.0.1:6379/info", "dict"),
    ],
)
def test_unknown_schemes_refused(value: str, scheme: str) -> None:
    pol = policy(schemes=frozenset({"http", "https", "file", scheme}), hosts=("cdn.example.com",))
    refused(MediaFetchDenied, uri(value), pol, f"'{scheme}' is not supported")


@pytest.mark.parametrize("value", ["images/cat.jpg", "//cdn.example.com/x.jpg"])
def test_relative_uri_refused(value: str) -> None:
    refused(MediaFetchDenied, uri(value), policy(hosts=("cdn.example.com",)), "scheme")


def test_scheme_not_in_policy(net: FakeNet) -> None:
    pol = policy(schemes=frozenset({"https"}), hosts=("cdn.example.com",))
    refused(MediaFetchDenied, uri("http://cdn.example.com/x.jpg"), pol, "'http' is not allowed")
    assert net.connects == []


@pytest.mark.parametrize(
    ("hosts", "value"),
    [
        ((), "https://cdn.example.com/x.jpg"),
        (("cdn.example.com",), "https://cdn.example.com.evil.test/x.jpg"),
        (("cdn.example.com",), "https://evilcdn.example.com/x.jpg"),
        (("*.example.com",), "https://example.com/x.jpg"),
        (("*.example.com",), "https://cdn.example.com.evil.test/x.jpg"),
        (("*.0.0.1",), "http://127.0.0.1/x.jpg"),
    ],
)
def test_host_not_allowed(net: FakeNet, hosts: tuple[str, ...], value: str) -> None:
    refused(MediaFetchDenied, uri(value), policy(hosts=hosts), "not in the allowed hosts")
    assert net.lookups == [] and net.connects == []


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local address 169.254.169.254"),
        ("http://[::1]/", "loopback address ::1"),
        ("http://127.1/", "loopback address 127.0.0.1"),
        ("http://2130706433/", "loopback address 127.0.0.1"),
        ("http://0x7f000001/", "loopback address 127.0.0.1"),
        ("http://0177.0.0.1/", "loopback address 127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "loopback address 127.0.0.1 (embedded in"),
        ("http://[::ffff:a9fe:a9fe]/", "link-local address 169.254.169.254 (embedded in"),
        ("http://[64:ff9b::a00:1]/", "private address 10.0.0.1 (embedded in"),
        ("http://0.0.0.0/", "unspecified address 0.0.0.0"),
        ("http://10.1.2.3/", "private address 10.1.2.3"),
        ("http://192.168.0.1:8080/", "private address 192.168.0.1"),
        ("http://224.0.0.1/", "multicast address 224.0.0.1"),
        ("http://[fe80::1]/", "link-local address fe80::1"),
        ("http://[fc00::1]/", "private address fc00::1"),
        ("http://100.64.0.1/", "non-public address 100.64.0.1"),
        ("http://240.0.0.1/", "address 240.0.0.1"),
    ],
)
def test_literal_private_addresses_refused(net: FakeNet, value: str, kind: str) -> None:
    host = urlsplit(value).hostname or ""
    err = refused(MediaFetchDenied, uri(value), policy(hosts=(host,)), "refused", kind)
    assert "address" in err.detail
    assert net.connects == []


def test_public_literal_address_passes_checks() -> None:
    assert media._address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert media._address_problem(ipaddress.ip_address("2606:2800:220:1::1")) is None


# --- fetching from the real local server ---------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_denied_without_allow_private(server: _Server, port: int, host: str) -> None:
    pol = policy(hosts=("127.0.0.1", "localhost"))
    refused(MediaFetchDenied, uri(f"http://{host}:{port}/bytes"), pol, "loopback address")
    assert server.seen == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_fetch_returns_exact_bytes(local: MediaPolicy, port: int, host: str) -> None:
    assert load_media(uri(f"http://{host}:{port}/bytes?v=1"), local) == PAYLOAD


def test_fetch_sends_original_host_header(server: _Server, local: MediaPolicy, port: int) -> None:
    assert load_media(uri(f"http://localhost:{port}/host"), local) == f"localhost:{port}".encode()
    assert server.seen == [("/host", f"localhost:{port}")]


def test_fetch_404(local: MediaPolicy, port: int) -> None:
    err = refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/missing"), local, "HTTP 404")
    assert err.detail["status"] == 404


def test_fetch_timeout(local: MediaPolicy, port: int) -> None:
    started = time.monotonic()
    pol = replace(local, timeout_s=0.2)
    refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/slow"), pol, "timed out")
    assert time.monotonic() - started < 0.9


def test_fetch_slow_drip_hits_overall_deadline(local: MediaPolicy, port: int) -> None:
    started = time.monotonic()
    pol = replace(local, timeout_s=0.3)
    refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/drip"), pol, "timed out")
    assert time.monotonic() - started < 1.0


def test_fetch_declared_length_over_limit(local: MediaPolicy, port: int) -> None:
    err = refused(
        InputTooLarge,
        uri(f"http://127.0.0.1:{port}/huge-length"),
        local,
        "Content-Length 1000000000000",
        f"limit of {LIMIT}",
    )
    assert err.detail["limit"] == LIMIT


def test_fetch_chunked_body_over_limit(local: MediaPolicy, port: int) -> None:
    refused(InputTooLarge, uri(f"http://127.0.0.1:{port}/chunked"), local, f"limit of {LIMIT}")


def test_fetch_body_limit_with_and_without_length(local: MediaPolicy, port: int) -> None:
    pol = replace(local, max_bytes=len(PAYLOAD) - 1)
    # /bytes declares its length; a too-small limit is enforced on the header alone.
    refused(InputTooLarge, uri(f"http://127.0.0.1:{port}/bytes"), pol, "Content-Length")
    refused(InputTooLarge, uri(f"http://127.0.0.1:{port}/chunked"), pol, "over the limit")


def test_fetch_empty_body(local: MediaPolicy, port: int) -> None:
    refused(InvalidInput, uri(f"http://127.0.0.1:{port}/empty"), local, "empty")


def test_fetch_compressed_body_refused(local: MediaPolicy, port: int) -> None:
    refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/gzip"), local, "Content-Encoding")


def test_redirects_followed_and_bounded(server: _Server, local: MediaPolicy, port: int) -> None:
    assert load_media(uri(f"http://127.0.0.1:{port}/redirect-relative"), local) == PAYLOAD
    refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/redirect-loop"), local, "redirects")
    assert len([p for p, _ in server.seen if p == "/redirect-loop"]) == local.max_redirects + 1
    pol = replace(local, max_redirects=0)
    refused(MediaFetchFailed, uri(f"http://127.0.0.1:{port}/redirect-relative"), pol, "redirects")


def test_redirect_to_file_or_userinfo_refused(local: MediaPolicy, port: int) -> None:
    pol = replace(local, schemes=frozenset({"http", "file"}), roots=(Path("/"),))
    refused(MediaFetchDenied, uri(f"http://127.0.0.1:{port}/redirect-file"), pol, "'file'")
    err = refused(
        MediaFetchDenied, uri(f"http://127.0.0.1:{port}/redirect-userinfo"), local, "userinfo"
    )
    assert "hunter2" not in err.message


# --- public names under a fake resolver: rebinding and redirects to private addresses -----------


def test_rebinding_uses_the_validated_address(server: _Server, net: FakeNet, port: int) -> None:
    net.answers["media.example.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    pol = policy(hosts=("media.example.test",))
    # First fetch: validated as public, and the connection goes to that same address even
    # though the name would now resolve to loopback.
    assert load_media(uri(f"http://media.example.test:{port}/host"), pol) == (
        f"media.example.test:{port}".encode()
    )
    assert net.lookups == ["media.example.test"]
    assert net.connects == [(PUBLIC_IP, port)]
    # Next fetch: the name now resolves to loopback and is refused before any connection.
    refused(
        MediaFetchDenied,
        uri(f"http://media.example.test:{port}/bytes"),
        pol,
        "media.example.test",
        "loopback address 127.0.0.1",
    )
    assert net.connects == [(PUBLIC_IP, port)]
    assert [p for p, _ in server.seen] == ["/host"]


def test_name_resolving_to_private_refused(net: FakeNet) -> None:
    net.answers["public.example.test"] = [["10.0.0.5"]]
    pol = policy(hosts=("public.example.test",))
    refused(
        MediaFetchDenied,
        uri("https://public.example.test/cat.jpg"),
        pol,
        "private address 10.0.0.5",
    )
    assert net.connects == []


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ([PUBLIC_IP, "127.0.0.1"], "loopback address 127.0.0.1"),
        (["::ffff:169.254.169.254"], "link-local address 169.254.169.254"),
        (["fd00::5", PUBLIC_IP], "private address fd00::5"),
    ],
)
def test_any_private_answer_refuses(net: FakeNet, answer: list[str], kind: str) -> None:
    net.answers["mixed.example.test"] = [answer]
    pol = policy(hosts=("*.example.test",))
    refused(MediaFetchDenied, uri("http://mixed.example.test/x.jpg"), pol, kind)
    assert net.connects == []


@pytest.mark.parametrize(
    ("path", "extra_host", "kind"),
    [
        ("/redirect-metadata", "169.254.169.254", "link-local address 169.254.169.254"),
        ("/redirect-loopback", "127.0.0.1", "loopback address 127.0.0.1"),
        ("/redirect-rebind", "rebind.example.test", "loopback address 127.0.0.1"),
        # Security (issue #9): the other private kinds, IPv6 included.
        ("/redirect-private", "10.0.0.5", "private address 10.0.0.5"),
        ("/redirect-loopback6", "::1", "loopback address ::1"),
        ("/redirect-linklocal6", "fe80::1", "link-local address fe80::1"),
        ("/redirect-linklocal-name", "ll.example.test", "link-local address fe80::1"),
    ],
)
def test_redirect_to_private_refused(
    server: _Server, net: FakeNet, port: int, path: str, extra_host: str, kind: str
) -> None:
    net.answers["media.example.test"] = [[PUBLIC_IP]]
    net.answers["rebind.example.test"] = [["127.0.0.1"]]
    net.answers["ll.example.test"] = [["fe80::1"]]
    pol = policy(hosts=("media.example.test", extra_host))
    refused(MediaFetchDenied, uri(f"http://media.example.test:{port}{path}"), pol, kind)
    assert net.connects == [(PUBLIC_IP, port)]
    assert [p for p, _ in server.seen] == [path]


def test_redirect_host_must_be_allowed(server: _Server, net: FakeNet, port: int) -> None:
    net.answers["media.example.test"] = [[PUBLIC_IP]]
    pol = policy(hosts=("media.example.test",), allow_private=True)
    url = f"http://media.example.test:{port}/redirect-metadata"
    refused(MediaFetchDenied, uri(url), pol, "'169.254.169.254' is not in the allowed hosts")


def test_https_connects_to_ip_with_sni(net: FakeNet) -> None:
    """The TLS ClientHello goes to the vetted IP and carries the real name as SNI."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(2)
    hello: list[bytes] = []

    def capture() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            hello.append(conn.recv(4096))

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    net.answers["media.example.test"] = [[PUBLIC_IP]]
    net.routes[(PUBLIC_IP, 443)] = listener.getsockname()[1]
    try:
        pol = policy(hosts=("media.example.test",), timeout_s=1.0)
        # The capture server never answers the handshake, so the fetch itself fails.
        with pytest.raises(MediaFetchFailed) as info:
            load_media(uri("https://media.example.test/cat.jpg?sig=s3cret"), pol)
        assert "media.example.test" in info.value.message
        assert "s3cret" not in info.value.message
        thread.join(2)
    finally:
        listener.close()
    assert net.connects == [(PUBLIC_IP, 443)]
    assert hello and hello[0][:1] == b"\x16"  # a TLS handshake record
    assert b"media.example.test" in hello[0]


def test_client_is_shared_and_ignores_environment() -> None:
    client = media._get_client()
    assert media._get_client() is client
    assert client.trust_env is False
    assert client.follow_redirects is False
