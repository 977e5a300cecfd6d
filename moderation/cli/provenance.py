"""Provenance commands: anchor files' originality hashes, verify receipts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from moderation.cli.common import emit, json_option, session, settings


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--owner", required=True, help="Who registers the files (the rights holder).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the receipts (one <file name>.receipt.json per file).",
)
@click.option(
    "--id-prefix",
    default="file:",
    show_default=True,
    help="Each file is registered as <prefix><its SHA-256>.",
)
@click.option(
    "--timeout", default=120.0, show_default=True, help="Seconds to wait for confirmation."
)
@json_option
def anchor(
    paths: tuple[Path, ...],
    owner: str,
    out_dir: Path,
    id_prefix: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Register files' originality hashes (SHA-256, and PDQ/pHash for images), anchor them
    now, and write a receipt per file into --out."""
    from moderation.anchoring import anchor_now
    from moderation.provenance import (
        LeafInput,
        file_hashes,
        leaf_by_subject,
        receipt_for,
        register_leaves,
    )

    s = settings()
    items: list[tuple[Path, LeafInput]] = []
    for path in paths:
        sha256, perceptual = file_hashes(path, s)
        items.append((path, LeafInput(f"{id_prefix}{sha256}", owner, sha256, perceptual)))
    unique = list({item.subject_id: item for _, item in items}.values())
    with session() as db_session:
        register_leaves(db_session, unique)
    report = anchor_now(s, timeout_s=timeout)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with session(migrate=False) as db_session:
        for path, item in items:
            receipt = receipt_for(db_session, leaf_by_subject(db_session, item.subject_id))
            target = out_dir / f"{path.name}.receipt.json"
            target.write_text(receipt.to_json())
            results.append(
                {
                    "path": str(path),
                    "id": item.subject_id,
                    "receipt": str(target),
                    "root": receipt.root,
                    "transaction_hash": receipt.anchor.transaction_hash,
                    "block_number": receipt.anchor.block_number,
                }
            )
    if as_json:
        emit({"receipts": results, "batches_cut": report.batches_cut}, True)
        return
    for r in results:
        click.echo(
            f"{r['path']}: {r['receipt']} (block {r['block_number']}, {r['transaction_hash']})"
        )


@click.command()
@click.argument(
    "receipt_path", metavar="RECEIPT.json", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--rpc", default=None, help="Also check the anchoring log on this JSON-RPC node.")
@click.option(
    "--chain",
    "configured_chain",
    is_flag=True,
    help="Also check on the configured chain (by default the embedded one under var/).",
)
@click.option(
    "--confirmations", default=1, show_default=True, help="Blocks required on the chain check."
)
@json_option
def verify(
    receipt_path: Path, rpc: str | None, configured_chain: bool, confirmations: int, as_json: bool
) -> None:
    """Check a receipt: the Merkle proof offline, and with --rpc or --chain the anchoring
    transaction, its log and its confirmations. Exit 0 when valid, 1 when not."""
    from chain.errors import ChainError, InvalidReceipt
    from chain.receipt import Check, parse_receipt, verify_offline

    where = "offline"
    try:
        receipt = parse_receipt(receipt_path.read_bytes())
    except OSError as exc:
        check = Check.fail(f"cannot read {receipt_path}: {exc.strerror}")
    except InvalidReceipt as exc:
        check = Check.fail(f"malformed receipt: {exc}")
    else:
        check = verify_offline(receipt)
        if check.valid and (rpc or configured_chain):
            from chain.verify import verify_on_chain

            try:
                ledger = _verifying_ledger(rpc, receipt.anchor.contract)
            except ChainError as exc:
                check = Check.fail(f"cannot open the chain: {exc}")
            else:
                where = rpc or "configured chain"
                check = verify_on_chain(receipt, ledger, min_confirmations=confirmations)
    if as_json:
        emit(
            {
                "receipt": str(receipt_path),
                "valid": check.valid,
                "reason": check.reason,
                "checked": where,
                "confirmations": check.confirmations,
            },
            True,
        )
    else:
        click.echo(f"{'VALID' if check.valid else 'INVALID'} ({where}): {check.reason}")
    sys.exit(0 if check.valid else 1)


def _verifying_ledger(rpc: str | None, contract: str) -> Any:
    from chain.embedded import EmbeddedLedger
    from chain.ledger import connect_rpc

    if rpc:
        return connect_rpc(rpc, contract)
    s = settings()
    if s.anchor_backend == "rpc":
        assert s.anchor_rpc_url
        return connect_rpc(s.anchor_rpc_url, contract, timeout_s=s.anchor_rpc_timeout_s)
    return EmbeddedLedger.open(s.anchor_chain_dir, read_only=True)


@click.group("chain")
def chain_group() -> None:
    """The anchoring chain: deploy the contract on a node, serve the embedded chain."""


@chain_group.command("deploy")
@click.option("--rpc", required=True, help="JSON-RPC URL of the node.")
@json_option
def chain_deploy(rpc: str, as_json: bool) -> None:
    """Deploy the Anchor contract with the configured key (MODERATION_ANCHOR_KEY_FILE or
    MODERATION_ANCHOR_PRIVATE_KEY); set MODERATION_ANCHOR_CONTRACT to the printed address."""
    from chain.errors import ChainError
    from chain.ledger import deploy_anchor_contract, load_private_key

    s = settings()
    try:
        key = load_private_key(
            key_file=s.anchor_key_file,
            env_var=None if s.anchor_key_file else s.anchor_key_env,
        )
        address = deploy_anchor_contract(rpc, private_key=key, timeout_s=s.anchor_rpc_timeout_s)
    except ChainError as exc:
        raise click.ClickException(str(exc)) from None
    emit({"contract": address, "rpc": rpc}, as_json, address)


@chain_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8545, show_default=True, type=int)
def chain_serve(host: str, port: int) -> None:
    """Serve the embedded chain (MODERATION_ANCHOR_CHAIN_DIR) as a JSON-RPC node, for tools
    that speak only JSON-RPC; its blocks are journaled as the service's are."""
    import time

    from chain.embedded import EmbeddedChain
    from chain.rpc_server import serve_embedded

    chain = EmbeddedChain(settings().anchor_chain_dir)
    server, url = serve_embedded(chain, host, port)
    click.echo(f"embedded chain {chain.directory} on {url} (contract {chain.contract_address})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
