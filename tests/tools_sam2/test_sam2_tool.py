"""The SAM2 / MedSAM2 tool on a tiny random-weight model: loading, prompts, cache, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ibisagent.errors import IbisInputError
from ibisagent.io.images import load_image
from ibisagent.tools import make_tool
from ibisagent.tools.sam2 import SAM2Tool, parse_spec, preprocess


@pytest.fixture(scope="module")
def ct(demo_dir) -> np.ndarray:
    """The bundled CT slice cropped to an odd, non-square size (H 301 x W 457)."""
    return load_image(demo_dir / "images" / "06_CT_abdomen.png")[300:601, 200:657].copy()


def test_tool_is_built_from_the_spec(sam2_tool, tiny_files):
    assert isinstance(sam2_tool, SAM2Tool)
    assert sam2_tool.name == f"sam2[tiny_sam2.yaml,{tiny_files[1].name}]"
    assert sam2_tool.image_size == 128 and sam2_tool.lowres == 32  # low-res logits: image_size / 4


def test_embed_once_predict_many(sam2_tool, ct):
    img = ct[:, ::-1].copy()  # an image no other test embeds
    enc, hits, dec = sam2_tool.timings.encoder_calls, sam2_tool.timings.cache_hits, sam2_tool.timings.decoder_calls
    emb = sam2_tool.embed(img)
    assert sam2_tool.embed(img) is emb and sam2_tool.embed(img.copy()) is emb  # keyed by content
    for x in (100, 200, 300):
        sam2_tool.predict(img, np.array([[x, 150]]), np.array([1]))  # an image, not an embedding: cached too
    assert sam2_tool.timings.encoder_calls - enc == 1
    assert sam2_tool.timings.cache_hits - hits == 5
    assert sam2_tool.timings.decoder_calls - dec == 3
    assert emb.original_size == (301, 457) and emb.input_size == (128, 128)
    assert emb.features["image_embed"].shape == (1, 32, 8, 8)
    assert [tuple(f.shape) for f in emb.features["high_res_feats"]] == [(1, 4, 32, 32), (1, 8, 16, 16)]


def test_mask_and_logits_shapes_on_an_odd_size_image(sam2_tool, ct):
    out = sam2_tool.predict(ct, np.array([[228.0, 150.0]]), np.array([1]))
    assert out.mask.shape == ct.shape[:2] and out.mask.dtype == bool
    assert tuple(out.logits.shape) == (1, 1, 32, 32)
    assert float(out.logits.abs().max()) <= 32.0  # clamped as SAM2ImagePredictor does
    assert 0.0 <= out.score <= 1.0  # iou_prediction_use_sigmoid
    # the mask is the bilinear upsampling of the returned logits, thresholded at 0
    up = torch.nn.functional.interpolate(out.logits, size=ct.shape[:2], mode="bilinear", align_corners=False)
    assert np.array_equal(out.mask, (up[0, 0] > 0).numpy())


def test_the_mask_follows_the_clicks(sam2_tool, ct):
    emb = sam2_tool.embed(ct)
    a = sam2_tool.predict(emb, np.array([[60, 50]]), np.array([1]))
    b = sam2_tool.predict(emb, np.array([[400, 250]]), np.array([1]))
    assert not torch.equal(a.logits, b.logits)
    assert not np.array_equal(a.mask, b.mask)
    # a negative click next to the positive one changes the answer
    pn = sam2_tool.predict(emb, np.array([[60, 50], [120, 90]]), np.array([1, 0]))
    assert not np.array_equal(pn.mask, a.mask)
    # the same clicks with swapped labels are a different prompt
    np_ = sam2_tool.predict(emb, np.array([[60, 50], [120, 90]]), np.array([0, 1]))
    assert not torch.equal(pn.logits, np_.logits)


def test_prior_logits_are_used(sam2_tool, ct):
    emb = sam2_tool.embed(ct)
    pts, labels = np.array([[228, 150], [300, 200]]), np.array([1, 1])
    first = sam2_tool.predict(emb, pts[:1], labels[:1])
    no_prior = sam2_tool.predict(emb, pts, labels)
    with_prior = sam2_tool.predict(emb, pts, labels, first.logits)
    assert not torch.equal(no_prior.logits, with_prior.logits)
    # numpy priors work too, and a full-mask prior differs from an empty-mask one
    full = sam2_tool.mask_to_logits(emb, np.ones(ct.shape[:2], bool))
    empty = sam2_tool.mask_to_logits(emb, np.zeros(ct.shape[:2], bool))
    assert tuple(full.shape) == (1, 1, 32, 32) and float(full.min()) == 8.0 and float(empty.max()) == -8.0
    a = sam2_tool.predict(emb, pts, labels, full.numpy())
    b = sam2_tool.predict(emb, pts, labels, empty)
    assert not torch.equal(a.logits, b.logits)
    with pytest.raises(IbisInputError, match="32 x 32"):
        sam2_tool.predict(emb, pts, labels, torch.zeros(1, 1, 256, 256))  # e.g. LiteMedSAM's logits


def test_prior_can_be_switched_off(tiny_files, ct):
    config, checkpoint = tiny_files
    tool = make_tool("sam2", config=str(config), checkpoint=str(checkpoint), prior=False)
    emb = tool.embed(ct)
    pts, labels = np.array([[228, 150], [300, 200]]), np.array([1, 1])
    prior = tool.mask_to_logits(emb, np.ones(ct.shape[:2], bool))
    assert torch.equal(tool.predict(emb, pts, labels, prior).logits, tool.predict(emb, pts, labels).logits)


def test_box_prompt(sam2_tool, ct):
    emb = sam2_tool.embed(ct)
    box = np.array([100, 80, 300, 220], np.float32)
    only_box = sam2_tool.predict(emb, box=box)
    assert only_box.mask.shape == ct.shape[:2]
    other_box = sam2_tool.predict(emb, box=np.array([10, 10, 120, 90], np.float32))
    assert not torch.equal(only_box.logits, other_box.logits)
    box_and_click = sam2_tool.predict(emb, np.array([[200, 150]]), np.array([0]), box=box)
    assert not torch.equal(only_box.logits, box_and_click.logits)


def test_no_prompt_is_an_empty_mask(sam2_tool, ct):
    out = sam2_tool.predict(ct)
    assert out.mask.shape == ct.shape[:2] and not out.mask.any() and out.score == 0.0
    assert tuple(out.logits.shape) == (1, 1, 32, 32)


def test_grayscale_and_rgba_images(sam2_tool, ct):
    gray = ct[..., 0].copy()
    assert np.array_equal(ct[..., 0], ct[..., 1])  # the CT slice is gray stored as RGB
    pts, labels = np.array([[228, 150]]), np.array([1])
    g = sam2_tool.predict(gray, pts, labels)
    rgb = sam2_tool.predict(ct, pts, labels)
    rgba = sam2_tool.predict(np.dstack([ct, np.full(ct.shape[:2], 255, np.uint8)]), pts, labels)
    assert g.mask.shape == ct.shape[:2]
    assert torch.allclose(g.logits, rgb.logits) and torch.allclose(rgba.logits, rgb.logits)


def test_preprocess_matches_sam2_transforms_arithmetic():
    # SAM2Transforms: ToTensor (/255), Resize((S, S)) bilinear with antialiasing, ImageNet mean/std
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255
    x = preprocess(img, 16)
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[0, 0], torch.full((16, 16), (1 - 0.485) / 0.229))
    assert torch.allclose(x[0, 2], torch.full((16, 16), -0.406 / 0.225))


def test_medsam2_alias_and_keyword_form(tiny_files, ct):
    config, checkpoint = tiny_files
    tool = make_tool("medsam2", config=str(config), checkpoint=str(checkpoint))
    assert tool.name.startswith("medsam2[")
    same = make_tool(f"medsam2:{config}:{checkpoint}")
    pts, labels = np.array([[228, 150]]), np.array([1])
    assert torch.equal(tool.predict(ct, pts, labels).logits, same.predict(ct, pts, labels).logits)


def test_parse_spec_allows_colons_in_paths():
    assert parse_spec("C:/m/cfg.yaml:D:/w/ckpt.pt") == ("C:/m/cfg.yaml", "D:/w/ckpt.pt")
    assert parse_spec("a:b/cfg.YML:x:y.pt") == ("a:b/cfg.YML", "x:y.pt")
    with pytest.raises(IbisInputError, match="no checkpoint"):
        parse_spec("cfg.yaml:")
    with pytest.raises(IbisInputError, match="CONFIG.yaml"):
        parse_spec("cfg.json:ckpt.pt")


# ---------------------------------------------------------------- errors


def _refused(spec: str, *fragments: str) -> str:
    with pytest.raises(IbisInputError) as info:
        make_tool(spec)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_missing_unreadable_and_mismatched_checkpoints(tiny_files, tmp_path):
    config, checkpoint = tiny_files
    _refused(f"sam2:{config}:{tmp_path / 'nope.pt'}", "nope.pt", "no such checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    _refused(f"sam2:{config}:{junk}", "junk.pt", "cannot read the checkpoint")

    state = torch.load(checkpoint, weights_only=True)["model"]
    renamed = dict(state)
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    renamed[key + "_renamed"] = renamed.pop(key)
    path = tmp_path / "renamed.pt"
    torch.save({"model": renamed}, path)
    _refused(f"sam2:{config}:{path}", "renamed.pt", "1 missing and 1 unexpected keys", key)

    reshaped = dict(state)
    reshaped[key] = torch.zeros(3, 3)
    path = tmp_path / "reshaped.pt"
    torch.save({"model": reshaped}, path)
    _refused(f"sam2:{config}:{path}", "reshaped.pt", "1 tensors have other shapes", key)

    path = tmp_path / "not_a_state.pt"
    torch.save({"model": {"a": 1}}, path)
    _refused(f"sam2:{config}:{path}", "not_a_state.pt", "not a SAM2 checkpoint")

    # a bare state dict (no "model" wrapper) loads to the same weights
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    img = np.full((40, 50, 3), 90, np.uint8)
    pts, labels = np.array([[20, 20]]), np.array([1])
    a = make_tool(f"sam2:{config}:{bare}").predict(img, pts, labels)
    b = make_tool(f"sam2:{config}:{checkpoint}").predict(img, pts, labels)
    assert torch.equal(a.logits, b.logits)


def test_checkpoint_of_another_model_is_refused(tiny_files):
    # a config shipped in the sam2 package (real SAM2.1 tiny) resolves by name; the tiny weights do not fit it
    _, checkpoint = tiny_files
    _refused(f"sam2:configs/sam2.1/sam2.1_hiera_t.yaml:{checkpoint}", str(checkpoint), "does not match the config")


def test_missing_and_broken_configs(tiny_files, tmp_path):
    config, checkpoint = tiny_files
    _refused(f"sam2:{tmp_path / 'missing.yaml'}:{checkpoint}", "missing.yaml", "no such config file")
    _refused(f"sam2:configs/sam2.1/nope.yaml:{checkpoint}", "configs/sam2.1/nope.yaml", "no such config file")
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("sam2.modeling.sam2_base.SAM2Base", "sam2.modeling.sam2_base.Nope"))
    _refused(f"sam2:{broken}:{checkpoint}", "broken.yaml", "cannot build a SAM2 model")
    _refused("sam2", "needs a config and a checkpoint")


def test_missing_sam2_package_names_the_install(monkeypatch, tiny_spec):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sam2" else real(name, *a))
    _refused(tiny_spec, "sam2 package is not installed", "--no-deps", "sam2==1.1.0")


def test_hydra_state_of_the_sam2_package_is_kept(sam2_tool):
    # after building from a user's folder, sam2's own config names still resolve (sam2.build_sam2 users)
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    assert GlobalHydra.instance().is_initialized()
    cfg = compose(config_name="configs/sam2.1/sam2.1_hiera_t.yaml")
    assert cfg.model.image_size == 1024


def test_torchvision_is_never_imported(tiny_spec):
    code = (
        "import sys, numpy as np\n"
        "from ibisagent.tools import make_tool\n"
        f"t = make_tool({tiny_spec!r})\n"
        "t.predict(np.zeros((20, 30, 3), np.uint8), np.array([[5, 5]]), np.array([1]))\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "assert 'sam2.utils.transforms' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
