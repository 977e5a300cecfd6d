"""Sample content for the demo and the benchmark, made from scikit-image's bundled photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

BENCH_TEXT = (
    "Weekend trip to the lake with friends, the weather was perfect and the water calm. "
    "We grilled fish, played cards and watched the sunset. 周末和朋友去湖边玩，天气很好，"
    "我们烤鱼、打牌、看日落。Next time we will bring a tent and stay overnight! "
    "下次带帐篷过夜。Photos below, tell me which one you like best."
)[:280]


def photo(name: str) -> Image.Image:
    """A bundled photo as RGB (needs scikit-image, installed with the `demo` extra)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("samples need scikit-image: pip install 'moderation[demo]'") from exc
    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8)).convert("RGB")


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def bench_jpeg() -> bytes:
    """The 1280x720 JPEG of the latency budget."""
    return encode(photo("astronaut").resize((1280, 720), Image.Resampling.LANCZOS), quality=90)


def near_copies(img: Image.Image) -> dict[str, bytes]:
    """Typical re-uploads of a photo: recompressed, resized, brightened, captioned."""
    w, h = img.size
    captioned = img.copy()
    ImageDraw.Draw(captioned).text((10, h - 30), "@reposter", fill=(255, 255, 255))
    return {
        "jpeg q=40": encode(img, quality=40),
        "resized 50%": encode(img.resize((w // 2, h // 2), Image.Resampling.BILINEAR)),
        "brighter": encode(ImageEnhance.Brightness(img).enhance(1.15)),
        "captioned": encode(captioned),
    }
