"""The key maps of ``bench.authors``: each turns our paper-configuration network into exactly
the keys and shapes of its authors' module (the manifests, taken from their code by
``benchmarks/parity.py --manifests``), maps back without loss, and lays the fused and
per-unit tensors out so that the authors' computation on them is ours."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.authors.keymap import Piece, from_authors, shapes, to_authors
from bench.authors.layouts import LAYOUTS, MANIFESTS, dbrl_keymap
from bench.authors.openaimodel import attention_block, unet_keymap
from bench.authors.score_sde import layer as score_sde_layer
from bench.build import build_method
from bench.config import resolve_config
from bench.datasets import DATASETS
from bench.methods.dbrl import TimeConditionedWideResNet, WideResNetConfig
from bench.methods.diffusion.ncsnpp import NCSNpp, NCSNppConfig
from bench.methods.diffusion.token_ldm import UnitMLPs
from bench.methods.diffusion.unet import PlainUNetConfig, UNetConfig, build_plain_unet, build_unet

# DisUnknown's class frequencies come from the dataset's labels, which the class does not
# hold: uniform ones over 3D Shapes' classes of its labelled factors give the same shapes.
SHAPES3D_CLASSES = {"wall_hue": 10, "object_hue": 10, "scale": 8, "shape": 4, "orientation": 15}
OVERRIDES = {
    "disunknown": [
        f"method.class_frequencies={[[1 / n] * n for n in SHAPES3D_CLASSES.values()]}",
        "method.unknown_factors=[floor_hue]",
    ]
}
LAYOUT_CASES = [(method, layout) for method, layouts in LAYOUTS.items() for layout in layouts]


@pytest.mark.usefixtures("lpips_files")
@pytest.mark.parametrize(
    ("method", "layout"), LAYOUT_CASES, ids=[layout.manifest for _, layout in LAYOUT_CASES]
)
def test_each_key_map_gives_its_authors_keys_and_shapes(method, layout):
    cfg = resolve_config(method, "shapes3d", "paper", OVERRIDES.get(method, []))
    with torch.device("meta"):
        model = build_method(cfg, DATASETS.get("shapes3d"))
    mapped, expected = shapes(layout.authors_state(model)), layout.expected_shapes()
    unfilled = set(expected) - set(mapped)
    assert sorted(k for k in unfilled if not layout.is_unused(k)) == [], "theirs that ours lack"
    assert sorted(set(mapped) - set(expected)) == [], "keys of ours that theirs lack"
    for unused in layout.unused:  # each key named unused is one of theirs (or a prefix of some)
        assert any(k == unused or k.startswith(unused) for k in expected), unused
    assert not any(layout.is_unused(k) for k in mapped), "a key named unused is filled"
    wrong = {k: (v, expected[k]) for k, v in mapped.items() if v != expected[k]}
    assert wrong == {}


def test_every_manifest_has_a_layout_and_names_its_commit():
    manifests = {path.name[: -len(".json")]: path for path in MANIFESTS.iterdir()}
    assert set(manifests) == {layout.manifest for _, layout in LAYOUT_CASES}
    for path in manifests.values():
        record = json.loads(path.read_text())
        assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and "/" in record["repo"]


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return module


def tiny_plain_unet() -> nn.Module:
    config = PlainUNetConfig(channels=[16, 32], attention_resolutions=[1], heads=2, norm_groups=8)
    return build_plain_unet(config, 3, 8)


def tiny_unet() -> nn.Module:
    return build_unet(
        UNetConfig(channels=[16, 32], attention_levels=1, heads=2, norm_groups=8), 3, 8, 4
    )


@pytest.mark.parametrize("build", [tiny_plain_unet, tiny_unet])
@pytest.mark.parametrize("legacy", [True, False])
def test_a_unet_maps_to_openaimodel_and_back_unchanged(build, legacy):
    unet = randomized(build())
    state = unet.state_dict()
    back = from_authors(to_authors(state, unet_keymap(unet, legacy)), unet_keymap(unet, legacy))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], value) for key, value in state.items())


def openaimodel_attention(x, theirs: dict, heads: int, legacy: bool) -> torch.Tensor:
    """openaimodel's AttentionBlock (norm, qkv conv1d, QKVAttention[Legacy], proj_out, +x),
    written from its definition."""
    b, c, *spatial = x.shape
    h = F.group_norm(x, 8, theirs["norm.weight"], theirs["norm.bias"], eps=1e-5)
    qkv = F.conv1d(h.reshape(b, c, -1), theirs["qkv.weight"], theirs["qkv.bias"])
    ch, length = c // heads, qkv.shape[-1]
    if legacy:  # heads split first, then q, k, v
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    else:  # q, k, v split first, then heads
        q, k, v = (part.reshape(b * heads, ch, length) for part in qkv.chunk(3, dim=1))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
    out = F.conv1d(a, theirs["proj_out.weight"], theirs["proj_out.bias"])
    return x + out.reshape(b, c, *spatial)


@pytest.mark.parametrize("legacy", [True, False])
def test_the_fused_qkv_computes_our_attention_in_openaimodels_order(legacy):
    # With the heads in the wrong order (legacy fusion read as the new order or the reverse)
    # the heads mix channels of different q, k and v and the outputs differ.
    attention = randomized(tiny_plain_unet()).mid_block.attentions[0].eval()
    keymap = attention_block("a", "t", attention, legacy)
    ours = {f"a.{k}": v for k, v in attention.state_dict().items()}
    theirs = {k[2:]: v for k, v in to_authors(ours, keymap).items()}
    x = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = openaimodel_attention(x, theirs, attention.heads, legacy)
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)
        other = openaimodel_attention(x, theirs, attention.heads, not legacy)
        assert (attention(x) - other).abs().max() > 1e-3


def test_a_units_slice_is_that_units_linear_layers():
    mlps = randomized(UnitMLPs(3, [4, 5], nn.ReLU, True))
    keymap = [
        Piece((f"{kind}.{layer}",), f"{unit}.{2 * layer}.{name}", "unit", unit=unit)
        for layer in range(2)
        for unit in range(3)
        for kind, name in (("weights", "weight"), ("biases", "bias"))
    ]
    theirs = nn.ModuleList(
        nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU()) for _ in range(3)
    )
    theirs.load_state_dict(to_authors(mlps.state_dict(), keymap), strict=True)
    scalars = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.stack([mlp(scalars[:, i : i + 1]) for i, mlp in enumerate(theirs)], 1)
        torch.testing.assert_close(mlps(scalars), expected)
    back = from_authors(theirs.state_dict(), keymap)
    assert all(torch.equal(back[key], value) for key, value in mlps.state_dict().items())


def tiny_ncsnpp() -> nn.Module:
    config = NCSNppConfig(nf=16, ch_mult=[1, 2], attn_resolutions=[8], dropout=0.0)
    return NCSNpp(config, image_size=16, channels=3, code_dim=8)


def test_score_sde_maps_to_its_layout_and_back_unchanged():
    net = randomized(tiny_ncsnpp())
    encoder = randomized(TimeConditionedWideResNet(3, WideResNetConfig(depth=10), 128, True))
    model = nn.Module()
    model.score_net, model.encoder = net, encoder
    keymap, state = dbrl_keymap(model), model.state_dict()
    back = from_authors(to_authors(state, keymap), keymap)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], value) for key, value in state.items())


def score_sde_attention(x, theirs: dict) -> torch.Tensor:
    """score_sde's AttnBlockpp (GroupNorm, NIN q, k, v from the right, softmax over positions,
    NIN out, (x + h)/√2), written from its definition."""
    b, c, height, width = x.shape
    norm = theirs["GroupNorm_0.weight"], theirs["GroupNorm_0.bias"]
    h = F.group_norm(x, min(c // 4, 32), *norm, eps=1e-6)

    def nin(i: int, y: torch.Tensor) -> torch.Tensor:
        return (
            torch.einsum("bchw,co->bohw", y, theirs[f"NIN_{i}.W"])
            + theirs[f"NIN_{i}.b"][:, None, None]
        )

    q, k, v = nin(0, h), nin(1, h), nin(2, h)
    w = torch.einsum("bchw,bcij->bhwij", q, k) * c**-0.5
    w = torch.softmax(w.reshape(b, height, width, -1), dim=-1).reshape(
        b, height, width, height, width
    )
    return (x + nin(3, torch.einsum("bhwij,bcij->bchw", w, v))) / math.sqrt(2)


def test_the_transposed_nin_computes_our_attention_as_score_sde():
    # Read untransposed ([out, in] as [in, out]), the projections mix channels the other way.
    attention = randomized(tiny_ncsnpp()).middle[1].eval()
    ours = {f"a.{k}": v for k, v in attention.state_dict().items()}
    theirs = {k[2:]: v for k, v in to_authors(ours, score_sde_layer("a", "t", attention)).items()}
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            attention(x), score_sde_attention(x, theirs), rtol=1e-5, atol=1e-5
        )
        wrong = {k: v.T if k.endswith(".W") else v for k, v in theirs.items()}
        assert (attention(x) - score_sde_attention(x, wrong)).abs().max() > 1e-3


def test_a_key_map_that_misses_a_tensor_is_refused():
    unet = tiny_plain_unet()
    with pytest.raises(ValueError, match="unmapped"):
        to_authors(unet.state_dict(), unet_keymap(unet)[1:])
