"""The demo world: a synthetic perturbation screen with known ground truth.

Every gene carries a hidden *latent program* ``z`` (a point in ``latent_dim`` dimensions) drawn around
the centre of its regulatory *module*. Everything observable is generated from these programs, so each
stage of the method has something true to recover:

- the **interactome** links genes of one module far more often, and more confidently (lower cost),
  than genes of different modules; a few promiscuous hubs and self-loops mimic iRefIndex. Modules may
  split into protein *complexes* (programs scattered around a complex centre), whose members interact
  most densely of all;
- **single-cell expression** (counts, h5ad): a gene's log-rate in a cell is its program projected on
  the cell's state, so genes of one module are correlated across cells;
- **bulk expression** over cell lines (DepMap CCLE layout): the target line ``U2OS`` deregulates the
  modules that the screen targets, so |log fold change| prizes point at them;
- **gene sets** (GMT): noisy module memberships plus random sets;
- the **screen**: an ``EMPTY`` control and perturbed genes with a strong, weak or no effect. A gene's
  effect on nuclear morphology is a fixed function of its program (direction ``A z``, a shared random
  linear map, scaled by the gene's effect size), so genes close in the network look alike;
- **images**: plates × wells × sites of 16-bit fields with nuclei whose size, elongation, DNA content,
  chromatin texture, foci, boundary irregularity and peripheral heterochromatin follow the per-nucleus
  phenotype; per-plate illumination gradients, shot and read noise, touching nuclei, and a few
  blurry and saturated fields. Ground-truth label masks sit beside the images.

All randomness flows from one seed through independent streams, and each field of view has its own
stream, so the world is identical whatever order it is written in and an interrupted run resumes
per plate.

Why one module of ~900 lines: it is one generator. Every part draws from the same seed streams and the
same world parameters, and a change to any of them changes the world (``GENERATOR_VERSION`` and
:func:`world_fingerprint` cover the whole file); splitting it would separate what must change together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import tifffile
from scipy import ndimage
from tqdm import tqdm

from image2reg.config import SyntheticParams, SyntheticScreenParams
from image2reg.layout import RawLayout, atomic_path, write_text_atomic

logger = logging.getLogger("image2reg")

CONTROL = "EMPTY"
TARGET_LINE = "U2OS"
GENERATOR_VERSION = 1

#: Per-nucleus phenotype axes (standardised: control mean 0, cell-to-cell SD 1) and what they drive.
PHENOTYPES: dict[str, str] = {
    "area": "nucleus radius",
    "elongation": "aspect ratio",
    "dna_content": "mean DNA stain intensity",
    "texture_contrast": "amplitude of chromatin texture",
    "texture_scale": "grain size of chromatin texture",
    "foci": "number of bright chromatin foci",
    "irregularity": "boundary irregularity",
    "rim": "peripheral heterochromatin (bright rim)",
}

# Image formation constants (camera counts); chosen to resemble Hoechst fields of the Rohban screen.
_CAMERA_OFFSET = 100.0
_READ_NOISE_SD = 6.0
_AUTOFLUORESCENCE = 120.0
_DNA_LEVEL = 1800.0
_PSF_SIGMA = 1.0
_BLUR_SIGMA = 4.0
_PHENOTYPE_CLIP = 3.5

# Independent random streams, one per part of the world.
(_STREAM_GENES, _STREAM_PPI, _STREAM_SC, _STREAM_BULK, _STREAM_SETS, _STREAM_SCREEN, _STREAM_FIELD,
 _STREAM_QUERY, _STREAM_VALIDATION) = range(9)


def _rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *key])


# ---------------------------------------------------------------------------------------------
# Genes and their latent programs
# ---------------------------------------------------------------------------------------------
def make_genes(params: SyntheticParams, seed: int) -> pd.DataFrame:
    """The gene universe: one row per gene with its module, complex and latent program ``z0..``.

    A gene's program is its module centre, plus its complex's offset (``complex_spread``) when modules
    split into ``n_complexes`` protein complexes, plus its own scatter (``module_spread``). With one complex
    per module, ``complex`` equals ``module``.

    Columns ``in_ppi`` / ``in_expression`` mark which genes the interactome and the expression data
    know: a few genes are missing from each, as with real resources.
    """
    rng = _rng(seed, _STREAM_GENES)
    n, d = params.n_genes, params.latent_dim
    if params.n_ppi_only_genes + params.n_expression_only_genes >= n // 2:
        raise ValueError("n_ppi_only_genes + n_expression_only_genes must be below half of n_genes")
    centres = rng.standard_normal((params.n_modules, d))
    module = np.sort(rng.integers(0, params.n_modules, size=n))
    module[: params.n_modules] = np.arange(params.n_modules)  # every module has a gene
    module = rng.permutation(module)
    z = centres[module] + params.module_spread * rng.standard_normal((n, d))
    complex_ = module.copy()
    if params.n_complexes > 1:
        # protein complexes: each module splits into complexes whose centres scatter around the module centre
        sub = _rng(seed, _STREAM_GENES, 1)
        complex_ = module * params.n_complexes + sub.integers(0, params.n_complexes, size=n)
        offsets = params.complex_spread * sub.standard_normal((params.n_modules * params.n_complexes, d))
        z = z + offsets[complex_]

    width = max(3, len(str(n)))
    genes = pd.DataFrame({"gene": [f"GENE{i + 1:0{width}d}" for i in range(n)], "module": module,
                          "complex": complex_})
    genes["gene_id"] = 100000 + np.arange(n)
    order = rng.permutation(n)
    ppi_only = order[: params.n_ppi_only_genes]
    expr_only = order[params.n_ppi_only_genes: params.n_ppi_only_genes + params.n_expression_only_genes]
    genes["in_ppi"] = True
    genes["in_expression"] = True
    genes.loc[ppi_only, "in_expression"] = False
    genes.loc[expr_only, "in_ppi"] = False
    for k in range(d):
        genes[f"z{k}"] = z[:, k]
    return genes


def latent(genes: pd.DataFrame) -> np.ndarray:
    """The latent programs of ``genes`` as an array (genes × latent_dim)."""
    return genes.filter(regex=r"^z\d+$").to_numpy()


# ---------------------------------------------------------------------------------------------
# Interactome
# ---------------------------------------------------------------------------------------------
def make_ppi(genes: pd.DataFrame, params: SyntheticParams, seed: int) -> pd.DataFrame:
    """A protein–protein interaction table in the iRefIndex costs format (``protein1 protein2 cost``).

    Lower cost means a more confident interaction. Module edges are confident (cost ≈ 0.35), noise
    edges between modules are not (≈ 0.62); hubs link to a share of all genes with middling costs.
    With ``ppi_locality`` set, an edge inside a module is likelier between genes whose programs are
    close (Gaussian weight of the program distance with that length scale, rescaled so that the mean
    probability inside modules stays ``ppi_p_within``): the interactome then knows more than the modules.
    When modules split into complexes, members of one complex interact with probability ``ppi_p_complex``
    (kind ``complex``), members of different complexes of a module with ``ppi_p_within``.
    """
    rng = _rng(seed, _STREAM_PPI)
    members = genes.index[genes["in_ppi"]].to_numpy()
    module = genes["module"].to_numpy()
    i, j = np.triu_indices(len(members), k=1)
    a, b = members[i], members[j]
    same = module[a] == module[b]
    within = np.full(len(a), params.ppi_p_within)
    if params.ppi_locality is not None:
        # interacting proteins share function: inside a module, pairs with close programs interact more often
        z = latent(genes)
        weight = np.exp(-((z[a] - z[b]) ** 2).sum(axis=1) / (2.0 * params.ppi_locality ** 2))
        within = np.clip(params.ppi_p_within * weight / weight[same].mean(), 0.0, 1.0)
    in_complex = np.zeros(len(a), dtype=bool)
    if params.n_complexes > 1:
        complex_ = genes["complex"].to_numpy()
        in_complex = complex_[a] == complex_[b]
        within = np.where(in_complex, params.ppi_p_complex or params.ppi_p_within, within)
    keep = rng.random(len(a)) < np.where(same, within, params.ppi_p_between)
    a, b, same, in_complex = a[keep], b[keep], same[keep], in_complex[keep]
    cost = np.where(same, rng.normal(0.35, 0.15, len(a)), rng.normal(0.62, 0.1, len(a)))
    kind = np.where(in_complex, "complex", np.where(same, "module", "noise"))

    hubs = rng.choice(members, size=min(params.n_hubs, len(members)), replace=False)
    hub_a, hub_b = [], []
    for hub in hubs:
        partners = rng.choice(members[members != hub], size=int(params.hub_degree_fraction * len(members)),
                              replace=False)
        hub_a.extend([hub] * len(partners))
        hub_b.extend(partners)
    loops = rng.choice(members, size=max(1, len(members) // 100), replace=False)

    a = np.concatenate([a, hub_a, loops])
    b = np.concatenate([b, hub_b, loops])
    cost = np.concatenate([cost, rng.normal(0.55, 0.1, len(hub_a)), rng.normal(0.5, 0.1, len(loops))])
    kind = np.concatenate([kind, ["hub"] * len(hub_a), ["self"] * len(loops)])
    names = genes["gene"].to_numpy()
    table = pd.DataFrame({"protein1": names[a], "protein2": names[b],
                          "cost": np.clip(cost, 0.001, 0.86).round(6), "kind": kind})
    # hub edges may repeat module/noise edges: keep the first, as a curated table would
    pair = np.sort(table[["protein1", "protein2"]].to_numpy(), axis=1)
    table = table[~pd.DataFrame(pair).duplicated().to_numpy()]
    return table.sample(frac=1.0, random_state=rng.integers(2**31)).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Expression
# ---------------------------------------------------------------------------------------------
def make_single_cell(genes: pd.DataFrame, params: SyntheticParams, seed: int) -> ad.AnnData:
    """Single-cell counts (cells × genes, int32 CSR) from the genes' programs and random cell states."""
    rng = _rng(seed, _STREAM_SC)
    expressed = genes[genes["in_expression"]]
    z = latent(expressed)
    d = z.shape[1]
    states = rng.standard_normal((params.n_cells, d))
    base = rng.normal(math.log(4.0), 1.0, len(expressed))
    library = rng.lognormal(0.0, 0.3, params.n_cells)[:, None]
    mean = library * np.exp(base[None, :] + 0.8 * states @ z.T / math.sqrt(d))
    dispersion = 0.1  # negative binomial as a gamma–Poisson mixture
    counts = rng.poisson(rng.gamma(1.0 / dispersion, mean * dispersion)).astype(np.int32)
    obs = pd.DataFrame(index=[f"cell{c + 1:05d}" for c in range(params.n_cells)])
    var = pd.DataFrame({"gene_id": expressed["gene_id"].astype(str).to_numpy()},
                       index=expressed["gene"].to_numpy())
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def make_bulk(genes: pd.DataFrame, screened_modules: np.ndarray, params: SyntheticParams,
              seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Bulk expression over cell lines in the DepMap CCLE layout, and the true U2OS log fold changes.

    Returns
    -------
    expression
        log2(TPM + 1), rows = DepMap ids, columns ``"SYMBOL (ENTREZ)"`` as in ``CCLE_expression.csv``.
    sample_info
        ``DepMap_ID``, ``cell_line_name``, ``stripped_cell_line_name``, ``lineage``.
    logfc
        Per gene: U2OS minus the mean of the other lines (the ground truth behind marker prizes).
    """
    rng = _rng(seed, _STREAM_BULK)
    expressed = genes[genes["in_expression"]]
    z = latent(expressed)
    d = z.shape[1]
    n_lines = params.n_cell_lines
    level = rng.gamma(2.0, 1.5, len(expressed))
    profiles = rng.standard_normal((n_lines, d))
    values = level[None, :] + 0.5 * profiles @ z.T / math.sqrt(d) + rng.normal(0, 0.3, (n_lines, len(expressed)))
    # U2OS (row 0): the screened modules are strongly up- or down-regulated, the others barely
    shift = rng.normal(0.0, 0.2, params.n_modules)
    shift[screened_modules] = rng.choice([-1.0, 1.0], len(screened_modules)) * rng.uniform(1.2, 2.0,
                                                                                          len(screened_modules))
    values[0] = level + shift[expressed["module"].to_numpy()] + rng.normal(0, 0.3, len(expressed))
    values = np.clip(values, 0.0, None)

    names = [TARGET_LINE] + [f"LINE{k:02d}" for k in range(1, n_lines)]
    ids = [f"ACH-{900000 + k:06d}" for k in range(n_lines)]
    columns = [f"{g} ({gid})" for g, gid in zip(expressed["gene"], expressed["gene_id"])]
    expression = pd.DataFrame(values.round(6), index=pd.Index(ids, name=None), columns=columns)
    lineages = rng.choice(["bone", "breast", "lung", "skin", "blood"], n_lines)
    lineages[0] = "bone"
    sample_info = pd.DataFrame({"DepMap_ID": ids, "cell_line_name": [n.replace("LINE", "Line-") for n in names],
                                "stripped_cell_line_name": names, "lineage": lineages})
    logfc = pd.Series(values[0] - values[1:].mean(axis=0), index=expressed["gene"].to_numpy(), name="u2os_logfc")
    return expression, sample_info, logfc


def make_gene_sets(genes: pd.DataFrame, params: SyntheticParams, seed: int) -> dict[str, list[str]]:
    """Gene sets: each module's members at 70 % recall plus 10 % strangers, and random sets."""
    rng = _rng(seed, _STREAM_SETS)
    names = genes["gene"].to_numpy()
    sets: dict[str, list[str]] = {}
    for m in range(params.n_modules):
        members = names[genes["module"].to_numpy() == m]
        kept = members[rng.random(len(members)) < 0.7]
        strangers = rng.choice(names, size=max(1, len(members) // 10), replace=False)
        sets[f"SYNTHETIC_MODULE_{m}"] = sorted(set(kept) | set(strangers))
    for k in range(params.n_random_gene_sets):
        size = int(rng.integers(5, max(6, len(names) // 8)))
        sets[f"SYNTHETIC_RANDOM_{k}"] = sorted(rng.choice(names, size=size, replace=False))
    return sets


# ---------------------------------------------------------------------------------------------
# The screen
# ---------------------------------------------------------------------------------------------
def phenotype_map(latent_dim: int, seed: int) -> np.ndarray:
    """The fixed linear map ``A`` (phenotypes × latent) from a gene's program to its effect direction."""
    return _rng(seed, _STREAM_SCREEN, 0).standard_normal((len(PHENOTYPES), latent_dim))


def effect_directions(z: np.ndarray, seed: int) -> np.ndarray:
    """Unit phenotype directions (genes × phenotypes) of programs ``z``: ``A z`` made unit length."""
    direction = z @ phenotype_map(z.shape[1], seed).T
    return direction / np.linalg.norm(direction, axis=1, keepdims=True)


def design_screen(genes: pd.DataFrame, params: SyntheticParams,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Choose the screened genes, their effects and the plate map.

    Returns
    -------
    screen
        One row per screened gene: ``effect_class`` (strong/weak/none), ``effect_size`` (cell-noise SD
        units) and the phenotype shift ``shift_<phenotype>``.
    wells
        One row per well: plate, well, gene, allele, and the effect scale of the allele.
    screened_modules
        The modules the impactful genes were drawn from (the ones U2OS deregulates).
    """
    screen_params = params.screen
    rng = _rng(seed, _STREAM_SCREEN, 1)
    eligible = genes[genes["in_ppi"] & genes["in_expression"]]
    n_impactful = screen_params.n_strong + screen_params.n_weak
    n_screen = n_impactful + screen_params.n_none
    if n_screen > len(eligible):
        raise ValueError(f"the screen asks for {n_screen} genes but only {len(eligible)} genes are in both "
                         "the interactome and the expression data: raise n_genes")
    n_active = max(2, round(0.6 * params.n_modules))
    screened_modules = np.sort(rng.choice(params.n_modules, size=n_active, replace=False))

    if screen_params.targets_per_complex > 1:
        chosen = _impactful_by_complex(eligible, screened_modules, screen_params, rng)
        rest = eligible.index.difference(chosen)
        no_effect = list(rng.choice(rest, size=screen_params.n_none, replace=False))
    else:
        # impactful genes: round-robin over the screened modules so that each has several targets
        pools = {m: list(rng.permutation(eligible.index[eligible["module"] == m])) for m in screened_modules}
        impactful: list[int] = []
        while len(impactful) < n_impactful and any(pools.values()):
            for m in screened_modules:
                if pools[m] and len(impactful) < n_impactful:
                    impactful.append(pools[m].pop())
        if len(impactful) < n_impactful:
            raise ValueError(f"the screened modules hold only {len(impactful)} eligible genes for "
                             f"{n_impactful} impactful ones: raise n_genes or lower n_strong/n_weak")
        rest = eligible.index.difference(impactful)
        no_effect = list(rng.choice(rest, size=screen_params.n_none, replace=False))
        chosen = rng.permutation(impactful)
    classes = ["strong"] * screen_params.n_strong + ["weak"] * screen_params.n_weak

    screen = genes.loc[list(chosen) + no_effect, ["gene", "module", "gene_id"]].reset_index(drop=True)
    screen["effect_class"] = classes + ["none"] * screen_params.n_none
    sizes = {"strong": screen_params.strong_effect, "weak": screen_params.weak_effect}
    screen["effect_size"] = [rng.uniform(*sizes[c]) if c in sizes else 0.0 for c in screen["effect_class"]]
    direction = effect_directions(latent(genes.loc[list(chosen) + no_effect]), seed)
    shift = direction * screen["effect_size"].to_numpy()[:, None]
    for k, name in enumerate(PHENOTYPES):
        screen[f"shift_{name}"] = shift[:, k]
    screen["impactful"] = screen["effect_class"] != "none"

    wells = _plate_map(screen, screen_params, rng)
    return screen, wells, screened_modules


def _impactful_by_complex(eligible: pd.DataFrame, screened_modules: np.ndarray, params: SyntheticScreenParams,
                          rng: np.random.Generator) -> list[int]:
    """Impactful genes drawn ``targets_per_complex`` at a time from complexes of the screened modules.

    Complexes are taken round-robin over the screened modules. The strong genes come first, then the weak
    ones, and each class is filled complex by complex, so the members drawn from one complex share their
    effect class (a class whose size is not a multiple of ``targets_per_complex`` ends with a partial complex).
    """
    per = params.targets_per_complex
    pools = {m: list(rng.permutation(eligible.loc[eligible["module"] == m, "complex"].unique()))
             for m in screened_modules}
    order = []
    while any(pools.values()):
        order += [pools[m].pop() for m in screened_modules if pools[m]]
    members = {c: list(rng.permutation(eligible.index[eligible["complex"] == c])) for c in order}
    order = [c for c in order if len(members[c]) >= per]
    chosen: list[int] = []
    for wanted in (params.n_strong, params.n_weak):
        needed = len(chosen) + wanted
        while len(chosen) < needed and order:
            take = min(per, needed - len(chosen))
            chosen += members[order.pop(0)][:take]
        if len(chosen) < needed:
            raise ValueError(f"the screened modules hold too few complexes with {per} eligible genes for "
                             f"{params.n_strong + params.n_weak} impactful genes: raise n_genes or n_complexes, "
                             "or lower n_strong/n_weak")
    return chosen


def _plate_map(screen: pd.DataFrame, params: SyntheticScreenParams, rng: np.random.Generator) -> pd.DataFrame:
    """Assign conditions to wells of 384-well plates (rows a–p, columns 01–24, as in Rohban)."""
    two_allele = set(rng.choice(screen.loc[screen["impactful"], "gene"],
                                size=min(params.n_two_allele_genes, int(screen["impactful"].sum())),
                                replace=False))
    conditions = [(CONTROL, "", 0.0)] * params.control_wells_per_plate
    for gene in screen["gene"]:
        conditions.append((gene, "WT.1", 1.0))
        if gene in two_allele:
            conditions.append((gene, "VAR.1", 0.85))  # a variant with a milder effect, pooled later
    positions = [f"{row}{col:02d}" for row in "abcdefghijklmnop" for col in range(1, 25)]
    if len(conditions) > len(positions):
        raise ValueError(f"{len(conditions)} wells per plate do not fit a 384-well plate")
    rows = []
    for p in range(params.n_plates):
        plate = 90001 + p
        for (gene, allele, scale), well in zip(conditions, rng.choice(positions, len(conditions), replace=False)):
            rows.append({"plate": plate, "well": well, "gene": gene, "allele": allele, "effect_scale": scale})
    return pd.DataFrame(rows)


def illumination_field(size: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth vignetting field (max 1, min ≈ 1 − strength) with an off-centre optical axis."""
    centre = size * (0.5 + rng.uniform(-0.2, 0.2, 2))
    tilt = rng.uniform(-0.3, 0.3, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radial = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * (size / 2) ** 2)
    linear = (tilt[0] * (yy - size / 2) + tilt[1] * (xx - size / 2)) / size
    field = 1.0 - strength * np.clip(radial + linear, 0, None)
    field = np.clip(field, 1.0 - strength, None)
    return (field / field.max()).astype(np.float32)


@dataclass(frozen=True)
class _Nucleus:
    patch: np.ndarray  # intensity, float32
    inside: np.ndarray  # bool
    halo: np.ndarray  # bool: inside dilated by ~2 px, for non-touching placement
    radius: float
    physical: dict[str, float]


def _physical(phenotype: np.ndarray, radius: float) -> dict[str, float]:
    area, elongation, dna, contrast, scale, foci, irregularity, rim = phenotype
    size = radius * math.exp(0.10 * area)
    aspect = max(1.0, math.exp(0.15 + 0.12 * elongation))
    return {
        "semi_major": size * math.sqrt(aspect), "semi_minor": size / math.sqrt(aspect),
        "intensity": _DNA_LEVEL * math.exp(0.12 * dna), "texture_contrast": 0.18 * math.exp(0.3 * contrast),
        "texture_scale": 1.4 * math.exp(0.25 * scale), "foci_rate": 2.5 * math.exp(0.45 * foci),
        "irregularity": 0.035 * math.exp(0.35 * irregularity), "rim": 0.25 * math.exp(0.35 * rim),
    }


def _render_nucleus(phenotype: np.ndarray, radius: float, rng: np.random.Generator) -> _Nucleus:
    phys = _physical(phenotype, radius)
    a, b, amp = phys["semi_major"], phys["semi_minor"], phys["irregularity"]
    half = int(math.ceil(a * (1 + 3 * amp))) + 4
    offset = rng.uniform(-0.5, 0.5, 2)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    yy -= offset[0]
    xx -= offset[1]
    theta = rng.uniform(0, np.pi)
    u = (xx * math.cos(theta) + yy * math.sin(theta)) / a
    v = (-xx * math.sin(theta) + yy * math.cos(theta)) / b
    q = np.hypot(u, v)
    angle = np.arctan2(v, u)
    boundary = np.ones_like(q)
    for k in range(2, 6):
        boundary += amp * rng.normal(0, 0.6) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    inside = q <= boundary
    halo = q <= boundary + 2.0 / b
    rel = np.clip(q / boundary, 0, 1)

    texture = ndimage.gaussian_filter(rng.standard_normal(q.shape).astype(np.float32), phys["texture_scale"])
    texture /= texture.std() + 1e-6
    body = phys["intensity"] * (1 + phys["rim"] * rel**4) * np.clip(1 + phys["texture_contrast"] * texture, 0.05, None)
    n_foci = rng.poisson(phys["foci_rate"])
    if n_foci:
        inner = np.flatnonzero((rel < 0.75).ravel())
        for spot in rng.choice(inner, size=min(n_foci, len(inner)), replace=False):
            sy, sx = yy.ravel()[spot], xx.ravel()[spot]
            body += 0.9 * phys["intensity"] * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * 1.1**2))
    phys["n_foci"] = float(n_foci)
    return _Nucleus(patch=(body * inside).astype(np.float32), inside=inside, halo=halo,
                    radius=max(a, b), physical=phys)


def _window(centre: tuple[int, int], half: int, size: int) -> tuple[slice, slice, slice, slice] | None:
    """Slices of the field and of a (2·half+1)² patch centred at ``centre``, clipped to the field."""
    y0, x0 = centre[0] - half, centre[1] - half
    fy0, fx0 = max(y0, 0), max(x0, 0)
    fy1, fx1 = min(y0 + 2 * half + 1, size), min(x0 + 2 * half + 1, size)
    if fy0 >= fy1 or fx0 >= fx1:
        return None
    return slice(fy0, fy1), slice(fx0, fx1), slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)


def render_field(
    phenotypes: np.ndarray,
    params: SyntheticScreenParams,
    illumination: np.ndarray,
    blurry: bool,
    saturated: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Render one field of view.

    Parameters
    ----------
    phenotypes
        Standardised phenotypes of the nuclei to place (nuclei × len(PHENOTYPES)); nuclei that find no
        free place are dropped.
    params
        The screen params (field size, radius, touching share).
    illumination
        The plate's illumination field (multiplies the signal).
    blurry, saturated
        Make an out-of-focus field, or one exposed so that much of the nuclear signal clips.

    Returns
    -------
    image
        uint16 field of view (camera counts).
    labels
        uint16 label mask, 0 = background, ``k`` = the nucleus in row ``k - 1`` of the table.
    nuclei
        One row per placed nucleus: label, centroid, area, touching/border flags, the standardised
        phenotype (``phenotype_<name>``) and the physical params it was rendered with.
    """
    size = params.field_size
    signal = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.uint16)
    placed: list[dict] = []
    for phenotype in phenotypes:
        nucleus = _render_nucleus(phenotype, params.nucleus_radius, rng)
        half = nucleus.patch.shape[0] // 2
        touch = placed and rng.random() < params.touching_fraction
        for _ in range(30):
            if touch:
                partner = placed[rng.integers(len(placed))]
                angle = rng.uniform(0, 2 * np.pi)
                distance = (partner["radius"] + nucleus.radius) * rng.uniform(0.8, 0.95)
                centre = (int(round(partner["y"] + distance * math.sin(angle))),
                          int(round(partner["x"] + distance * math.cos(angle))))
            else:
                centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            window = _window(centre, half, size)
            if window is None:
                continue
            fy, fx, py, px = window
            occupied = labels[fy, fx][nucleus.halo[py, px]]
            if touch:
                others = occupied[(occupied != 0) & (occupied != partner["label"])]
                shared = np.count_nonzero(labels[fy, fx][nucleus.inside[py, px]])
                ok = others.size == 0 and shared < 0.15 * nucleus.inside.sum()
            else:
                ok = not occupied.any()
            if ok:
                break
        else:
            continue
        label = len(placed) + 1
        free = nucleus.inside[py, px] & (labels[fy, fx] == 0)
        if free.sum() < 0.5 * nucleus.inside.sum():
            continue
        labels[fy, fx][free] = label
        signal[fy, fx][free] += nucleus.patch[py, px][free]
        placed.append({"label": label, "y": centre[0], "x": centre[1], "radius": nucleus.radius,
                       "placed_touching": bool(touch), **nucleus.physical,
                       **{f"phenotype_{name}": value for name, value in zip(PHENOTYPES, phenotype)}})

    sigma = _BLUR_SIGMA if blurry else _PSF_SIGMA
    expected = illumination * (ndimage.gaussian_filter(signal, sigma) + _AUTOFLUORESCENCE)
    if saturated:
        inside = expected[labels > 0]
        expected *= 60000.0 / np.percentile(inside, 40) if inside.size else 20.0
    counts = rng.poisson(expected).astype(np.float32) + _CAMERA_OFFSET + rng.normal(0, _READ_NOISE_SD, expected.shape)
    image = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    return image, labels, _nucleus_table(labels, placed)


def _nucleus_table(labels: np.ndarray, placed: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(placed)
    if table.empty:
        return pd.DataFrame(columns=["label", "centroid_y", "centroid_x", "area", "touching", "border"])
    n = len(table) + 1
    flat = labels.ravel()
    yy, xx = np.indices(labels.shape)
    area = np.bincount(flat, minlength=n)
    table["area"] = area[1:]
    table["centroid_y"] = np.bincount(flat, weights=yy.ravel(), minlength=n)[1:] / np.maximum(area[1:], 1)
    table["centroid_x"] = np.bincount(flat, weights=xx.ravel(), minlength=n)[1:] / np.maximum(area[1:], 1)
    touching = np.zeros(n, bool)
    for left, right in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        contact = (left != right) & (left > 0) & (right > 0)
        touching[left[contact]] = True
        touching[right[contact]] = True
    table["touching"] = touching[1:]
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    table["border"] = np.isin(table["label"], edge[edge > 0])
    return table.drop(columns=["y", "x", "radius"])


# ---------------------------------------------------------------------------------------------
# Writing the world
# ---------------------------------------------------------------------------------------------
def image_file_name(plate: int, well: str, site: int) -> str:
    """A file name in the Rohban convention: ``<barcode>_<well>_s<site>_w1<hash>.tif``."""
    digest = hashlib.sha1(f"{plate}/{well}/{site}".encode()).hexdigest()[:8].upper()
    return f"syn-u2os-72h-cp-a-p{plate}_{well}_s{site}_w1{digest}.tif"


def world_fingerprint(params: SyntheticParams, seed: int) -> str:
    payload = {"params": params.model_dump(mode="json"), "seed": seed, "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_world_info(raw: RawLayout) -> dict | None:
    """The ``world.json`` of a synthesized raw folder, or None when there is none."""
    path = raw.world
    return json.loads(path.read_text()) if path.is_file() else None


def synthesize_world(params: SyntheticParams, raw: RawLayout, seed: int, progress_bar: bool = True) -> dict:
    """Write the synthetic world into ``raw`` and return its summary.

    The world is first written to ``<raw>.partial`` and moved into place when complete, so ``raw`` is
    never half-written. An interrupted run resumes: finished plates of a partial world with the same
    params and seed are kept. If ``raw`` already holds this very world, nothing is done.

    Parameters
    ----------
    params
        Sizes and effects of the world (``stages.data.synthetic`` in the params file).
    raw
        Where the raw dataset goes (``runs/<dataset>/raw``).
    seed
        The seed every random stream derives from.
    progress_bar
        Show a progress bar over fields of view.

    Returns
    -------
    dict
        Counts of what was made (genes, edges, cells, fields, nuclei, ...), also stored in
        ``truth/world.json``.
    """
    fingerprint = world_fingerprint(params, seed)
    existing = read_world_info(raw)
    if existing is not None and existing["fingerprint"] == fingerprint:
        logger.info("synthetic world already complete in %s", raw.root)
        return existing["summary"]
    if raw.root.exists() and existing is None and any(raw.root.iterdir()):
        raise FileExistsError(f"{raw.root} holds data that was not synthesized by image2reg; "
                              "refusing to replace it: move it away or choose another dataset name")

    started = time.perf_counter()
    partial = RawLayout(raw.root.with_name(raw.root.name + ".partial"))
    stamp = partial.root / ".fingerprint"
    if partial.root.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(partial.root)
    partial.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, fingerprint)

    genes = make_genes(params, seed)
    screen, wells, screened_modules = design_screen(genes, params, seed)
    summary = _write_omics(genes, screen, screened_modules, params, seed, partial)
    summary.update(_write_screen(screen, wells, params.screen, seed, partial, progress_bar))

    info = {"fingerprint": fingerprint, "seed": seed, "generator": GENERATOR_VERSION,
            "params": params.model_dump(mode="json"), "summary": summary}
    stamp.unlink()
    write_text_atomic(partial.world, json.dumps(info, indent=2))
    _replace_dir(partial.root, raw.root)
    logger.info("synthetic world written to %s in %.1f s", raw.root, time.perf_counter() - started)
    return summary


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is moved aside first and removed last."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def _write_omics(genes: pd.DataFrame, screen: pd.DataFrame, screened_modules: np.ndarray,
                 params: SyntheticParams, seed: int, raw: RawLayout) -> dict:
    ppi = make_ppi(genes, params, seed)
    with atomic_path(raw.file("ppi")) as tmp:
        ppi[["protein1", "protein2", "cost"]].to_csv(tmp, sep="\t", index=False)

    cells = make_single_cell(genes, params, seed)
    with atomic_path(raw.file("scrnaseq")) as tmp:
        cells.write_h5ad(tmp)
    bulk, sample_info, logfc = make_bulk(genes, screened_modules, params, seed)
    with atomic_path(raw.file("bulk_expression")) as tmp:
        bulk.to_csv(tmp)
    with atomic_path(raw.file("bulk_sample_info")) as tmp:
        sample_info.to_csv(tmp, index=False)

    sets = make_gene_sets(genes, params, seed)
    write_text_atomic(raw.file("genesets"),
                      "".join(f"{name}\tsynthetic\t" + "\t".join(members) + "\n" for name, members in sets.items()))
    write_text_atomic(raw.screen_genes, "".join(f"{g}\n" for g in screen["gene"]))

    truth = genes.merge(screen.drop(columns=["module", "gene_id"]), on="gene", how="left")
    truth["in_screen"] = truth["effect_class"].notna()
    truth["impactful"] = truth["impactful"].astype("boolean").fillna(False).astype(bool)
    truth["u2os_logfc"] = truth["gene"].map(logfc)
    truth["module_screened"] = truth["module"].isin(screened_modules)
    _write_parquet(truth, raw.truth_genes)
    _write_parquet(ppi, raw.truth_ppi)
    return {"n_genes": int(len(genes)), "n_modules": params.n_modules, "n_ppi_edges": int(len(ppi)),
            "n_cells": int(cells.n_obs), "n_expressed_genes": int(cells.n_vars),
            "n_cell_lines": params.n_cell_lines, "n_gene_sets": len(sets),
            "n_screen_genes": int(len(screen)),
            "n_strong": int((screen["effect_class"] == "strong").sum()),
            "n_weak": int((screen["effect_class"] == "weak").sum()),
            "n_none": int((screen["effect_class"] == "none").sum())}


def _field_plan(wells: pd.DataFrame, params: SyntheticScreenParams, seed: int) -> pd.DataFrame:
    """One row per field of view, with its QC truth (blurry / saturated) decided up front."""
    fields = wells.loc[wells.index.repeat(params.sites_per_well)].reset_index(drop=True)
    fields["site"] = np.tile(np.arange(1, params.sites_per_well + 1), len(wells))
    rng = _rng(seed, _STREAM_SCREEN, 2)
    n = len(fields)
    order = rng.permutation(n)
    n_blurry = min(n, math.ceil(params.blurry_fraction * n)) if params.blurry_fraction else 0
    n_saturated = min(n - n_blurry, math.ceil(params.saturated_fraction * n)) if params.saturated_fraction else 0
    fields["blurry"] = False
    fields["saturated"] = False
    fields.loc[order[:n_blurry], "blurry"] = True
    fields.loc[order[n_blurry:n_blurry + n_saturated], "saturated"] = True
    fields["file_name"] = [image_file_name(p, w, s) for p, w, s in zip(fields["plate"], fields["well"], fields["site"])]
    return fields


def _write_screen(screen: pd.DataFrame, wells: pd.DataFrame, params: SyntheticScreenParams, seed: int,
                  raw: RawLayout, progress_bar: bool) -> dict:
    fields = _field_plan(wells, params, seed)
    shifts = screen.set_index("gene")[[f"shift_{p}" for p in PHENOTYPES]]
    bar = tqdm(total=len(fields), desc="synthesizing fields", unit="field", disable=not progress_bar)
    nuclei_tables, field_tables = [], []
    for plate, plate_fields in fields.groupby("plate", sort=True):
        done = raw.truth / "plates" / f"{plate}_nuclei.parquet"
        illum_path = raw.truth / "illumination" / f"{plate}.tif"
        if done.is_file():  # finished by an earlier, interrupted run with the same fingerprint
            nuclei_tables.append(pd.read_parquet(done))
            field_tables.append(pd.read_parquet(done.with_name(f"{plate}_fields.parquet")))
            bar.update(len(plate_fields))
            continue
        illumination = illumination_field(params.field_size, params.illumination_strength,
                                          _rng(seed, _STREAM_FIELD, plate))
        with atomic_path(illum_path) as tmp:
            tifffile.imwrite(tmp, illumination)
        plate_nuclei, plate_rows = [], []
        for well_index, (well, well_fields) in enumerate(plate_fields.groupby("well", sort=True)):
            first = well_fields.iloc[0]
            well_rng = _rng(seed, _STREAM_FIELD, plate, well_index)
            shift = shifts.loc[first["gene"]].to_numpy() * first["effect_scale"] if first["gene"] in shifts.index \
                else np.zeros(len(PHENOTYPES))
            well_offset = well_rng.normal(0, params.well_effect_sd, len(PHENOTYPES))
            for _, field in well_fields.iterrows():
                rng = _rng(seed, _STREAM_FIELD, plate, well_index, int(field["site"]))
                image, labels, table = _draw_field(shift + well_offset, params, illumination, rng,
                                                   bool(field["blurry"]), bool(field["saturated"]))
                for folder, array in ((raw.images, image), (raw.masks, labels)):
                    with atomic_path(folder / str(plate) / field["file_name"]) as tmp:
                        tifffile.imwrite(tmp, array, compression="zlib" if array is labels else None)
                table.insert(0, "file_name", field["file_name"])
                for key in ("plate", "well", "site", "gene", "allele"):
                    table.insert(0, key, field[key])
                plate_nuclei.append(table)
                plate_rows.append({**field.to_dict(), "n_nuclei": len(table)})
                bar.update()
        plate_table = pd.concat(plate_nuclei, ignore_index=True)
        _write_parquet(pd.DataFrame(plate_rows), done.with_name(f"{plate}_fields.parquet"))
        _write_parquet(plate_table, done)  # last: marks the plate as finished
        nuclei_tables.append(plate_table)
        field_tables.append(pd.DataFrame(plate_rows))
    bar.close()

    nuclei = pd.concat(nuclei_tables, ignore_index=True)
    field_truth = pd.concat(field_tables, ignore_index=True)
    _write_parquet(nuclei, raw.truth_nuclei)
    _write_parquet(field_truth, raw.truth_fields)
    metadata = rohban_metadata(field_truth, screen)
    with atomic_path(raw.image_metadata) as tmp:
        metadata.to_csv(tmp, index=False)
    return {"n_plates": params.n_plates, "n_wells": int(len(wells)), "n_fields": int(len(field_truth)),
            "n_nuclei": int(len(nuclei)), "n_blurry_fields": int(field_truth["blurry"].sum()),
            "n_saturated_fields": int(field_truth["saturated"].sum()),
            "n_touching_nuclei": int(nuclei["touching"].sum())}


def _draw_field(mean: np.ndarray, params: SyntheticScreenParams, illumination: np.ndarray, rng: np.random.Generator,
                blurry: bool = False, saturated: bool = False) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One field of a well: Poisson many nuclei with phenotypes ``mean`` + cell-to-cell noise, rendered."""
    n = rng.poisson(params.nuclei_per_field)
    phenotypes = np.clip(mean + rng.standard_normal((n, len(PHENOTYPES))), -_PHENOTYPE_CLIP, _PHENOTYPE_CLIP)
    return render_field(phenotypes, params, illumination, blurry, saturated, rng)


def render_query_fields(genes: pd.DataFrame, gene: str, n_fields: int, params: SyntheticScreenParams,
                        out_dir: str | Path, seed: int) -> list[Path]:
    """New fields of view of one gene of a synthesized world, as a fresh well that no stage has seen.

    The gene's phenotype shift comes from the world's truth (``genes``: ``truth/genes.parquet``); the
    plate illumination, well offset and nuclei are drawn from a stream of their own, so the fields
    differ from every field of the screen. For checking predictions on a held-out condition.
    """
    table = genes.set_index("gene") if "gene" in genes else genes
    if gene not in table.index:
        raise KeyError(f"{gene!r} is not a gene of the synthetic world")
    shift = table.loc[gene, [f"shift_{p}" for p in PHENOTYPES]].to_numpy(dtype=np.float64)
    code = int(table.index.get_loc(gene))
    illumination = illumination_field(params.field_size, params.illumination_strength,
                                      _rng(seed, _STREAM_QUERY, code))
    well_offset = _rng(seed, _STREAM_QUERY, code, 0).normal(0, params.well_effect_sd, len(PHENOTYPES))
    out_dir = Path(out_dir)
    paths = []
    for site in range(1, n_fields + 1):
        image, _, _ = _draw_field(shift + well_offset, params, illumination, _rng(seed, _STREAM_QUERY, code, site))
        path = out_dir / f"{gene.lower()}_query_s{site}.tif"
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, image)
        paths.append(path)
    return paths


def world_shifts(genes: pd.DataFrame, names: list[str], effect: tuple[float, float], seed: int) -> pd.DataFrame:
    """The phenotype shift of each gene in ``names`` when perturbed in a new screen of the same world.

    A gene of the first screen keeps its effect (``shift_*`` of ``truth/genes.parquet``: ``genes``); any
    other gene gets the world's direction for its program, ``A z`` made unit length, times an effect size
    drawn uniformly from ``effect`` (one draw per gene of the world, so a gene's effect does not depend on
    which genes are asked for). Returns genes × phenotypes with ``effect_size`` and ``in_screen`` columns.
    """
    table = genes.set_index("gene") if "gene" in genes else genes
    missing = [name for name in names if name not in table.index]
    if missing:
        raise KeyError(f"not genes of the synthetic world: {', '.join(missing[:10])}")
    columns = [f"shift_{p}" for p in PHENOTYPES]
    direction = effect_directions(latent(table), seed)
    size = _rng(seed, _STREAM_VALIDATION, 0).uniform(effect[0], effect[1], len(table))
    shifts = pd.DataFrame(direction * size[:, None], index=table.index, columns=columns)
    shifts["effect_size"] = size
    screened = table["in_screen"].to_numpy(bool) if "in_screen" in table else np.zeros(len(table), bool)
    shifts.loc[screened, columns] = table.loc[screened, columns].to_numpy(np.float64)
    shifts.loc[screened, "effect_size"] = table.loc[screened, "effect_size"].to_numpy(np.float64)
    shifts["in_screen"] = screened
    return shifts.loc[list(names)]


def second_screen_plan(train: list[str], test: list[str], *, train_wells: int, test_wells: int, control_wells: int,
                       sites_per_well: int, seed: int) -> pd.DataFrame:
    """Fields of a second screen: ``train_wells`` wells per training gene, ``test_wells`` per test gene, and
    ``control_wells`` of the control, placed at random on as many 384-well plates (95001, …) as needed."""
    conditions = ([(CONTROL, "control")] * control_wells + [(g, "train") for g in train for _ in range(train_wells)]
                  + [(g, "test") for g in test for _ in range(test_wells)])
    rng = _rng(seed, _STREAM_VALIDATION, 1)
    order = rng.permutation(len(conditions))
    positions = [f"{row}{col:02d}" for row in "abcdefghijklmnop" for col in range(1, 25)]
    rows = []
    for slot, index in enumerate(order):
        gene, role = conditions[index]
        plate, well = 95001 + slot // len(positions), positions[slot % len(positions)]
        for site in range(1, sites_per_well + 1):
            rows.append({"plate": plate, "well": well, "site": site, "gene": gene, "role": role,
                         "file_name": image_file_name(plate, well, site)})
    return pd.DataFrame(rows).sort_values(["plate", "well", "site"], ignore_index=True)


def render_second_screen(shifts: pd.DataFrame, plan: pd.DataFrame, params: SyntheticScreenParams,
                         out_dir: str | Path, seed: int, progress_bar: bool = True) -> pd.DataFrame:
    """Render the fields of ``plan`` (:func:`second_screen_plan`) into ``out_dir/<plate>/``.

    The screen is a new "lab": every plate, well and field draws from the validation stream, so no field
    repeats one of the first screen. ``shifts`` (:func:`world_shifts`) gives each gene's effect; the control
    has none. A field whose file exists is kept (the streams make it identical), so an interrupted run
    resumes. Returns the stage-01 field table (``Metadata_Plate/Well/Site/Gene/Role``, ``image_path``).
    """
    out_dir = Path(out_dir)
    columns = [f"shift_{p}" for p in PHENOTYPES]
    rows = []
    with tqdm(total=len(plan), desc="synthesizing the second screen", unit="field", disable=not progress_bar) as bar:
        for plate, plate_fields in plan.groupby("plate", sort=True):
            illumination = illumination_field(params.field_size, params.illumination_strength,
                                              _rng(seed, _STREAM_VALIDATION, 2, int(plate)))
            for well_index, (well, fields) in enumerate(plate_fields.groupby("well", sort=True)):
                gene = fields["gene"].iloc[0]
                shift = np.zeros(len(PHENOTYPES)) if gene == CONTROL else shifts.loc[gene, columns].to_numpy(float)
                offset = _rng(seed, _STREAM_VALIDATION, 3, int(plate), well_index).normal(
                    0, params.well_effect_sd, len(PHENOTYPES))
                for field in fields.itertuples(index=False):
                    path = out_dir / str(plate) / field.file_name
                    if not path.is_file():
                        rng = _rng(seed, _STREAM_VALIDATION, 4, int(plate), well_index, int(field.site))
                        image, _, _ = _draw_field(shift + offset, params, illumination, rng)
                        with atomic_path(path) as tmp:
                            tifffile.imwrite(tmp, image)
                    rows.append({"Metadata_Plate": str(plate), "Metadata_Well": well, "Metadata_Site": int(field.site),
                                 "Metadata_Gene": gene, "image_path": str(path.resolve()), "Metadata_Role": field.role})
                    bar.update()
    return pd.DataFrame(rows)


def rohban_metadata(fields: pd.DataFrame, screen: pd.DataFrame) -> pd.DataFrame:
    """The per-image metadata table in the column convention of the Rohban et al. database export."""
    gene_ids = screen.set_index("gene")["gene_id"]
    control = fields["gene"] == CONTROL
    return pd.DataFrame({
        "ImageNumber": np.arange(1, len(fields) + 1),
        "Image_Metadata_Plate": fields["plate"].to_numpy(),
        "Image_Metadata_Well": fields["well"].to_numpy(),
        "Image_Metadata_Site": fields["site"].to_numpy(),
        "Image_FileName_OrigHoechst": fields["file_name"].to_numpy(),
        "Image_Count_Nuclei": fields["n_nuclei"].to_numpy(),
        "Image_Metadata_GeneSymbol": fields["gene"].to_numpy(),
        "Image_Metadata_GeneID": fields["gene"].map(gene_ids).astype("Int64").to_numpy(),
        "Image_Metadata_AlleleDesc": fields["allele"].to_numpy(),
        "Image_Metadata_IsLandmark": 0,
        "Image_Metadata_Type": np.where(control, "CTRL", "ORF"),
        "Image_Metadata_ASSAY_WELL_ROLE": np.where(control, "Untreated", "Treated"),
        "Image_Metadata_ExpressionVector": "pLX_304",
        "Image_Metadata_TimePoint_Hours": 72,
        "Image_Metadata_QCFlag_isBlurry": fields["blurry"].astype(int).to_numpy(),
        "Image_Metadata_QCFlag_isSaturated": fields["saturated"].astype(int).to_numpy(),
    })
