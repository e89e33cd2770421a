"""A look-alike of DeepMind's 3D Shapes, rendered by a vectorised ray caster: no file needed.

Same factors, value sets and row-major index order as ``3dshapes.h5`` (480,000 images):
floor_hue 10, wall_hue 10, object_hue 10 (hues 0.0, 0.1, ..., 0.9), scale 8
(linspace(0.75, 1.25, 8)), shape 4 (cube, cylinder, sphere, capsule), orientation 15
(camera azimuth, linspace(-30°, 30°, 15)).

The scene: a room (floor, back wall, two side walls) with an object standing at its centre,
a camera orbiting the object by the orientation angle and looking at it, a directional
light with ambient term, Lambert shading and hard shadows of the object.

Colours do not change geometry, so only scale × shape × orientation = 480 images differ in
geometry. Each is rendered once (4×4 supersampling) into a weight buffer: per pixel, how
much of the floor, the wall and the object it shows, times shading. An image is then a
(pixels × 3 surfaces) · (3 surfaces × RGB) product with the three hue colours. The buffers
are cached on disk, keyed by ``RENDERER_VERSION``: bump it whenever the picture changes.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from bench.datasets.files import cache_dir
from bench.datasets.ground_truth import GroundTruthData
from bench.datasets.shapes3d import FACTOR_NAMES, FACTOR_SIZES, HUES, ORIENTATIONS, SCALES, SHAPES
from bench.fileio import atomic_path

RENDERER_VERSION = 1
SIZE = 64
SUPERSAMPLING = 4

# Scene (world units, y up). The object stands at the origin; the camera looks along +z at
# orientation 0.
ROOM_HALF_WIDTH = 6.0  # side walls at x = ±6, back wall at z = +6
CAMERA_DISTANCE, CAMERA_HEIGHT = 9.0, 3.0
LOOK_AT = np.array([0.0, 1.4, 0.0])
HALF_FOV = np.radians(20.0)
LIGHT = np.array([-0.45, 1.0, -0.55]) / np.linalg.norm([-0.45, 1.0, -0.55])  # towards the light
AMBIENT, DIFFUSE = 0.4, 0.6
SATURATION, VALUE = 0.9, 1.0
FLOOR, WALL, OBJECT = 0, 1, 2


def hue_rgb(hue: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, SATURATION, VALUE), dtype=np.float32)


HUE_RGB = np.stack([hue_rgb(h) for h in HUES])  # (10, 3)


# --- geometry ------------------------------------------------------------------------------


def _camera_rays(orientation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and unit directions (P, 3) of the supersampled pixel rays, row-major."""
    azimuth = np.radians(orientation_deg)
    origin = np.array(
        [
            -CAMERA_DISTANCE * np.sin(azimuth),
            CAMERA_HEIGHT,
            -CAMERA_DISTANCE * np.cos(azimuth),
        ]
    )
    forward = LOOK_AT - origin
    forward /= np.linalg.norm(forward)
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    n = SIZE * SUPERSAMPLING
    offsets = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # -1 .. 1 across the image
    screen_x, screen_y = np.meshgrid(offsets, -offsets)  # rows go down the image
    tan = np.tan(HALF_FOV)
    directions = (
        forward[None, :]
        + (screen_x.reshape(-1, 1) * tan) * right[None, :]
        + (screen_y.reshape(-1, 1) * tan) * up[None, :]
    )
    return origin, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _solve_quadratic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both roots of a t² + b t + c = 0 (nan where there are none), smaller first."""
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (-b - root) / (2.0 * a), (-b + root) / (2.0 * a)


def _ahead(t: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """t where the hit is valid and in front of the ray's origin, else inf."""
    return np.where(valid & (t > 1e-6), t, np.inf)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


# Every intersection takes ray origins o (P, 3) and unit directions d (P, 3) and returns the
# distance to the hit (inf: miss) and the unit normal there.


