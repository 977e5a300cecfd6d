"""The anchor contract's committed build (ABI and bytecode from ``contracts/Anchor.sol``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ANCHORED_EVENT", "artifact"]

# keccak256("Anchored(bytes32,uint256)"): topic 0 of every anchor log (checked in the tests).
ANCHORED_EVENT = "0xfde54488b5523b3abf19b99976dd0e2c531fbcd233d0eb682c96c3a18cf6b3c1"


@lru_cache(maxsize=1)
def artifact() -> dict[str, Any]:
    """ABI, creation bytecode and compiler settings, as ``contracts/build.sh`` wrote them."""
    text = (Path(__file__).parent / "contracts" / "Anchor.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
