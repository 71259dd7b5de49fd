"""Procedural bone-marrow single-cell patches in a May-Grünwald-Giemsa (MGG) look.

The real data of SLAM-AGS (Acerbis et al., ISBI 2026) is the Bone Marrow Cytomorphology set
(Matek et al., Blood 2021): 250 x 250 px RGB patches centred on one white cell, neighbours
partly in view. It cannot be downloaded here, so this module renders look-alikes:

* a white cell (an ellipse with an irregular edge) whose nucleus carries chromatin texture
  and, for blast-like classes, pale nucleoli; a rim of blue cytoplasm around it;
* pink red blood cells with a paler centre partly in view around it; a pinkish-grey,
  slightly mottled background;
* colour by Beer-Lambert absorption of three dyes (nuclear azure-eosin purple, cytoplasmic
  blue, eosin pink): ``I = light * exp(-sum_k c_k v_k)`` per RGB channel;
* a per-slide *stain* vector (dye amounts, dye hues, illumination) that the caller shares
  among all cells of one slide, independent of the slide's label.

Each cell is drawn from latent *factors*. *Class-defining* factors (cell radius,
nucleus/cell ratio, chromatin coarseness, nucleus density, nucleoli rate, cytoplasm
blueness) have a class mean; the negative class (lymphocyte, ``LYT``) is the reference and
every other class is an offset from it. ``difficulty`` scales the offsets by
``1 - difficulty`` while the nuisance spread stays, so at ``difficulty = 1`` all classes are
the same distribution. *Nuisance* factors (eccentricity, rotation, position jitter,
nucleus placement and shape, blur, noise, red cells, background tint) never depend on the
class. Add a class by adding a :class:`CellClass` to ``CELL_CLASSES``.

Everything is vectorised over cells (a loop runs over chunks of cells, red cells and
nucleolus slots only) and deterministic given the ``numpy`` generator.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from slamags_core.config import CellConfig
from slamags_core.validation import check_float, check_int

# ----------------------------------------------------------------------------------------
# Class registry
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellClass:
    """One cell type: a name and its offsets from the lymphocyte reference at difficulty 0.

    Attributes:
        name: class abbreviation as in the Bone Marrow Cytomorphology data set.
        description: one line of haematology for the reader.
        offsets: shift of each class-defining factor (keys of ``CLASS_FACTORS``) from the
            ``LYT`` mean; missing keys mean no shift.
    """

    name: str
    description: str
    offsets: Mapping[str, float]


# Reference (LYT) distribution of the class-defining factors:
# (mean, sd, low, high, gap_power). Lengths are in patch units (patch side = 1, about 25 um
# like a 250 px real patch). At a given difficulty a class's offset is scaled by
# ``(1 - difficulty) ** gap_power``: global cues (size, dye amounts, power 2) fade first,
# the subtle morphology haematologists rely on (chromatin pattern, nucleoli, power 0.5) last.
CLASS_FACTORS: Mapping[str, tuple[float, float, float, float, float]] = MappingProxyType({
    "cell_radius": (0.24, 0.028, 0.14, 0.45, 2.0),          # 7-15 um lymphocyte
    "nc_ratio": (0.86, 0.035, 0.55, 0.96, 2.0),             # nucleus radius / cell radius
    "chromatin_coarseness": (0.80, 0.12, 0.0, 1.0, 0.5),    # 1 = clumped, 0 = fine ("lacy")
    "nucleus_density": (1.00, 0.12, 0.35, 1.5, 2.0),        # nuclear dye amount
    "nucleoli_rate": (0.02, 0.0, 0.0, 1.0, 0.5),            # chance of each of 3 nucleolus slots
    "cytoplasm_blueness": (0.55, 0.15, 0.05, 1.8, 2.0),     # cytoplasmic dye amount
})

CELL_CLASSES: Mapping[str, CellClass] = MappingProxyType({
    "LYT": CellClass("LYT", "lymphocyte: small, dense clumped nucleus, scant pale-blue rim", {}),
    "BLA": CellClass(
        "BLA", "blast: larger, fine lacy chromatin, nucleoli, deeper blue cytoplasm",
        {"cell_radius": 0.085, "nc_ratio": -0.09, "chromatin_coarseness": -0.6,
         "nucleus_density": -0.35, "nucleoli_rate": 0.6, "cytoplasm_blueness": 0.45}),
    "LYI": CellClass(
        "LYI", "immature lymphocyte: a subtler abnormal class between LYT and BLA",
        {"cell_radius": 0.035, "nc_ratio": -0.02, "chromatin_coarseness": -0.3,
         "nucleus_density": -0.15, "nucleoli_rate": 0.25, "cytoplasm_blueness": 0.15}),
})
CLASS_NAMES: tuple[str, ...] = tuple(CELL_CLASSES)

# ----------------------------------------------------------------------------------------
# Stain (per slide) and dyes
# ----------------------------------------------------------------------------------------

STAIN_FIELDS: tuple[str, ...] = (
    "nuclear_amount", "cytoplasm_amount", "eosin_amount",   # log-scale of each dye
    "nuclear_hue", "cytoplasm_hue",                         # shift of the dye colour
    "light_r", "light_g", "light_b",                        # log illumination per channel
)
STAIN_DIM: int = len(STAIN_FIELDS)
_STAIN_SD = np.array([0.15, 0.15, 0.20, 0.35, 0.35, 0.04, 0.04, 0.04], dtype=np.float32)

# Optical density per unit dye amount, RGB (absorbing red -> looks blue, etc.).
_DYE_NUCLEAR = np.array([1.10, 1.60, 0.50], dtype=np.float32)    # azure-eosin: violet
_DYE_CYTO = np.array([0.62, 0.42, 0.10], dtype=np.float32)       # methylene/azure: blue
_DYE_EOSIN = np.array([0.14, 0.52, 0.32], dtype=np.float32)      # eosin: pink
_HUE_NUCLEAR = np.array([0.30, -0.10, -0.20], dtype=np.float32)  # + = bluer nuclei
_HUE_CYTO = np.array([-0.15, 0.10, 0.08], dtype=np.float32)      # + = greyer cytoplasm
_LIGHT = np.array([0.84, 0.80, 0.89], dtype=np.float32)          # blank-glass brightness
_BACKGROUND_EOSIN = 0.16                                         # pinkish-grey plasma film

MIN_SIZE, MAX_SIZE = 32, 256


def sample_stain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` per-slide stain vectors (one per slide / bag), independent of any label.

    Args:
        rng: NumPy generator (the only source of randomness).
        n: number of slides.

    Returns:
        float32 array ``(n, STAIN_DIM)``; fields in ``STAIN_FIELDS``; zeros = neutral stain.
    """
    n = check_int(n, "n", ge=0)
    return (rng.standard_normal((n, STAIN_DIM)) * _STAIN_SD).astype(np.float32)