def _hit_sphere(o, d, centre_y, radius):
    oc = o - np.array([0.0, centre_y, 0.0])
    t0, t1 = _solve_quadratic(np.ones(len(d)), 2.0 * _dot(d, oc), _dot(oc, oc) - radius**2)
    t = np.where(t0 > 1e-6, t0, t1)
    t = _ahead(t, ~np.isnan(t))
    point = oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, point / radius


def _hit_vertical_cylinder(o, d, radius, y_min, y_max, top_cap=True):
    """Side of x² + z² = r² between y_min and y_max, and (optionally) its flat top."""
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2.0 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2])
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - radius**2
    t_side, _ = _solve_quadratic(a, b, c)
    y = o[:, 1] + t_side * d[:, 1]
    t_side = _ahead(t_side, ~np.isnan(t_side) & (y >= y_min) & (y <= y_max))
    t_cap = np.full(len(d), np.inf)
    if top_cap:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = (y_max - o[:, 1]) / d[:, 1]
        cap_x, cap_z = o[:, 0] + t_cap * d[:, 0], o[:, 2] + t_cap * d[:, 2]
        t_cap = _ahead(t_cap, cap_x**2 + cap_z**2 <= radius**2)
    t = np.minimum(t_side, t_cap)
    point = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    side_normal = np.stack([point[:, 0], np.zeros(len(d)), point[:, 2]], axis=1) / radius
    normal = np.where((t_cap < t_side)[:, None], np.array([0.0, 1.0, 0.0]), side_normal)
    return t, normal


def _hit_box(o, d, half):
    """Axis-aligned box [-h, h] × [0, 2h] × [-h, h] (slab test)."""
    low, high = np.array([-half, 0.0, -half]), np.array([half, 2.0 * half, half])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low, t_high = (low - o) / d, (high - o) / d
    t_near = np.nanmax(np.minimum(t_low, t_high), axis=1)
    t_far = np.nanmin(np.maximum(t_low, t_high), axis=1)
    t = _ahead(t_near, t_near <= t_far)
    point = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    local = (point - np.array([0.0, half, 0.0])) / half
    axis = np.argmax(np.abs(local), axis=1)
    normal = np.zeros_like(point)
    rows = np.arange(len(d))
    normal[rows, axis] = np.sign(local[rows, axis])
    return t, normal


def hit_object(shape: str, scale: float, o: np.ndarray, d: np.ndarray):
    """The object standing on the floor at the origin, sized by ``scale``."""
    if shape == "cube":
        return _hit_box(o, d, 0.95 * scale)
    if shape == "sphere":
        return _hit_sphere(o, d, 1.05 * scale, 1.05 * scale)
    if shape == "cylinder":
        return _hit_vertical_cylinder(o, d, 0.9 * scale, 0.0, 2.0 * scale)
    radius, height = 0.75 * scale, 2.6 * scale  # capsule: a cylinder with hemispherical ends
    t, normal = _hit_vertical_cylinder(o, d, radius, radius, height - radius, top_cap=False)
    for centre_y in (radius, height - radius):
        t_end, n_end = _hit_sphere(o, d, centre_y, radius)
        closer = t_end < t
        t, normal = np.where(closer, t_end, t), np.where(closer[:, None], n_end, normal)
    return t, normal


