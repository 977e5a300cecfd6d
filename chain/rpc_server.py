"""The embedded chain over Ethereum JSON-RPC (HTTP, loopback), for tools that speak only
JSON-RPC: ``moderation verify --rpc``, ethers, curl. One request at a time; the methods a
reader or an anchoring client needs, answered by web3's eth-tester provider.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from chain.embedded import EmbeddedChain

__all__ = ["serve_embedded"]

MAX_REQUEST_BYTES = 1 << 20


def _to_rpc(value: Any) -> Any:
    """web3's Python values back to JSON-RPC's hex quantities and data."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {k: _to_rpc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_rpc(v) for v in value]
    return str(value)


def _block_param(value: Any) -> Any:
    return int(value, 16) if isinstance(value, str) and value.startswith("0x") else value


def _dispatch(chain: EmbeddedChain, method: str, params: list[Any]) -> Any:
    if method == "eth_sendRawTransaction":
        return chain.submit(str(params[0]))
    chain.sync()
    if method == "eth_getLogs":
        query = dict(params[0])
        for key in ("fromBlock", "toBlock"):
            if key in query:
                query[key] = _block_param(query[key])
        if "address" in query and isinstance(query["address"], str):
            query["address"] = chain.w3.to_checksum_address(query["address"])
        return chain.w3.eth.get_logs(query)  # type: ignore[arg-type]
    return chain.w3.manager.request_blocking(method, params)  # type: ignore[arg-type]


def serve_embedded(
    chain: EmbeddedChain, host: str = "127.0.0.1", port: int = 0
) -> tuple[HTTPServer, str]:
    """Start serving in a daemon thread; returns the server (``shutdown()`` it) and URL."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if length > MAX_REQUEST_BYTES:
                self.send_error(413)
                return
            try:
                request = json.loads(self.rfile.read(length))
                method, params = str(request["method"]), list(request.get("params") or [])
            except (ValueError, KeyError, TypeError):
                self._reply({"jsonrpc": "2.0", "id": None, "error": _error(-32700, "bad JSON")})
                return
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
            try:
                with lock:
                    reply["result"] = _to_rpc(_dispatch(chain, method, params))
            except Exception as exc:
                reply["error"] = _error(-32000, f"{type(exc).__name__}: {exc}"[:500])
            self._reply(reply)

        def _reply(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