def _dyes(stain: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-cell dye vectors ``(n, 3)`` x 3, dye amounts ``(n, 3)`` and light ``(n, 3)``."""
    amount = np.exp(stain[:, 0:3])                                        # (n, 3)
    v_nuc = np.maximum(_DYE_NUCLEAR + stain[:, 3:4] * _HUE_NUCLEAR, 0.05)  # (n, 3)
    v_cyt = np.maximum(_DYE_CYTO + stain[:, 4:5] * _HUE_CYTO, 0.02)        # (n, 3)
    v_eos = np.broadcast_to(_DYE_EOSIN, v_nuc.shape)
    light = _LIGHT * np.exp(stain[:, 5:8])                                 # (n, 3)
    return v_nuc, v_cyt, v_eos, amount, light


# ----------------------------------------------------------------------------------------
# Latent factors
# ----------------------------------------------------------------------------------------


def _class_index(cell_types: Sequence[str]) -> np.ndarray:
    names = np.asarray(cell_types, dtype=object).reshape(-1)
    unknown = sorted(set(names.tolist()) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"unknown cell class(es) {unknown}; allowed: {list(CLASS_NAMES)}")
    lookup = {name: i for i, name in enumerate(CLASS_NAMES)}
    return np.fromiter((lookup[t] for t in names), dtype=np.int64, count=len(names))


def sample_factors(cell_types: Sequence[str], difficulty: float,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every latent factor of every cell without rendering (cheap; used by notebooks).

    A class-defining factor is ``LYT mean + (1 - difficulty) ** gap_power x class offset +
    sd x N(0, 1)``, clipped to its range (``CLASS_FACTORS``); nuisance factors ignore the class.
    The random draws do not depend on ``difficulty`` or on the classes, so the same generator
    state gives the same nuisance and the same noise at every difficulty.

    Args:
        cell_types: class name of each cell, from ``CLASS_NAMES``.
        difficulty: in [0, 1]; 1 makes every class the ``LYT`` distribution.
        rng: NumPy generator.

    Returns:
        Factor name -> ``(n,)`` array (float32; ``nucleoli`` and ``n_rbc`` int64).

    Raises:
        ValueError: difficulty outside [0, 1] or an unknown class name.
    """
    difficulty = check_float(difficulty, "difficulty", ge=0, le=1)
    cls = _class_index(cell_types)
    n = len(cls)
    out: dict[str, np.ndarray] = {}
    for name, (mean, sd, lo, hi, power) in CLASS_FACTORS.items():
        gap = np.float32((1.0 - difficulty) ** power)
        offset = np.array([CELL_CLASSES[c].offsets.get(name, 0.0) for c in CLASS_NAMES],
                          dtype=np.float32)[cls]
        z = rng.standard_normal(n).astype(np.float32)
        out[name] = np.clip(mean + gap * offset + sd * z, lo, hi).astype(np.float32)
    u = rng.random((n, 3), dtype=np.float32)
    out["nucleoli"] = (u < out["nucleoli_rate"][:, None]).sum(1).astype(np.int64)
    out.update(_sample_nuisance(n, rng))
    return out


def _sample_nuisance(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Class-independent factors of ``n`` cells."""
    f32 = np.float32
    return {
        "eccentricity": rng.uniform(0.0, 0.22, n).astype(f32),   # axis ratio = (1+e)^2
        "rotation": rng.uniform(0.0, np.pi, n).astype(f32),      # radians
        "shift_x": (rng.standard_normal(n) * 0.03).astype(f32),  # position jitter
        "shift_y": (rng.standard_normal(n) * 0.03).astype(f32),
        "nucleus_offset": rng.uniform(0.0, 1.0, n).astype(f32),  # share of the free room
        "nucleus_angle": rng.uniform(0.0, 2 * np.pi, n).astype(f32),
        "nucleus_eccentricity": rng.uniform(0.0, 0.15, n).astype(f32),
        "nucleus_irregularity": rng.uniform(0.0, 0.10, n).astype(f32),
        "blur": rng.uniform(0.0, 1.0, n).astype(f32),            # focus, 0 = sharp
        "noise": rng.uniform(0.008, 0.03, n).astype(f32),        # sensor noise sd
        "n_rbc": np.minimum(rng.poisson(3.5, n), 6).astype(np.int64),
        "background_tint": (rng.standard_normal(n) * 0.06).astype(f32),
    }


# ----------------------------------------------------------------------------------------
# Rendering helpers (all vectorised over a chunk of m cells)
# ----------------------------------------------------------------------------------------

_CHUNK_PIXELS = 2 ** 18   # pixels per chunk: keeps the float32 work arrays in cache


def _ramp(sdf: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """Soft inside-mask from a signed distance (negative inside); edge ``(m,1,1)`` = blur width."""
    return np.clip(0.5 - sdf / edge, 0.0, 1.0)


def _smooth_field(rng: np.random.Generator, cx: np.ndarray, cy: np.ndarray,
                  spacing: np.ndarray, grid: int, xs: np.ndarray) -> np.ndarray:
    """Smooth random field ``(m, S, S)`` of about unit variance, feature size ~ ``spacing``.

    A ``grid x grid`` lattice of Gaussian values centred on ``(cx, cy)`` is interpolated with
    Gaussian weights through two separable matrices: ``F = M_y @ L @ M_x^T``.
    """
    m = len(cx)
    lattice = rng.standard_normal((m, grid, grid), dtype=np.float32)   # L (m, G, G)
    nodes = np.arange(grid, dtype=np.float32) - (grid - 1) / 2
    ty = (xs[None, :] - cy[:, None]) / spacing[:, None]                   # (m, S)
    tx = (xs[None, :] - cx[:, None]) / spacing[:, None]
    m_y = np.exp(-1.4 * (ty[:, :, None] - nodes) ** 2)                    # (m, S, G)
    m_x = np.exp(-1.4 * (tx[:, :, None] - nodes) ** 2)
    return (m_y @ lattice @ m_x.transpose(0, 2, 1)) * np.float32(0.94)   # (m, S, S)


def _cell_geometry(f: dict[str, np.ndarray], xs: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised cell coordinates ``u, v`` (unit circle = cell edge) and nucleus placement."""
    r, e = f["cell_radius"], f["eccentricity"]
    a, b = r * (1 + e), r / (1 + e)                                        # semi-axes (m,)
    cos, sin = np.cos(f["rotation"]), np.sin(f["rotation"])
    dx = xs[None, None, :] - f["shift_x"][:, None, None]                  # (m, 1, S)
    dy = xs[None, :, None] - f["shift_y"][:, None, None]                  # (m, S, 1)
    u = (dx * cos[:, None, None] + dy * sin[:, None, None]) / a[:, None, None]
    v = (dy * cos[:, None, None] - dx * sin[:, None, None]) / b[:, None, None]
    nc = f["nc_ratio"]
    room = (1 - nc) * f["nucleus_offset"] * 0.95
    ou, ov = room * np.cos(f["nucleus_angle"]), room * np.sin(f["nucleus_angle"])
    ncx = f["shift_x"] + cos * ou * a - sin * ov * b                      # nucleus centre
    ncy = f["shift_y"] + sin * ou * a + cos * ov * b
    return {"u": u, "v": v, "ou": ou, "ov": ov, "ncx": ncx, "ncy": ncy}


def _nucleus(f: dict[str, np.ndarray], g: dict[str, np.ndarray], edge: np.ndarray,
             size: int, xs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Nucleus mask ``(m,S,S)``, nuclear dye amount and its normalised coordinates."""
    nc, r, en = f["nc_ratio"], f["cell_radius"], f["nucleus_eccentricity"]
    rn = nc * r                                                             # (m,)
    un = (g["u"] - g["ou"][:, None, None]) / nc[:, None, None]
    vn = (g["v"] - g["ov"][:, None, None]) * ((1 + en) / nc)[:, None, None]
    rho = np.sqrt(un * un + vn * vn)
    shape = _smooth_field(rng, g["ncx"], g["ncy"], 0.55 * rn, 6, xs)
    sdf = (rho - 1 + f["nucleus_irregularity"][:, None, None] * shape) * rn[:, None, None]
    mask = _ramp(sdf, edge)
    coarse = np.tanh(1.6 * _smooth_field(rng, g["ncx"], g["ncy"], 0.28 * rn, 11, xs))
    fine = _smooth_field(rng, g["ncx"], g["ncy"], 0.11 * rn, 27, xs)
    k_fine = np.clip(0.11 * rn * size / 1.2, 0.3, 1.0)                    # alias damping
    sharp = 1 - 0.45 * f["blur"]
    cc = f["chromatin_coarseness"]
    w_coarse = (0.40 * cc * sharp)[:, None, None]
    w_fine = ((0.06 + 0.2 * (1 - cc)) * sharp * k_fine)[:, None, None]
    chrom = 0.80 + w_coarse * coarse + w_fine * fine
    dye = mask * chrom * f["nucleus_density"][:, None, None]
    return mask, dye, un, vn


def _nucleoli(f: dict[str, np.ndarray], un: np.ndarray, vn: np.ndarray, edge: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Pale nucleolus spots ``(m,S,S)`` in [0, 1] (drawn for all cells, kept where present)."""
    m = len(un)
    draws = rng.random((m, 3, 3), dtype=np.float32)                       # slot: radius, angle, size
    spots = np.zeros(un.shape, dtype=np.float32)
    rn = f["nc_ratio"] * f["cell_radius"]
    for j in range(3):
        idx = np.flatnonzero(f["nucleoli"] > j)
        if idx.size == 0:
            continue
        rad, ang = 0.45 * draws[idx, j, 0], 2 * np.pi * draws[idx, j, 1]
        s = 0.15 + 0.10 * draws[idx, j, 2]                                 # spot radius / rn
        du = un[idx] - (rad * np.cos(ang))[:, None, None]
        dv = vn[idx] - (rad * np.sin(ang))[:, None, None]
        sdf = (np.sqrt(du * du + dv * dv) - s[:, None, None]) * rn[idx, None, None]
        spots[idx] = np.maximum(spots[idx], _ramp(sdf, edge[idx]))
    return spots


def _red_cells(f: dict[str, np.ndarray], edge: np.ndarray, xs: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Eosin amount ``(m,S,S)`` of red blood cells (pale centre) around the white cell."""
    m = len(edge)
    draws = rng.random((m, 6, 4), dtype=np.float32)                       # angle, dist, radius, tone
    rbc = np.zeros((m, len(xs), len(xs)), dtype=np.float32)
    for k in range(int(f["n_rbc"].max(initial=0))):
        idx = np.flatnonzero(f["n_rbc"] > k)
        rad = 0.15 + 0.04 * draws[idx, k, 2]
        ang = 2 * np.pi * draws[idx, k, 0]
        dist = f["cell_radius"][idx] + rad * (0.1 + 1.1 * draws[idx, k, 1])
        dx = xs[None, None, :] - (f["shift_x"][idx] + dist * np.cos(ang))[:, None, None]
        dy = xs[None, :, None] - (f["shift_y"][idx] + dist * np.sin(ang))[:, None, None]
        rho2 = (dx * dx + dy * dy) / (rad * rad)[:, None, None]
        body = _ramp((np.sqrt(rho2) - 1) * rad[:, None, None], edge[idx])
        pallor = 0.6 + 0.4 * np.minimum(rho2 / 0.5, 1.0)                  # paler centre
        tone = (0.8 + 0.4 * draws[idx, k, 3])[:, None, None]
        rbc[idx] = np.maximum(rbc[idx], body * pallor * tone)
    return rbc


def _render_chunk(f: dict[str, np.ndarray], stain: np.ndarray, size: int,
                  rng: np.random.Generator, out: np.ndarray) -> None:
    """Render the ``m`` cells described by ``f`` (factors) and ``stain (m, STAIN_DIM)`` into ``out``."""
    xs = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5           # pixel centres
    edge = np.sqrt((0.7 / size) ** 2 + (0.007 * f["blur"]) ** 2)[:, None, None]
    g = _cell_geometry(f, xs)
    r = f["cell_radius"]
    rim = _smooth_field(rng, f["shift_x"], f["shift_y"], 0.5 * r, 6, xs)
    rho = np.sqrt(g["u"] * g["u"] + g["v"] * g["v"])
    cell = _ramp((rho - 1 + 0.035 * rim) * r[:, None, None], edge)
    nuc, c_nuc, un, vn = _nucleus(f, g, edge, size, xs, rng)
    spots = _nucleoli(f, un, vn, edge, rng) * nuc
    c_nuc *= 1 - 0.7 * spots
    c_cyt = (cell * (1 - nuc) * f["cytoplasm_blueness"][:, None, None]
             * (0.6 + 0.45 * np.minimum(rho, 1) + 0.1 * rim))
    c_cyt += 0.3 * spots
    mottle = _smooth_field(rng, np.zeros_like(r), np.zeros_like(r), np.full_like(r, 0.3), 5, xs)
    plasma = _BACKGROUND_EOSIN * (1 + f["background_tint"])[:, None, None] + 0.03 * mottle
    c_eos = (plasma + 0.95 * _red_cells(f, edge, xs, rng)) * (1 - cell)
    v_nuc, v_cyt, v_eos, amount, light = _dyes(stain)
    c_nuc *= amount[:, 0, None, None]
    c_cyt *= amount[:, 1, None, None]
    c_eos *= amount[:, 2, None, None]
    noise = (rng.random(c_nuc.shape, dtype=np.float32) - 0.5) * (3.46 * f["noise"])[:, None, None]
    for ch in range(3):
        od = (c_nuc * v_nuc[:, ch, None, None] + c_cyt * v_cyt[:, ch, None, None]
              + c_eos * v_eos[:, ch, None, None])
        img = np.exp(-od) * light[:, ch, None, None] + noise
        out[..., ch] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _check_args(image_size: int, difficulty: float) -> tuple[int, float]:
    return (check_int(image_size, "image_size", ge=MIN_SIZE, le=MAX_SIZE),
            check_float(difficulty, "difficulty", ge=0, le=1))


def check_cell_config(cfg: CellConfig) -> CellConfig:
    """``cfg`` with ``image_size`` and ``difficulty`` validated and made plain int / float.

    Raises:
        ValueError: image size outside [MIN_SIZE, MAX_SIZE] or difficulty outside [0, 1].
    """
    size, difficulty = _check_args(cfg.image_size, cfg.difficulty)
    return dataclasses.replace(cfg, image_size=size, difficulty=difficulty)


def _stain_per_cell(stain: np.ndarray | None, n: int) -> np.ndarray:
    if stain is None:
        return np.zeros((n, STAIN_DIM), dtype=np.float32)
    s = np.asarray(stain, dtype=np.float32)
    if s.shape == (STAIN_DIM,):
        return np.broadcast_to(s, (n, STAIN_DIM))
    if s.shape == (n, STAIN_DIM):
        return s
    raise ValueError(f"stain must have shape ({STAIN_DIM},) or ({n}, {STAIN_DIM}), got {s.shape}")


def render_cells(cell_types: Sequence[str], *, image_size: int, difficulty: float,
                 rng: np.random.Generator, stain: np.ndarray | None = None,
                 return_factors: bool = False
                 ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render single-cell patches that look like MGG-stained bone-marrow cells.

    Stand-in for the Bone Marrow Cytomorphology patches (Matek et al., 2021) used by SLAM-AGS
    (Acerbis et al., ISBI 2026): negatives are lymphocytes (``LYT``), witnesses e.g. blasts
    (``BLA``).

    Args:
        cell_types: class name of each cell, from ``CLASS_NAMES``.
        image_size: patch side in px, 32..256 (the real data: 250).
        difficulty: 0 = classes far apart ... 1 = identical distributions; scales the
            class-defining offsets by ``1 - difficulty``; nuisance spread is unchanged.
        rng: NumPy generator; the same state gives the same bytes.
        stain: per-slide stain ``(STAIN_DIM,)`` shared by all cells (one slide) or one per cell
            ``(n, STAIN_DIM)``; ``None`` = neutral stain. See :func:`sample_stain`.
        return_factors: also return the latent factors (``(n,)`` arrays by name).

    Returns:
        ``uint8 (n, image_size, image_size, 3)`` RGB, and the factors if asked.

    Raises:
        ValueError: image size or difficulty out of range, unknown class, bad stain shape.
    """
    size, difficulty = _check_args(image_size, difficulty)
    factors = sample_factors(cell_types, difficulty, rng)
    n = len(factors["cell_radius"])
    stain_n = _stain_per_cell(stain, n)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        part = {k: v[sl] for k, v in factors.items()}
        _render_chunk(part, stain_n[sl], size, rng, images[sl])
    return (images, factors) if return_factors else images
