"""Ground-truth datasets: ``bench.datasets.load(name, **options)`` gives a dataset object."""

from __future__ import annotations

import inspect

from bench.datasets.attribute_data import AttributeData
from bench.datasets.ground_truth import GroundTruthData
from bench.errors import BenchError
from bench.registry import Registry

DATASETS = Registry("dataset", "bench.datasets")
for _name, _target, _description in [
    ("dsprites", "dsprites:DSprites", "dSprites (DeepMind), npz or hdf5: 737,280 binary sprites"),
    (
        "dsprites-procedural",
        "dsprites:DSpritesProcedural",
        "dSprites rendered from factor values: shape, scale, orientation, posX, posY (no download)",
    ),
    ("shapes3d", "shapes3d:Shapes3D", "3D Shapes (DeepMind), 3dshapes.h5: 480,000 RGB renders"),
    (
        "shapes3d-procedural",
        "shapes3d_procedural:Shapes3DProcedural",
        "3D Shapes look-alike from a ray caster: same factors and index order (no download)",
    ),
    ("mpi3d", "mpi3d:MPI3D", "MPI3D, variant=toy|realistic|real: 1,036,800 robot-arm images"),
    ("cars3d", "cars3d:Cars3D", "Cars3D: 183 car models × 24 azimuths × 4 elevations"),
    ("smallnorb", "smallnorb:SmallNORB", "SmallNORB, train+test: 5 categories, instance nuisance"),
    (
        "celeba",
        "celeba:CelebA",
        "CelebA: aligned faces with 40 binary attributes (crop=disdiff|tad)",
    ),
    (
        "shapes3d-attributes",
        "shapes3d_attributes:Shapes3DAttributes",
        "CelebA's stand-in: procedural 3D Shapes renders with 6 binary attributes (no download)",
    ),
]:
    DATASETS.register(_name, f"bench.datasets.{_target}", _description)


# Procedural datasets and the real dataset each stands in for: a run on the stand-in takes the
# settings configs give the real dataset (then its own), and `bench report --reported` puts
# the real dataset's published numbers beside it, marked as such.
STANDS_IN_FOR = {
    "dsprites-procedural": "dsprites",
    "shapes3d-procedural": "shapes3d",
    "shapes3d-attributes": "celeba",
}


def load(name: str, **options: object) -> GroundTruthData | AttributeData:
    """The dataset registered as ``name``, built with ``options``: a factor dataset, or an
    attribute one (CelebA and its stand-in)."""
    cls = DATASETS.get(name)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = ", ".join(params) or "none"
        raise BenchError(f"dataset {name!r} has no option {unknown[0]!r}; valid options: {valid}")
    return cls(**options)


__all__ = ["DATASETS", "STANDS_IN_FOR", "GroundTruthData", "load"]
