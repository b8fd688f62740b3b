"""What a model file's contents must satisfy before anything uses them.

:func:`check_model` runs on every load (``kinetics.model.model_file.read_model_file``) and before
every save: the metadata must be consistent in itself, with the tensors and with the embedded
mechanism, or the file is refused with one :class:`InputError` line naming the field and the
reason. Without it an edited or mismatched file loaded and failed later (the service answered
every step with 500) or stepped wrongly (a negative ``dt_s``, λ = 0).

Checked: ``dt_s`` > 0; λ in (0, 1]; the temperature (K) and pressure (Pa) domains
``[lo, hi]`` with 0 < lo ≤ hi; ``frozen_temperature_k`` ≥ 0; the species list is the
mechanism's (names and order) and the inert species are among them; the output transform and
``route_below``; each network's ``n_in`` = 2 + ns, ``n_out`` = ns and every weight shape as its
architecture builds it; the normalisation tensors ``[2+ns]``/``[ns]`` finite with positive
scales, the Box-Cox domain ``[ns]`` with min ≤ max; no tensor the file does not declare.
From format 4: the occupancy domain (its coordinates, increasing finite bin edges, the
``domain.occupancy`` tensor of 0/1 bytes shaped by them, fuel and oxidiser streams of the
mechanism's species and the stoichiometric mixture fraction they give) and the induction
network (as the near-equilibrium one, plus ``progress_below`` in (0, 1] and, when present,
``fallback_below`` ≥ 0, from format 5); from format 5 ``inference_precision`` (float32,
bfloat16 or bfloat16-hidden); older formats may hold none of these.
"""

from __future__ import annotations

from typing import Any

import cantera as ct
import torch

from kinetics.model.model_file import (
    BCT_MAX,
    BCT_MIN,
    DOMAIN_TENSORS,
    FEATURE_NORMS,
    OCCUPANCY_TENSOR,
    TARGET_NORMS,
    WEIGHTS,
)
from kinetics.model.precisions import INFERENCE_PRECISIONS
from kinetics.networks.architectures import build_model
from mechanisms.config_file import is_number
from mechanisms.errors import InputError, cantera_message
from mechanisms.loading import solution_from_yaml


class _Refusal:
    """Builds the one line that refuses a model file: ``model: <path>: <field> <reason>``."""

    def __init__(self, path: object):
        self.path = path

    def __call__(self, field: str, reason: str) -> InputError:
        return InputError(f"model: {self.path}: {field} {reason}")


def check_model(meta: Any, tensors: dict[str, torch.Tensor], mechanism_yaml: str,
                path: object) -> None:
    """InputError naming the first inconsistency of a model (``meta``: a ``ModelMeta``;
    ``tensors``: every tensor of the file by name; ``path``: how to name the file)."""
    refuse = _Refusal(path)
    _check_scalars(meta, refuse)
    gas = _check_mechanism(meta, mechanism_yaml, refuse)
    ns = len(meta.species)
    expected = set(DOMAIN_TENSORS)
    _check_vector(tensors, BCT_MIN, ns, refuse)
    _check_vector(tensors, BCT_MAX, ns, refuse)
    if bool((tensors[BCT_MIN] > tensors[BCT_MAX]).any()):
        raise refuse(BCT_MIN, f"exceeds {BCT_MAX} for some species")
    version = getattr(meta, "format_version", 1)
    domain = getattr(meta, "domain", None)
    induction = getattr(meta, "induction", None)
    if version < 4 and (domain is not None or induction is not None):
        raise refuse("domain" if domain is not None else "induction",
                     f"needs format 4, the file is format {version}")
    if domain is not None:
        expected |= _check_domain(domain, tensors, gas, refuse)
    precision = getattr(meta, "inference_precision", "float32")
    if precision not in INFERENCE_PRECISIONS:
        raise refuse("inference_precision", f"must be {', '.join(INFERENCE_PRECISIONS)}, got "
                                            f"{precision!r}")
    floor = (induction or {}).get("fallback_below") if isinstance(induction, dict) else None
    if version < 5 and (precision != "float32" or floor is not None):
        raise refuse("inference_precision" if precision != "float32" else
                     "induction.fallback_below", f"needs format 5, the file is format {version}")
    heads = [("", meta.architecture, meta.output_transform)]
    for name, regime in (("tail", meta.tail), ("induction", induction)):
        if regime is None:
            continue
        if not isinstance(regime, dict) or not isinstance(regime.get("architecture"), dict):
            raise refuse(name, "must be null or hold an 'architecture' mapping")
        route = regime.get("route_below")
        if not (is_number(route) and route > 0):
            raise refuse(f"{name}.route_below", f"must be a number > 0, got {route!r}")
        if name == "induction":
            progress = regime.get("progress_below")
            if not (is_number(progress) and 0 < progress <= 1):
                raise refuse("induction.progress_below", f"must lie in (0, 1], got {progress!r}")
            floor = regime.get("fallback_below", 0.0)
            if not (is_number(floor) and floor >= 0):
                raise refuse("induction.fallback_below", f"must be a number >= 0, got {floor!r}")
        heads.append((f"{name}.", regime["architecture"], regime.get("output_transform")))
    for prefix, architecture, transform in heads:
        _check_transform(transform, f"{prefix}output_transform", refuse)
        expected |= _check_head(prefix, architecture, tensors, ns, refuse)
    router = getattr(meta, "router", None)
    if router is not None:
        if version < 6:
            raise refuse("router", f"needs format 6, the file is format {version}")
        _check_router(router, meta.tail, refuse)
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise refuse(f"tensor '{unexpected[0]}'", "is not part of the model its metadata declare")


