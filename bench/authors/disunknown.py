"""DisUnknown's networks in the layout of stormraiser/disunknown's ``models/models.py``: the
files its trainers save (``trained_models/E.pt``, ``G1.pt``, ``B1.pt``, ``R1.pt``, and the
stage checkpoints' ``C``, ``G``, ``D``, ``B``, ``S``).

The layers are the same (``disunknown_networks`` follows their modules one for one), only
grouped otherwise: their encoders, classifiers and discriminators inherit the conv trunk
(``conv``, ``fc`` at the top) where ours hold it as ``trunk``; heads and a few tensors have
other names. So each map is a list of renames of the key's beginning.
"""

from __future__ import annotations

import re

from torch import nn

from bench.authors.keymap import KeyMap, Piece

TRUNK = [(r"^trunk\.", "")]
# Per kind of network: (pattern, replacement) applied in turn to each of our keys.
RENAMES: dict[str, list[tuple[str, str]]] = {
    "encoder": [*TRUNK, (r"^means\.", "mean_maps."), (r"^stds\.", "pstd_maps.")],
    "classifier": [*TRUNK, (r"^heads\.", "cla.")],
    "discriminator": [*TRUNK, (r"^heads\.0\.", "dis.")],  # one head, not a list
    "compound": [
        (r"^image\.trunk\.", "img_cla."),
        (r"^image\.heads\.", "img_cla.cla."),
        (r"^code\.heads\.", "code_cla.cla."),
        (r"^code\.", "code_cla."),
    ],
    "generator": [(r"^std_head\.", "pstd_map.")],
    "embedder": [  # a ModuleList of LabelEmbedders as MultiLabelEmbedder.module_list
        (r"^(\d+)\.log_std$", r"module_list.\1.lstd"),
        (r"^(\d+)\.frequencies$", r"module_list.\1.class_freq"),
        (r"^(\d+)\.", r"module_list.\1."),
    ],
}


def renamed_keymap(module: nn.Module, ours: str, kind: str) -> KeyMap:
    """Every key of ``module`` (our child ``ours``) under the authors' name for ``kind``."""
    keymap = []
    for key in module.state_dict():
        theirs = key
        for pattern, replacement in RENAMES[kind]:
            theirs = re.sub(pattern, replacement, theirs)
        keymap.append(Piece((f"{ours}.{key}",), theirs))
    return keymap
