"""Coverage-guided fuzzing with atheris (manual, not collected by pytest; see docs/decisions.md).

    pip install atheris   # a wheel for CPython 3.11
    python tests/atheris_parsers.py image -max_total_time=90 -timeout=10 corpus-image/

Targets: image, video, hashlist, receipt. An empty corpus directory is seeded with the real
small files the hypothesis fuzzers mutate. A crash is any exception but the documented one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports(include=["models", "moderation.hashlist", "chain"]):
    from chain.errors import InvalidReceipt
    from chain.receipt import parse_receipt, verify_offline
    from models.errors import SignalError
    from models.image_decode import ImageLimits, decode_image
    from models.video_decode import VideoLimits, probe_video
    from moderation.banks import validate_pdq
    from moderation.errors import InvalidInput
    from moderation.hashlist import FORMATS, parse

IMAGE_LIMITS, VIDEO_LIMITS = ImageLimits(), VideoLimits(decode_budget_s=3.0)


def one(target: str, data: bytes) -> None:
    if target == "image":
        try:
            decode_image(data, IMAGE_LIMITS)
        except SignalError as exc:
            assert str(exc)
    elif target == "video":
        try:
            probe_video(data, VIDEO_LIMITS)
        except SignalError as exc:
            assert str(exc)
    elif target == "hashlist":
        fdp = atheris.FuzzedDataProvider(data)
        fmt = fdp.PickValueInList([None, *FORMATS])
        try:
            parse(fdp.ConsumeUnicodeNoSurrogates(4096), fmt, validate_pdq, "pdq")
        except InvalidInput as exc:
            assert exc.message
    elif target == "receipt":
        try:
            receipt = parse_receipt(data)
        except InvalidReceipt as exc:
            assert str(exc)
            return
        verify_offline(receipt)


def seed(target: str, corpus: Path) -> None:
    from tests.test_fuzz_parsers import PDQ, image_seeds, valid_receipt, video_seeds

    seeds = {
        "image": image_seeds,
        "video": video_seeds,
        "receipt": lambda: [json.dumps(valid_receipt()).encode()],
        "hashlist": lambda: [b"\x01" + f"{PDQ},100\n{PDQ} note=x\n".encode()],
    }[target]()
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, blob in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(blob)


def main() -> None:
    target = sys.argv.pop(1)
    corpora = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for corpus in corpora:
        seed(target, corpus)
    atheris.Setup(sys.argv, lambda data: one(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