def _check_scalars(meta: Any, refuse: _Refusal) -> None:
    if not (is_number(meta.dt_s) and meta.dt_s > 0):
        raise refuse("dt_s", f"must be a number > 0 (s), got {meta.dt_s!r}")
    lam = meta.box_cox_lambda
    if not (is_number(lam) and 0 < lam <= 1):
        raise refuse("box_cox_lambda", f"must lie in (0, 1], got {lam!r}")
    for name, unit in (("temperature_k", "K"), ("pressure_pa", "Pa")):
        bounds = getattr(meta, name)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(is_number, bounds))
                and 0 < bounds[0] <= bounds[1]):
            raise refuse(name, f"must be [lo, hi] in {unit} with 0 < lo <= hi, got {bounds!r}")
    frozen = meta.frozen_temperature_k
    if not (is_number(frozen) and frozen >= 0):
        raise refuse("frozen_temperature_k", f"must be a number >= 0 (K), got {frozen!r}")
    species = meta.species
    if not (isinstance(species, list) and species and all(isinstance(s, str) for s in species)
            and len(set(species)) == len(species)):
        raise refuse("species", "must be a non-empty list of distinct species names")
    inert = meta.inert_species
    if not (isinstance(inert, list) and all(s in species for s in inert)):
        raise refuse("inert_species", f"must list species of the model, got {inert!r}")


def _check_mechanism(meta: Any, mechanism_yaml: str, refuse: _Refusal) -> ct.Solution:
    try:
        gas = solution_from_yaml(mechanism_yaml, meta.phase, meta.mechanism_sha256)
    except ct.CanteraError as exc:
        raise refuse("phase", f"'{meta.phase}' cannot be built from the embedded mechanism "
                              f"({cantera_message(exc)})")
    names = list(gas.species_names)
    if meta.species != names:
        first = next((i for i, (a, b) in enumerate(zip(meta.species, names)) if a != b),
                     min(len(meta.species), len(names)))
        raise refuse("species", f"do not match the embedded mechanism ({len(meta.species)} "
                                f"listed, {len(names)} in {meta.mechanism_source}; first "
                                f"difference at position {first})")
    return gas


def _check_domain(domain: Any, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                  refuse: _Refusal) -> set[str]:
    """Check the occupancy domain (format 4) against its tensor and the mechanism; the names of
    its tensors."""
    from kinetics.model.domain import COORDINATES, DomainCoordinates, DomainSettings

    if not isinstance(domain, dict):
        raise refuse("domain", f"must be null or a mapping, got {domain!r}")
    check = domain.get("check")
    if check not in DomainSettings.CHECKS:
        raise refuse("domain.check", f"must be one of {', '.join(DomainSettings.CHECKS)}, got "
                                     f"{check!r}")
    if domain.get("coordinates") != list(COORDINATES):
        raise refuse("domain.coordinates", f"must be {list(COORDINATES)}, got "
                                           f"{domain.get('coordinates')!r}")
    edges = domain.get("edges")
    if not (isinstance(edges, list) and len(edges) == len(COORDINATES)):
        raise refuse("domain.edges", f"must be {len(COORDINATES)} lists of bin edges")
    for name, e in zip(COORDINATES, edges):
        if not (isinstance(e, list) and len(e) >= 2 and all(map(is_number, e))
                and all(a < b for a, b in zip(e, e[1:]))):
            raise refuse(f"domain.edges ({name})", "must be >= 2 increasing finite numbers")
    for key, least in (("min_rows", 1), ("dilate", 0)):
        value = domain.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise refuse(f"domain.{key}", f"must be a whole number >= {least}, got {value!r}")
    try:
        coords = DomainCoordinates(gas, domain.get("fuel"), domain.get("oxidizer"))
    except InputError as exc:
        raise refuse("domain.fuel/oxidizer", f"are not streams of the mechanism ({exc})")
    z_st = domain.get("stoichiometric_mixture_fraction")
    if not (is_number(z_st) and abs(z_st - coords.stoichiometric) <= 1e-9 * max(1.0, z_st)):
        raise refuse("domain.stoichiometric_mixture_fraction",
                     f"is {z_st!r}, its fuel and oxidiser give {coords.stoichiometric:.12g}")
    if check != "occupancy":
        return set()  # the grid is used (and stored) by the occupancy check only
    if OCCUPANCY_TENSOR not in tensors:
        raise refuse(f"tensor '{OCCUPANCY_TENSOR}'", "is missing")
    occupancy = tensors[OCCUPANCY_TENSOR]
    shape = [len(e) - 1 for e in edges]
    if occupancy.dtype != torch.uint8 or list(occupancy.shape) != shape:
        raise refuse(f"tensor '{OCCUPANCY_TENSOR}'", f"must be uint8 {shape} (the bins of "
                                                     f"domain.edges), got {occupancy.dtype} "
                                                     f"{list(occupancy.shape)}")
    if bool((occupancy > 1).any()):
        raise refuse(f"tensor '{OCCUPANCY_TENSOR}'", "must hold 0 or 1 in every bin")
    return {OCCUPANCY_TENSOR}