def _hit_room(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the room, which surface (FLOOR or WALL) and its normal."""
    w = ROOM_HALF_WIDTH
    with np.errstate(divide="ignore", invalid="ignore"):
        planes = [
            ((0.0 - o[:, 1]) / d[:, 1], FLOOR, (0.0, 1.0, 0.0)),
            ((w - o[:, 2]) / d[:, 2], WALL, (0.0, 0.0, -1.0)),
            ((w - o[:, 0]) / d[:, 0], WALL, (-1.0, 0.0, 0.0)),
            ((-w - o[:, 0]) / d[:, 0], WALL, (1.0, 0.0, 0.0)),
        ]
    t = np.full(len(d), np.inf)
    surface = np.full(len(d), WALL)
    normal = np.zeros((len(d), 3))
    for t_plane, kind, plane_normal in planes:
        closer = (t_plane > 1e-6) & (t_plane < t)
        t = np.where(closer, t_plane, t)
        surface = np.where(closer, kind, surface)
        normal[closer] = plane_normal
    return t, surface, normal


def render_weights(shape: str, scale: float, orientation_deg: float) -> np.ndarray:
    """float32 (64·64, 3): per pixel, the shaded coverage of floor, wall and object."""
    origin, directions = _camera_rays(orientation_deg)
    origin = np.broadcast_to(origin, directions.shape)
    t_room, surface, normal = _hit_room(origin, directions)
    t_object, object_normal = hit_object(shape, scale, origin, directions)
    on_object = t_object < t_room
    surface = np.where(on_object, OBJECT, surface)
    normal = np.where(on_object[:, None], object_normal, normal)
    t = np.where(on_object, t_object, t_room)

    lambert = np.clip(_dot(normal, np.broadcast_to(LIGHT, normal.shape)), 0.0, None)
    # Hard shadows: only the object casts one (the room is convex), onto floor and walls.
    points = origin + t[:, None] * directions
    towards_light = np.broadcast_to(LIGHT, points.shape)
    shadowed = ~on_object & np.isfinite(hit_object(shape, scale, points, towards_light)[0])
    shade = AMBIENT + DIFFUSE * lambert * ~shadowed

    n = SIZE * SUPERSAMPLING
    weights = np.zeros((n * n, 3), dtype=np.float64)
    weights[np.arange(n * n), surface] = shade
    # Box-downsample the k×k subpixels of every pixel.
    k = SUPERSAMPLING
    weights = weights.reshape(SIZE, k, SIZE, k, 3).mean(axis=(1, 3))
    return weights.reshape(SIZE * SIZE, 3).astype(np.float32)


def render_all_weights() -> np.ndarray:
    """float32 (480, 64·64, 3): the weights of every geometry, in (scale, shape, orientation)
    row-major order."""
    return np.stack(
        [
            render_weights(shape, scale, orientation)
            for scale in SCALES
            for shape in SHAPES
            for orientation in ORIENTATIONS
        ]
    )


class Shapes3DProcedural(GroundTruthData):
    """3D Shapes look-alike rendered from factors (480,000 RGB 64×64 images)."""

    state_names = FACTOR_NAMES
    state_sizes = FACTOR_SIZES
    image_shape = (SIZE, SIZE, 3)
    description = "3D Shapes look-alike rendered by a ray caster (no download)"

    def __init__(self, cache: str | None = None) -> None:
        folder = Path(cache) if cache else cache_dir() / "shapes3d-procedural"
        self.cache_file = folder / f"weights-v{RENDERER_VERSION}-ss{SUPERSAMPLING}.npy"
        self._weights: np.ndarray | None = None

    @property
    def weights(self) -> np.ndarray:
        """The 480 geometry weight buffers, rendered on first use and cached on disk."""
        if self._weights is None:
            if not self.cache_file.is_file():
                with atomic_path(self.cache_file) as tmp, tmp.open("wb") as f:
                    np.save(f, render_all_weights())
            self._weights = np.load(self.cache_file)
        return self._weights

    def images(self, indices: np.ndarray) -> np.ndarray:
        factors = self.factors_of(indices)
        geometry = np.ravel_multi_index(tuple(factors[:, 3:].T), FACTOR_SIZES[3:])
        colours = HUE_RGB[factors[:, :3]]  # (n, surface, rgb): floor, wall, object hues
        out = np.empty((len(factors), SIZE * SIZE, 3), dtype=np.uint8)
        # Chunks keep the gathered weights (chunk × 48 KiB) in cache: 3× faster than one product.
        for start in range(0, len(factors), 128):
            rows = slice(start, start + 128)
            pixels = np.matmul(self.weights[geometry[rows]], colours[rows])
            out[rows] = np.clip(pixels * 255.0 + 0.5, 0.0, 255.0)
        return out.reshape(len(factors), SIZE, SIZE, 3)
