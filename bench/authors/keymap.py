"""A key map between one of our networks and its authors' module: a list of pieces, each one
or more of our tensors that make one of theirs.

Most pieces are renames. The others differ only in how a tensor is laid out:

- ``"conv"``: a linear layer of ours that is a 1×1 convolution of theirs (the same numbers,
  with ``conv_dims`` trailing unit dimensions: openaimodel's ``conv_nd(1, …)`` attention
  projections, the 2-d ones of LDM's autoencoder attention);
- ``"qkv"``/``"qkv_legacy"``: our separate q, k and v projections fused into their one 1×1
  ``qkv`` convolution. openaimodel's ``QKVAttention`` splits q, k, v before the heads (rows
  [q | k | v], each head-major); its ``QKVAttentionLegacy`` splits the heads first (rows
  [head 0: q k v | head 1: q k v | …]), so the legacy fusion interleaves the rows by head;
- ``"transposed"``: a linear weight of ours ([out, in]) that is a matrix of theirs applied from
  the right ([in, out]: score_sde's ``NIN`` layers);
- ``"unit"``: one unit's slice of our stacked per-unit weights (``UnitMLPs``: [units, in, out])
  that is a separate ``nn.Linear`` of theirs (weight [out, in]); several pieces share our key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

LAYOUTS = ("same", "conv", "qkv", "qkv_legacy", "transposed", "unit")


@dataclass(frozen=True)
class Piece:
    ours: tuple[str, ...]  # one key; three (q, k, v) for a fused layout
    theirs: str
    layout: str = "same"
    heads: int = 1  # for the qkv layouts
    conv_dims: int = 1  # their convolution's spatial dimensions, for the non-"same" layouts
    unit: int = 0  # for the unit layout

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
        if (len(self.ours) == 3) != self.layout.startswith("qkv"):
            raise ValueError(f"{self.theirs}: a qkv layout fuses three tensors, others map one")


KeyMap = list[Piece]


def prefixed(keymap: KeyMap, ours: str, theirs: str = "") -> KeyMap:
    """``keymap`` with ``ours`` before each of our keys and ``theirs`` before each of theirs."""
    return [
        replace(piece, ours=tuple(ours + key for key in piece.ours), theirs=theirs + piece.theirs)
        for piece in keymap
    ]


def rename(ours: str, theirs: str, names: dict[str, str]) -> KeyMap:
    """One piece per ``(our_suffix, their_suffix)`` of ``names`` under the two prefixes."""
    return [Piece((f"{ours}.{a}",), f"{theirs}.{b}") for a, b in names.items()]


def to_authors(state: dict[str, torch.Tensor], keymap: KeyMap) -> dict[str, torch.Tensor]:
    """Their state dict from ours; every key of ours must be used by exactly one piece."""
    used = [key for piece in keymap for key in piece.ours]
    shared = {key for piece in keymap if piece.layout == "unit" for key in piece.ours}
    missing = sorted(set(used) - set(state))
    unused = sorted(set(state) - set(used))
    once = [key for key in used if key not in shared]
    if missing or unused or len(once) != len(set(once)):
        raise ValueError(f"key map does not fit: missing {missing[:3]}, unmapped {unused[:3]}")
    return {piece.theirs: _fuse(piece, [state[k] for k in piece.ours]) for piece in keymap}


def from_authors(state: dict[str, torch.Tensor], keymap: KeyMap) -> dict[str, torch.Tensor]:
    """Our state dict from theirs (``to_authors`` inverted)."""
    theirs = {piece.theirs for piece in keymap}
    if theirs != set(state):
        missing, extra = sorted(theirs - set(state)), sorted(set(state) - theirs)
        raise ValueError(f"not the authors' layout: missing {missing[:3]}, unexpected {extra[:3]}")
    ours: dict[str, torch.Tensor] = {}
    units: dict[str, dict[int, torch.Tensor]] = {}
    for piece in keymap:
        if piece.layout == "unit":
            units.setdefault(piece.ours[0], {})[piece.unit] = _unit_slice(state[piece.theirs])
        else:
            ours.update(zip(piece.ours, _split(piece, state[piece.theirs]), strict=True))
    for key, slices in units.items():
        ours[key] = torch.stack([slices[unit] for unit in sorted(slices)])
    return ours


def shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in state.items()}


def _fuse(piece: Piece, tensors: list[torch.Tensor]) -> torch.Tensor:
    if piece.layout == "same":
        return tensors[0]
    if piece.layout == "conv":
        return _as_conv(tensors[0], piece.conv_dims)
    if piece.layout == "transposed":
        return tensors[0].T.contiguous()
    if piece.layout == "unit":
        return _unit_slice(tensors[0][piece.unit])
    q, k, v = tensors
    if piece.layout == "qkv_legacy":  # rows [head][q|k|v][channel]
        fused = torch.stack([t.unflatten(0, (piece.heads, -1)) for t in (q, k, v)], dim=1)
        return _as_conv(fused.flatten(0, 2), piece.conv_dims)
    return _as_conv(torch.cat([q, k, v]), piece.conv_dims)


def _split(piece: Piece, tensor: torch.Tensor) -> list[torch.Tensor]:
    if piece.layout == "same":
        return [tensor]
    if piece.layout == "conv":
        return [_as_linear(tensor)]
    if piece.layout == "transposed":
        return [tensor.T.contiguous()]
    flat = _as_linear(tensor)
    if piece.layout == "qkv_legacy":
        per_head = flat.unflatten(0, (piece.heads, 3, -1))
        return [per_head[:, i].flatten(0, 1) for i in range(3)]
    return list(flat.chunk(3))


def _unit_slice(tensor: torch.Tensor) -> torch.Tensor:
    """A unit's [in, out] weight as nn.Linear's [out, in], and back (a bias stays)."""
    return tensor.T.contiguous() if tensor.dim() == 2 else tensor


def _as_conv(tensor: torch.Tensor, dims: int) -> torch.Tensor:
    """A linear weight [out, in] as a 1×1 convolution's [out, in, 1, …] (a bias stays)."""
    return tensor.reshape(*tensor.shape, *[1] * dims) if tensor.dim() == 2 else tensor


def _as_linear(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1) if tensor.dim() > 2 else tensor
