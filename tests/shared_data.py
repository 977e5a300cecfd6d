"""Where the labelled development data lives (``../shared/data``; never committed).

``MODERATION_TEST_DATA_DIR`` points elsewhere, for a checkout that is not beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(
    os.environ.get("MODERATION_TEST_DATA_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