def _check_transform(transform: Any, field: str, refuse: _Refusal) -> None:
    if transform is None:
        return
    if not (isinstance(transform, dict) and transform.get("type") == "signed_power"
            and is_number(transform.get("lambda")) and transform["lambda"] > 0):
        raise refuse(field, f"must be null or {{type: signed_power, lambda: > 0}}, got "
                            f"{transform!r}")


def _check_vector(tensors: dict[str, torch.Tensor], name: str, size: int, refuse: _Refusal,
                  positive: bool = False) -> None:
    if name not in tensors:
        raise refuse(f"tensor '{name}'", "is missing")
    t = tensors[name]
    if tuple(t.shape) != (size,) or not t.is_floating_point():
        raise refuse(f"tensor '{name}'", f"must be a float vector of {size} (the species "
                                         f"count and the state width set it), got "
                                         f"{t.dtype} {list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise refuse(f"tensor '{name}'", "holds NaN or inf")
    if positive and not bool((t > 0).all()):
        raise refuse(f"tensor '{name}'", "must be > 0 everywhere (it divides)")


def _check_router(router: Any, tail: Any, refuse: _Refusal) -> None:
    """The router needs a near-equilibrium network to send cells to, a precision it can run the
    main network's copy in, and a threshold within the near-equilibrium routing one."""
    if not isinstance(router, dict):
        raise refuse("router", f"must be null or a mapping, got {router!r}")
    if tail is None:
        raise refuse("router", "needs a near-equilibrium network (tail) to send cells to")
    if router.get("precision") != "bfloat16":
        raise refuse("router.precision", f"must be bfloat16, got {router.get('precision')!r}")
    skip = router.get("skip_main_below")
    if not (is_number(skip) and 0 < skip <= tail["route_below"]):
        raise refuse("router.skip_main_below", f"must lie in (0, tail.route_below = "
                                               f"{tail['route_below']!r}], got {skip!r}")


def _check_head(prefix: str, architecture: Any, tensors: dict[str, torch.Tensor], ns: int,
                refuse: _Refusal) -> set[str]:
    """Check one network and its scaling against ``ns`` species; the names of its tensors."""
    field = f"{prefix}architecture"
    if not isinstance(architecture, dict):
        raise refuse(field, f"must be a mapping, got {architecture!r}")
    for key, want in (("n_in", 2 + ns), ("n_out", ns)):
        if architecture.get(key) != want:
            raise refuse(f"{field}.{key}", f"must be {want} for {ns} species, got "
                                           f"{architecture.get(key)!r}")
    hidden = architecture.get("hidden")
    if not (isinstance(hidden, list) and all(isinstance(h, int) and not isinstance(h, bool)
                                             and h >= 1 for h in hidden)):
        raise refuse(f"{field}.hidden", f"must be a list of layer sizes >= 1, got {hidden!r}")
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            shapes = {prefix + WEIGHTS + k: tuple(v.shape)
                      for k, v in build_model(architecture).state_dict().items()}
    except (InputError, TypeError, ValueError, RuntimeError) as exc:
        raise refuse(field, f"is not buildable ({exc})")
    for name, shape in shapes.items():
        if name not in tensors:
            raise refuse(f"tensor '{name}'", f"is missing (the architecture {field} needs it)")
        if tuple(tensors[name].shape) != shape:
            raise refuse(f"tensor '{name}'", f"has shape {list(tensors[name].shape)}; "
                                             f"{field} (hidden {hidden}) needs {list(shape)}")
    for name, size in ((FEATURE_NORMS[0], 2 + ns), (FEATURE_NORMS[1], 2 + ns),
                       (TARGET_NORMS[0], ns), (TARGET_NORMS[1], ns)):
        _check_vector(tensors, prefix + name, size, refuse, positive=name.endswith("_std"))
    return set(shapes) | {prefix + n for n in FEATURE_NORMS + TARGET_NORMS}
