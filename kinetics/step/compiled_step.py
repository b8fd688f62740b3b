"""The chemistry step's arithmetic as one TorchScript module: a call runs no Python per cell.

:class:`CompiledStep` holds a model file's networks and constants and advances cells
``[n, 2+ns]`` (T in K, P in Pa, Y) by model steps of ``dt_s``: Box-Cox features and their
normalisation, the main network and the routing of slow cells to the near-equilibrium ("tail") or
induction network, the output transform and target scaling, ``Y' = BCT⁻¹(BCT(Y) + dt·rate)``, the
projection onto the element mass fractions of Y, the renormalisation with inert species held, and
T' from h(T', Y') = h(T, Y) by Newton's method on the NASA-7 polynomials (float64); the frozen
cells (T below ``frozen_temperature_k``) and the training-domain check (T, P, the species' Box-Cox
box, the occupancy grid of format 4). Each cell comes back with a flag: :data:`FLAG_NETWORK`
(stepped by the networks), :data:`FLAG_FROZEN` (passed through unchanged) or
:data:`FLAG_FALLBACK` (outside the domain, below the induction network's resolution, or its
enthalpy inversion failed: it needs another integrator — Cantera, in the Python engine).

The networks run in float32 (or bfloat16 where asked), on CPU in cache-sized blocks on oneDNN's
fused linear op (:class:`kinetics.step.forward.BlockedForward`, weights prepacked once), with the
same kernels in the same order as the Python engine had, so the rates and the routing are the same
bits (a lone row goes through as two, so a cell's rates do not depend on its batch); everything
else runs in float64, arranged for few tensor operations per call (a step of one cell is about
130 operations of about a microsecond each, plus ~15 µs per oneDNN layer call of a network; the
constant tables are in :mod:`kinetics.step.tables`): the enthalpy inversion evaluates each cell's
mixture polynomial instead of every species' (on floats for up to :data:`FEW_CELLS` cells), the
domain's bin is one lookup, the projection solves by Cholesky.
Those round differently: T differs from the Python engine by ~1e-12 relative, Y by a few ulp
(``tests/test_compiled_step.py`` holds |ΔT| ≤ 1e-9 K, |ΔY| ≤ 1e-13).

The :class:`~kinetics.integrator.Integrator` scripts one at load (:func:`script_step`) and runs it;
:func:`export_model` writes it as a TorchScript file that libtorch's ``torch::jit::load`` reads
(the C library's in-process backend, ``couplers/c``; ``deepkin export``).
"""

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Final

import cantera as ct
import numpy as np
import torch
from torch import nn

from kinetics.model.model_file import (
    BCT_MAX,
    BCT_MIN,
    FEATURE_NORMS,
    INDUCTION,
    OCCUPANCY_TENSOR,
    TAIL,
    TARGET_NORMS,
    WEIGHTS,
    ModelMeta,
    network_state,
    read_model_file,
)
from kinetics.networks.architectures import MLP, build_model
from kinetics.networks.transforms import box_cox, signed_power_inverse
from kinetics.step.device import resolve_device
from kinetics.step.forward import NETWORK_PRECISIONS, BlockedForward, native_bfloat16_cpu
from kinetics.step.tables import element_tables, mixture_rows, occupancy_table, thermo_table
from mechanisms.atomic_io import atomic_write
from mechanisms.errors import InputError
from mechanisms.loading import solution_from_yaml
from mechanisms.state import ONE_ATM_PA

# The per-cell flag a step returns.
FLAG_NETWORK, FLAG_FROZEN, FLAG_FALLBACK = 0, 1, 2
# Which network gave a cell's rates; ROUTE_UNRESOLVED: an induction cell whose rates lie below
# that network's resolution (``induction.fallback_below``), handed to the fallback.
ROUTE_MAIN, ROUTE_TAIL, ROUTE_INDUCTION, ROUTE_UNRESOLVED = 0, 1, 2, 3
DOMAIN_MARGIN = 0.02  # fraction of each training range a cell may lie outside it
# A cell whose complete combustion would form less product than this (mass fraction) has nothing
# to burn: it is never handed to the fallback as unresolved (pure air or fuel, however hot).
NOTHING_TO_BURN = 1e-6
NEWTON_RTOL = 1e-12  # the enthalpy inversion's relative step at convergence
NEWTON_MAX_ITER = 50
# Up to this many cells the enthalpy inversion iterates on floats, cell by cell (a tensor
# operation costs ~1 µs whatever its size; a float iteration of one cell ~2 µs).
FEW_CELLS = 8
MAX_SQUARING_EXPONENT = 64  # 1/λ up to this, whole: BCT⁻¹ by repeated squaring (as transforms.py)
EXPORT_FORMAT = 1  # of the TorchScript file `deepkin export` writes (its deepkin_model.json)
_JIT_DEPRECATION = ".*torch.jit.* is deprecated.*"


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silences torch ≥ 2.9's DeprecationWarning for ``torch.jit.script``, ``trace``, ``save``
    and ``load`` (TorchScript still works in torch 2.13; see docs/model-file.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION, category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _scriptable(network: nn.Module, n_in: int, dtype: torch.dtype, device: torch.device
                ) -> nn.Module:
    """``network`` itself when TorchScript compiles it (an MLP), else its trace (MscaleDNN's
    generator sum does not script; its trace runs the same kernels)."""
    if isinstance(network, MLP):
        return network
    try:
        with quiet_jit():
            return torch.jit.script(network)
    except Exception:  # noqa: BLE001 - TorchScript raises several types for Python it cannot compile
        with quiet_jit():
            return torch.jit.trace(network, torch.zeros(2, n_in, dtype=dtype, device=device))


def network_rates(out: torch.Tensor, output_lambda: float, y_std: torch.Tensor,
                  y_std_quarter: torch.Tensor, y_mean: torch.Tensor) -> torch.Tensor:
    """A network's outputs ``[n, ns]`` → rates d BCT(Y)/dt (1/s, float64): the signed-power
    output transform (λ = ``output_lambda``; 0: none) and the target scaling. λ = 1/2:
    sign(u)·(|u|/2)² = u·|u|/4, and u·|u|·(y_std/4) rounds as (u·|u|/4)·y_std (scaling by 1/4
    is exact): the same bits as the general form in two operations."""
    out = out.to(torch.float64)
    if output_lambda == 0.5:
        return out * out.abs() * y_std_quarter + y_mean
    if output_lambda > 0.0:
        out = signed_power_inverse(out, output_lambda)
    return out * y_std + y_mean


def largest_scaled_rate(rate: torch.Tensor, y_std: torch.Tensor, inert: torch.Tensor,
                        has_inert: bool) -> torch.Tensor:
    """The largest |rate| of each cell ``[n]``, × the target scale ``y_std``, inert species left
    out: what the routing compares with its thresholds."""
    largest = (rate / y_std).abs()
    if has_inert:
        largest = torch.where(inert, 0.0, largest)
    return largest.amax(dim=1)


def project_elements(y: torch.Tensor, y_new: torch.Tensor, element_matrix: torch.Tensor,
                     element_matrix_t: torch.Tensor, element_products: torch.Tensor,
                     reactive: torch.Tensor, has_inert: bool) -> torch.Tensor:
    """``y_new`` ``[n, ns]`` projected onto the element mass fractions of ``y``: weighted least
    squares with weights ∝ Y' (trace species barely move), inert species (``reactive`` 0.0)
    fixed, clipped at 0; ``element_matrix`` ``[ne, ns]`` and ``element_products`` ``[ns, ne²]``
    as :func:`kinetics.step.tables.element_tables` gives them (see ``kinetics/integrator.py``).
    A cell whose system cannot be factorised gets NaN (its step is not ok)."""
    ne = element_matrix.shape[0]
    w = y_new + 1e-30
    if has_inert:
        w = w * reactive
    resid = (y_new - y) @ element_matrix_t  # [n, ne]
    m = (w @ element_products).view(-1, ne, ne)
    # Ridge term: two elements carried by the same species only (H and C in fresh CH4/air)
    # make m singular; the part of the residual no species can absorb stays.
    diagonal = m.diagonal(dim1=1, dim2=2)
    ridge = diagonal.amax(dim=1, keepdim=True) * 1e-9 + 1e-300
    if m.requires_grad:  # the training's rollout differentiates the step: no in-place add
        m = m + torch.diag_embed(ridge.expand(-1, ne))
    else:
        diagonal += ridge
    # m is symmetric positive definite (a Gram matrix with positive weights, plus the ridge):
    # Cholesky solves it at a third of LU's cost for a few cells. A factorisation that fails
    # leaves NaN, and the cell is not ok (the fallback takes it).
    factor, info = torch.linalg.cholesky_ex(m)
    lam = torch.cholesky_solve(resid.unsqueeze(2), factor).squeeze(2)
    if bool(info.any()):
        lam = torch.where((info != 0).unsqueeze(1), float("nan"), lam)
    return torch.clamp(y_new - w * (lam @ element_matrix), min=0.0)


def renormalise(y: torch.Tensor, y_new: torch.Tensor, inert: torch.Tensor, reactive: torch.Tensor,
                has_inert: bool) -> torch.Tensor:
    """``y_new`` ``[n, ns]`` scaled to ΣY' = 1, the inert species (``inert`` True) held at their
    Y in ``y`` and the reactive ones scaled to fill the rest."""
    if has_inert:
        inert_total = (y * inert).sum(dim=1, keepdim=True)
        active_total = (y_new * reactive).sum(dim=1, keepdim=True)
        scale = torch.rsub(inert_total, 1.0) / torch.clamp(active_total, min=1e-300)
        return torch.where(inert, y, y_new * scale)
    return y_new * torch.reciprocal(torch.clamp(y_new.sum(dim=1, keepdim=True), min=1e-300))


def mixture_products(mix: torch.Tensor, has_coordinates: bool, w_h2o: float, w_co2: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(complete [n], progress [n])`` from the mixture rows' products ``mix`` ``[n, 6]``:
    the products' (H2O, CO2) mass fraction complete combustion would reach (0 where nothing
    can burn; ``w_h2o``, ``w_co2``: their weights) and the progress c in [0, 1]
    (kinetics/model/domain.py); zeros without coordinates."""
    if not has_coordinates:
        empty = torch.zeros(mix.shape[0], dtype=mix.dtype, device=mix.device)
        return empty, empty
    o = mix.select(1, 5)
    if w_h2o != 0.0:
        h2o = torch.minimum(mix.select(1, 3) / 2.0, o)
        o = torch.clamp(o - h2o, min=0.0)
        complete = w_h2o * h2o
    else:
        complete = torch.zeros_like(o)
    if w_co2 != 0.0:
        complete = complete + w_co2 * torch.minimum(mix.select(1, 4), o / 2.0)
    c = torch.where(complete > 1e-12, mix.select(1, 2) / torch.clamp(complete, min=1e-300), 0.0)
    return complete, torch.clamp(c, 0.0, 1.0)


def box_cox_inverse_squaring(b: torch.Tensor, lam: float, whole_exponent: int) -> torch.Tensor:
    """``Y = max(λ·b + 1, 0)^(1/λ)`` (:func:`kinetics.networks.transforms.box_cox_inverse`), by
    repeated squaring when ``whole_exponent`` = 1/λ is whole (0: it is not)."""
    base = torch.clamp(lam * b + 1.0, min=0.0)
    k = whole_exponent
    if k == 0:
        return base ** (1.0 / lam)
    result: torch.Tensor | None = None
    x = base
    while True:
        if k & 1:
            result = x if result is None else result * x
        k = k >> 1
        if k == 0:
            break
        x = x * x
    assert result is not None
    return result


class RateNetwork(nn.Module):
    """One network with its feature and target scaling: features ``[n, 2+ns]``
    ``[T (K), ln(P/1 atm), BCT(Y)]`` (float64) → d BCT(Y)/dt ``[n, ns]`` (1/s, float64).

    ``network`` is the :class:`~kinetics.step.forward.BlockedForward` pass of the weights (its
    ``parameters()`` are the weights, in the networks' dtype); ``hidden_dtype``: its layers
    between the first and the last run in this dtype instead (None: ``dtype``)."""

    def __init__(self, architecture: dict, output_transform: dict | None,
                 tensors: dict[str, torch.Tensor], prefix: str, device: torch.device,
                 dtype: torch.dtype, hidden_dtype: torch.dtype | None = None):
        super().__init__()
        net = build_model(architecture)
        net.load_state_dict(network_state(tensors, prefix + WEIGHTS))
        net.to(device, dtype).eval().requires_grad_(False)
        self.network = BlockedForward(_scriptable(net, int(architecture["n_in"]), dtype, device),
                                      device, dtype, hidden_dtype)
        self.dtype = dtype
        self.hidden_dtype = hidden_dtype if hidden_dtype is not None else dtype
        f64 = dict(device=device, dtype=torch.float64)
        for name, key in zip(("x_mean", "x_std", "y_mean", "y_std"), FEATURE_NORMS + TARGET_NORMS):
            self.register_buffer(name, tensors[prefix + key].to(**f64))
        # The signed-power output's λ (0: the network predicts the scaled target itself).
        signed = bool(output_transform) and output_transform.get("type") == "signed_power"
        self.output_lambda = float(output_transform["lambda"]) if signed else 0.0
        self.register_buffer("y_std_quarter", self.y_std * 0.25)  # λ = 1/2 (network_rates)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = ((features - self.x_mean) / self.x_std).to(self.dtype)
        return network_rates(self.network(z), self.output_lambda, self.y_std,
                             self.y_std_quarter, self.y_mean)


class CompiledStep(nn.Module):
    """A model file's step as tensors only (see the module's docstring); build it with
    :meth:`from_model`, compile it with :func:`script_step`.

    ``forward(states [n, 2+ns] float64, n_substeps) → (states', flag [n] int8)``: for a caller
    without a fallback integrator (the C library): a cell flagged :data:`FLAG_FALLBACK` comes back
    as it was given, for the caller's own integrator to take the whole step. :meth:`advance` is
    the engine's view: it holds such a cell at the state that needs the fallback and says after
    how many model steps. Routing and domain settings (``route_below``, ``domain_check``,
    ``use_grid``, …) are attributes a caller may change after scripting.
    """

    # Constants as TorchScript sees them (it cannot read a module's global Python values).
    FLAG_FALLBACK: Final[int] = FLAG_FALLBACK
    ROUTE_TAIL: Final[int] = ROUTE_TAIL
    ROUTE_INDUCTION: Final[int] = ROUTE_INDUCTION
    ROUTE_UNRESOLVED: Final[int] = ROUTE_UNRESOLVED
    NOTHING_TO_BURN: Final[float] = NOTHING_TO_BURN

    def __init__(self, meta: ModelMeta, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                 device: torch.device, dtype: torch.dtype, hidden_dtype: torch.dtype | None = None):
        super().__init__()
        self.n_species = meta.n_species
        self.species = list(meta.species)
        self.dt_s = float(meta.dt_s)
        self.mechanism_sha256 = meta.mechanism_sha256
        self.model_name = meta.name
        self.lam = float(meta.box_cox_lambda)
        exponent = 1.0 / self.lam
        self.whole_exponent = (int(exponent) if exponent.is_integer()
                               and 1 <= exponent <= MAX_SQUARING_EXPONENT else 0)
        self.one_atm_pa = float(ONE_ATM_PA)
        self.frozen_temperature_k = float(meta.frozen_temperature_k)
        self.newton_rtol = NEWTON_RTOL
        self.newton_max_iter = NEWTON_MAX_ITER
        self._set_networks(meta, tensors, device, dtype, hidden_dtype)
        self._set_domain(meta, tensors, gas, device)
        self._set_species(meta, gas, device)
        t_bounds, table = thermo_table(gas, device)
        self.register_buffer("t_bounds", t_bounds)
        self.t_bounds_list = [float(b) for b in t_bounds.tolist()]
        self.n_intervals = len(t_bounds) + 1
        self.few_cells = FEW_CELLS
        self.register_buffer("thermo_table", table)  # [ns, J·12]
        h_columns = [j * 12 + c for j in range(self.n_intervals) for c in range(6)]
        self.register_buffer("enthalpy_table", table[:, h_columns].contiguous())  # [ns, J·6]
        self.register_buffer("powers", torch.arange(6, dtype=torch.float64, device=device))
        self.register_buffer("newton_signs", torch.tensor([-1.0, 1.0], dtype=torch.float64,
                                                          device=device)[:, None])
        self.register_buffer("route_codes", torch.tensor(
            [4 + ROUTE_TAIL, 4 + ROUTE_INDUCTION, ROUTE_UNRESOLVED], dtype=torch.int64, device=device))

    @classmethod
    def from_model(cls, meta: ModelMeta, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   hidden_dtype: torch.dtype | None = None) -> "CompiledStep":
        """The step of a model file's contents (``read_model_file``), on ``device``, networks in
        ``dtype`` (their hidden layers in ``hidden_dtype``, None: ``dtype``); ``gas``: the model's
        embedded mechanism (for its thermo and elements)."""
        return cls(meta, tensors, gas, torch.device(device), dtype, hidden_dtype).eval()

    def _set_networks(self, meta: ModelMeta, tensors: dict[str, torch.Tensor],
                      device: torch.device, dtype: torch.dtype,
                      hidden_dtype: torch.dtype | None) -> None:
        """The main network and the regime networks with their routing thresholds."""
        self.head = RateNetwork(meta.architecture, meta.output_transform, tensors, "", device, dtype,
                                hidden_dtype)
        self.tail = None
        self.route_below = 0.0
        if meta.tail:
            self.tail = RateNetwork(meta.tail["architecture"], meta.tail.get("output_transform"),
                                    tensors, TAIL, device, dtype, hidden_dtype)
            self.route_below = float(meta.tail["route_below"])
        self.induction = None
        self.induction_route_below = self.induction_progress_below = 0.0
        self.induction_fallback_below = 0.0
        if meta.induction:
            self.induction = RateNetwork(meta.induction["architecture"],
                                         meta.induction.get("output_transform"), tensors,
                                         INDUCTION, device, dtype, hidden_dtype)
            self.induction_route_below = float(meta.induction["route_below"])
            self.induction_progress_below = float(meta.induction["progress_below"])
            self.induction_fallback_below = float(meta.induction.get("fallback_below", 0.0))
        # The router (format 6): the main network's bfloat16 copy, run first; a cell it finds
        # slow skips the float32 main network (skip_main_below × the main target scale; 0: off).
        # Built for a float32 main network; on by default where bfloat16 multiplies natively (a
        # CUDA device, or a CPU with AVX512-BF16 or AMX), off elsewhere (emulated bfloat16 costs
        # more than it saves), where a caller may still turn it on.
        self.router = None
        self.skip_main_below = 0.0
        if meta.router and dtype == torch.float32 and self.head.hidden_dtype == torch.float32:
            self.router = RateNetwork(meta.architecture, meta.output_transform, tensors, "",
                                      device, torch.bfloat16)
            if device.type == "cuda" or (device.type == "cpu" and native_bfloat16_cpu()):
                self.skip_main_below = float(meta.router["skip_main_below"])

    def _set_domain(self, meta: ModelMeta, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                    device: torch.device) -> None:
        """Ranges of the features ``[T, ln(P/1 atm), BCT(Y)]`` widened by :data:`DOMAIN_MARGIN`
        (the P bounds as ln(P/1 atm), so one comparison checks every feature), the occupancy
        grid (format 4, ``domain.check: occupancy``) and the mixture coordinates."""
        f64 = dict(device=device, dtype=torch.float64)
        lo, hi = tensors[BCT_MIN].to(**f64), tensors[BCT_MAX].to(**f64)
        span = torch.clamp(hi - lo, min=1e-6)
        t_lo, t_hi = meta.temperature_k
        t_margin = DOMAIN_MARGIN * (t_hi - t_lo)
        p_lo, p_hi = meta.pressure_pa
        tp_lo = torch.tensor([t_lo - t_margin, np.log(p_lo * (1 - DOMAIN_MARGIN) / ONE_ATM_PA)], **f64)
        tp_hi = torch.tensor([t_hi + t_margin, np.log(p_hi * (1 + DOMAIN_MARGIN) / ONE_ATM_PA)], **f64)
        self.register_buffer("tp_lo", tp_lo)
        self.register_buffer("tp_hi", tp_hi)
        self.register_buffer("feature_lo", torch.cat([tp_lo, lo - DOMAIN_MARGIN * span]))
        self.register_buffer("feature_hi", torch.cat([tp_hi, hi + DOMAIN_MARGIN * span]))
        domain = meta.domain or {}
        self.domain_check = str(domain.get("check", "box"))
        # The mixture coordinates, when the model records its streams (the induction routing
        # reads the progress variable too).
        self.has_coordinates = bool(meta.domain or meta.induction)
        rows = torch.zeros(meta.n_species, 6, **f64)
        self.beta_oxidizer, self.beta_span, self.stoichiometric = 0.0, 1.0, 1.0
        self.w_h2o = self.w_co2 = 0.0
        if self.has_coordinates:
            fuel, oxidizer = meta.streams
            mix = mixture_rows(gas, fuel, oxidizer, device)
            rows = mix.rows
            self.beta_oxidizer, self.beta_span = mix.beta_oxidizer, mix.beta_span
            self.stoichiometric, self.w_h2o, self.w_co2 = mix.stoichiometric, mix.w_h2o, mix.w_co2
        self.register_buffer("mixture_rows", rows)
        self.use_grid = self.domain_check == "occupancy"
        edges = torch.full((5, 2), float("inf"), **f64)
        strides = torch.zeros(5, 1, dtype=torch.int64, device=device)
        occupancy = torch.zeros(1, dtype=torch.bool, device=device)
        if self.use_grid:
            table = occupancy_table(domain["edges"], tensors[OCCUPANCY_TENSOR], device)
            edges, strides, occupancy = table.edges, table.strides, table.occupancy
        self.register_buffer("grid_edges", edges)
        self.register_buffer("grid_strides", strides)
        self.register_buffer("occupancy", occupancy)
        self.n_bins = int(occupancy.numel())

    def _set_species(self, meta: ModelMeta, gas: ct.Solution, device: torch.device) -> None:
        """Inert species (held fixed) and the element tables of the projection."""
        inert = torch.zeros(meta.n_species, dtype=torch.bool)
        for name in meta.inert_species:
            inert[meta.species.index(name)] = True
        self.has_inert = bool(inert.any())
        self.register_buffer("inert", inert.to(device))
        self.register_buffer("reactive", (~inert).to(device, torch.float64))  # 1.0 / 0.0
        a, products = element_tables(gas, inert.numpy(), device)
        self.n_elements = int(a.shape[0])
        self.register_buffer("element_matrix", a)
        self.register_buffer("element_matrix_t", a.T.contiguous())
        self.register_buffer("element_products", products)

    # -- the callers' entry points -------------------------------------------------------------
    @torch.jit.export
    def prepack(self) -> None:
        """Reorder the networks' weights into oneDNN's layout once (CPU; see
        :meth:`kinetics.step.forward.FusedMLP.prepack`): call it after loading, never before saving.
        The engine does at load; a C++ caller after ``torch::jit::load``."""
        self.head.network.prepack()
        tail, induction, router = self.tail, self.induction, self.router
        if tail is not None:
            tail.network.prepack()
        if induction is not None:
            induction.network.prepack()
        if router is not None:
            router.network.prepack()

    def forward(self, states: torch.Tensor, n_substeps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states' [n, 2+ns] float64, flag [n] int8)`` after ``n_substeps`` model steps;
        cells flagged :data:`FLAG_FALLBACK` or :data:`FLAG_FROZEN` come back as given."""
        out, flag, _, _ = self.advance(states, n_substeps, None, True)
        held = flag == self.FLAG_FALLBACK
        if bool(held.any()):
            out = torch.where(held[:, None], states, out)
        return out, flag

    @torch.jit.export
    def advance(self, states: torch.Tensor, n_substeps: int, remaining: torch.Tensor | None,
                normalise: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance ``states`` ``[n, 2+ns]`` (float64) by ``n_substeps`` model steps, or by
        ``remaining`` ``[n]`` (int64) steps each when given.

        Returns ``(states', flag [n] int8, done [n] int64, counts [3] int64)``: a frozen cell
        (T below the frozen temperature on entry) comes back as given; a cell flagged
        :data:`FLAG_FALLBACK` is held at the state that needs the fallback, after ``done`` model
        steps; cells that cool below the frozen temperature stop there. ``counts``: cell-steps
        from the near-equilibrium network, from the induction network, and below the induction
        network's resolution. ``normalise``: clip Y at 0 and rescale it to ΣY = 1 first (states
        from a caller; not for states this method or the fallback returned).
        """
        n = states.shape[0]
        t = states.select(1, 0)
        frozen = t < self.frozen_temperature_k
        flag = frozen.to(torch.int8)  # FLAG_FROZEN where frozen, FLAG_NETWORK elsewhere
        n_frozen = int(flag.sum())
        counts = torch.zeros(3, dtype=torch.int64, device=states.device)
        done = torch.zeros(n, dtype=torch.int64, device=states.device)
        if n_frozen == n:
            return states, flag, done, counts  # nothing to step: no copy of a large batch
        t = t.contiguous()
        p = states.select(1, 1).contiguous()
        y = states.narrow(1, 2, self.n_species)
        if normalise:
            y = torch.clamp(y, min=0.0)
            y = y / y.sum(dim=1, keepdim=True)
        owned = False  # t and y are this call's own tensors (not views of ``states``)
        active = ~frozen
        steps = n_substeps
        n_active = n - n_frozen
        if remaining is not None:
            active = active & (remaining > 0)
            steps = int(remaining.max()) if n > 0 else 0
            n_active = int(active.sum())
        for k in range(steps):
            if k > 0:
                active = active & (t >= self.frozen_temperature_k)
                if remaining is not None:
                    active = active & (done < remaining)
                n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active == n:
                t, y, ok, route, n_ok, routed = self._model_step(t, p, y)
                owned = True
                done = ok.to(torch.int64) if k == 0 else done + ok.to(torch.int64)
                if n_ok < n:
                    active = ok
                    flag = torch.where(ok, flag, torch.full_like(flag, self.FLAG_FALLBACK))
            else:
                if not owned:
                    t, y, owned = t.clone(), y.clone(), True
                i = active.nonzero().squeeze(1)
                t_i, y_i, ok, route, n_ok, routed = self._model_step(t[i], p[i], y[i])
                t[i] = t_i
                y[i] = y_i
                done[i] = done[i] + ok.to(torch.int64)
                if n_ok < i.shape[0]:
                    held = i[~ok]
                    flag[held] = self.FLAG_FALLBACK
                    active[held] = False
            if routed:
                codes = torch.bincount(route.to(torch.int64) + 4 * ok.to(torch.int64), minlength=8)
                counts += codes.index_select(0, self.route_codes)
        out = torch.cat([t.unsqueeze(1), p.unsqueeze(1), y], dim=1)
        if n_frozen > 0:
            out = torch.where(frozen[:, None], states, out)
        return out, flag, done, counts

    # -- one model step ------------------------------------------------------------------------
    @torch.jit.export
    def model_step(self, t: torch.Tensor, p: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model step of cells ``t`` ``[n]`` (K), ``p`` ``[n]`` (Pa), ``y`` ``[n, ns]``:
        ``(T', Y', ok [n] bool, route [n] int8)``; a cell not ``ok`` (outside the domain,
        unresolved or not inverted) keeps its T and Y."""
        t_new, y_new, ok, route, _, _ = self._model_step(t, p, y)
        return t_new, y_new, ok, route

    def _features(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The networks' inputs ``[T, ln(P/1 atm), BCT(Y)]`` and what the products, progress and
        domain are computed from (the mixture coordinates, or the inputs themselves)."""
        features = torch.cat([t.unsqueeze(1), torch.log(p / self.one_atm_pa).unsqueeze(1), bct],
                             dim=1)
        mix = y @ self.mixture_rows if self.has_coordinates else features
        return features, mix

    def _model_step(self, t: torch.Tensor, p: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, bool]:
        """:meth:`model_step` with the number of ``ok`` cells and whether a regime network took
        any (else ``route`` is all :data:`ROUTE_MAIN`): what the caller would ask the tensors."""
        n = t.shape[0]
        bct = box_cox(y, self.lam)
        features, mix = self._features(t, p, bct, y)
        complete, progress = self._products(mix)
        inside = self._inside(features, mix, progress)
        n_inside = int(inside.sum())
        if n_inside == n:
            t_new, y_new, ok, route, routed = self.network_step(t, y, bct, features, complete,
                                                                progress)
            n_ok = int(ok.sum())
            if n_ok < n:
                t_new = torch.where(ok, t_new, t)
                y_new = torch.where(ok[:, None], y_new, y)
            return t_new, y_new, ok, route, n_ok, routed
        ok = inside.clone()
        route = torch.zeros(n, dtype=torch.int8, device=t.device)
        t_out, y_out = t.clone(), y.clone()
        n_ok, routed = 0, False
        if n_inside > 0:
            i = inside.nonzero().squeeze(1)
            t_i, y_i, ok_i, route_i, routed = self.network_step(t[i], y[i], bct[i], features[i],
                                                                complete[i], progress[i])
            good = i[ok_i]
            n_ok = good.shape[0]
            t_out[good] = t_i[ok_i]
            y_out[good] = y_i[ok_i]
            ok[i] = ok_i
            route[i] = route_i
        return t_out, y_out, ok, route, n_ok, routed

    def network_step(self, t: torch.Tensor, y: torch.Tensor, bct: torch.Tensor,
                     features: torch.Tensor, complete: torch.Tensor, progress: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """The networks' step of in-domain cells: ``(T', Y', ok, route, routed)``."""
        rate, route, routed, unresolved = self._rates(features, complete, progress)  # 1/s
        y_new = self.box_cox_inverse(bct + self.dt_s * rate)
        if self.has_inert:
            y_new = torch.where(self.inert, y, y_new)
        y_new = renormalise(y, self.conserve_elements(y, y_new), self.inert, self.reactive,
                            self.has_inert)
        # A non-finite Y' makes its mixture polynomial NaN, so Newton does not converge: a cell
        # that converged has a finite T' and Y'.
        t_new, ok = self.temperature(t, y, y_new)
        if unresolved:
            ok = ok & (route != self.ROUTE_UNRESOLVED)
        return t_new, y_new, ok, route, routed

    def _rates(self, features: torch.Tensor, complete: torch.Tensor, progress: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """``(rates [n, ns], route [n] int8, routed, unresolved)``: the main network's, with slow
        cells routed to the regime networks (see :meth:`kinetics.integrator.Integrator.rates`);
        ``routed``: a regime network may have taken a cell (False: ``route`` is all
        :data:`ROUTE_MAIN`); ``unresolved``: a cell may be :data:`ROUTE_UNRESOLVED`."""
        n = features.shape[0]
        skipped = self._skips_main(features, progress)
        if skipped is None:
            rate = self.head(features)
        else:  # the main network on the other cells only; the skipped ones go to the tail
            rate = torch.zeros(n, self.n_species, dtype=torch.float64, device=features.device)
            keep = (~skipped).nonzero().squeeze(1)
            if keep.shape[0] > 0:
                rate.index_copy_(0, keep, self.head(features.index_select(0, keep)))
        route = torch.zeros(n, dtype=torch.int8, device=features.device)
        tail, induction = self.tail, self.induction
        if (tail is None and induction is None) or n == 0:
            return rate, route, False, False
        largest = largest_scaled_rate(rate, self.head.y_std, self.inert, self.has_inert)
        limit = max(self.route_below if tail is not None else 0.0,
                    self.induction_route_below if induction is not None else 0.0)
        if not bool((largest < limit).any()):
            return rate, route, False, False  # no slow cell
        unresolved = False
        if tail is not None:
            route.masked_fill_(largest < self.route_below, self.ROUTE_TAIL)
        if induction is not None:
            fresh = progress < self.induction_progress_below
            route.masked_fill_(fresh & (largest < self.induction_route_below), self.ROUTE_INDUCTION)
        if tail is not None:
            chosen = route == self.ROUTE_TAIL
            if bool(chosen.any()):
                i = chosen.nonzero().squeeze(1)
                rate[i] = tail.forward(features[i])
        if induction is not None:
            chosen = route == self.ROUTE_INDUCTION
            if bool(chosen.any()):
                i = chosen.nonzero().squeeze(1)
                rate_i = induction.forward(features[i])
                rate[i] = rate_i
                if self.induction_fallback_below > 0:
                    own = (rate_i / induction.y_std).abs()
                    if self.has_inert:
                        own = torch.where(self.inert, 0.0, own)
                    own = own.amax(dim=1)
                    burnable = complete[i] > self.NOTHING_TO_BURN
                    route[i[(own < self.induction_fallback_below) & burnable]] = self.ROUTE_UNRESOLVED
                    unresolved = True
        return rate, route, True, unresolved

    def _skips_main(self, features: torch.Tensor, progress: torch.Tensor
                    ) -> torch.Tensor | None:
        """The cells ``[n]`` bool the router sends to the near-equilibrium network without the
        float32 main network: the main network's rates in bfloat16 all below
        ``skip_main_below`` × the main target scale (inert species left out), never a fresh cell
        when there is an induction network; None: no such cell, or no router."""
        router, tail = self.router, self.tail
        if router is None or tail is None or self.skip_main_below <= 0.0 or features.shape[0] == 0:
            return None
        largest = largest_scaled_rate(router.forward(features), self.head.y_std, self.inert,
                                      self.has_inert)
        skip = largest < self.skip_main_below
        if self.induction is not None:
            skip = skip & (progress >= self.induction_progress_below)
        return skip if bool(skip.any()) else None

    @torch.jit.export
    def rates(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor,
              y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d BCT(Y)/dt [n, ns] in 1/s, route [n] int8)`` for cells ``t`` (K), ``p`` (Pa) with
        Box-Cox features ``bct`` (and mass fractions ``y``, computed from ``bct`` when None)."""
        if y is None:
            y = self.box_cox_inverse(bct)
        features, mix = self._features(t, p, bct, y)
        complete, progress = self._products(mix)
        rate, route, _, _ = self._rates(features, complete, progress)
        return rate, route

    # -- the training domain -------------------------------------------------------------------
    @torch.jit.export
    def in_domain(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor,
                  y: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean ``[n]``: inside the training domain (see
        :meth:`kinetics.integrator.Integrator.in_domain`)."""
        if y is None:
            y = self.box_cox_inverse(bct)
        features, mix = self._features(t, p, bct, y)
        _, progress = self._products(mix)
        return self._inside(features, mix, progress)

    def _inside(self, features: torch.Tensor, mix: torch.Tensor, progress: torch.Tensor
                ) -> torch.Tensor:
        """T, P (and with the ``box`` and ``occupancy`` checks every species' BCT) within the
        widened training ranges; with ``occupancy`` also in a bin of the grid that held rows."""
        if self.domain_check == "none":
            tp = features.narrow(1, 0, 2)
            return ((tp >= self.tp_lo) & (tp <= self.tp_hi)).all(dim=1)
        inside = ((features >= self.feature_lo) & (features <= self.feature_hi)).all(dim=1)
        if self.use_grid and features.shape[0] > 0:
            z = torch.clamp((mix.select(1, 0) - self.beta_oxidizer) / self.beta_span, 0.0, 1.0)
            coords = torch.stack([z / (z + self.stoichiometric), mix.select(1, 1),
                                  features.select(1, 0), features.select(1, 1), progress], dim=0)
            bins = torch.searchsorted(self.grid_edges, coords, right=True)  # [5, n], 0: below
            flat = torch.clamp((bins * self.grid_strides).sum(dim=0), 0, self.n_bins - 1)
            inside = inside & self.occupancy.index_select(0, flat)
        return inside

    def _products(self, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(complete [n], progress [n])`` of the mixture rows' products ``mix``
        (:func:`mixture_products`)."""
        return mixture_products(mix, self.has_coordinates, self.w_h2o, self.w_co2)

    # -- species arithmetic --------------------------------------------------------------------
    def box_cox_inverse(self, b: torch.Tensor) -> torch.Tensor:
        """``Y = max(λ·b + 1, 0)^(1/λ)`` (:func:`box_cox_inverse_squaring`)."""
        return box_cox_inverse_squaring(b, self.lam, self.whole_exponent)

    def conserve_elements(self, y: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
        """Project ``y_new`` ``[n, ns]`` onto the element mass fractions of ``y``: weighted least
        squares with weights ∝ Y' (trace species barely move), inert species fixed, clipped at 0
        (see ``kinetics/integrator.py``)."""
        return project_elements(y, y_new, self.element_matrix, self.element_matrix_t,
                                self.element_products, self.reactive, self.has_inert)

    # -- thermo: NASA-7, float64 ---------------------------------------------------------------
    def temperature(self, t: torch.Tensor, y: torch.Tensor, y_new: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T' [n], converged [n] bool)``: h(T', y_new) = h(t, y) by Newton's method from
        ``t`` (steps within ±500 K, T' within [100, 6000] K, converged when the last step is
        ≤ 1e-12·T', at most 50 iterations), as :meth:`kinetics.step.thermo.Nasa7.temperature`.

        Each cell's mixture polynomials (h and cp on ``[1, T, …, T⁵]`` in every interval between
        the species' T_mid: :func:`kinetics.step.tables.thermo_table`) come from one product;
        each Newton iteration evaluates the interval its T lies in (as Nasa7 picks each
        species' range by T). Up to :data:`FEW_CELLS` cells iterate on floats
        (:meth:`_temperature_few`): a tensor iteration is ~17 operations of ~1 µs whatever n."""
        n = t.shape[0]
        if n <= self.few_cells:
            return self._temperature_few(t, y, y_new)
        j = self.n_intervals
        cells = torch.arange(n, device=t.device) * j
        basis = self._power_basis(t)  # [n, 6]
        interval = cells + torch.searchsorted(self.t_bounds, t)  # row of (cell, interval)
        both = (torch.stack([y, y_new], dim=1) @ self.thermo_table).view(n, 2, j, 2, 6)
        old = both.select(1, 0).reshape(n * j, 12).index_select(0, interval)
        h = (old.narrow(1, 0, 6) * basis).sum(dim=1)
        # Rows [h − H(T), cp(T)] of Y': the enthalpy row negated, h added to its constant term.
        mixture = both.select(1, 1) * self.newton_signs
        mixture.select(2, 0).select(2, 0).add_(h.unsqueeze(1))
        mixture = mixture.reshape(n * j, 2, 6)
        sel = mixture.index_select(0, interval)
        converged = torch.zeros(n, dtype=torch.bool, device=t.device)
        for k in range(self.newton_max_iter):
            if k > 0:
                basis = self._power_basis(t)
                sel = mixture.index_select(0, cells + torch.searchsorted(self.t_bounds, t))
            g, cp = torch.bmm(sel, basis.unsqueeze(2)).view(n, 2).unbind(1)
            dt = torch.clamp(g / cp, -500.0, 500.0)
            t = torch.clamp(t + dt, 100.0, 6000.0)
            converged = torch.abs(dt) <= self.newton_rtol * t
            if bool(converged.all()):
                break
        return t, converged

    def _power_basis(self, t: torch.Tensor) -> torch.Tensor:
        """``[1, T, …, T⁵]`` ``[n, 6]`` as running products (within 1 ulp of ``pow``): a pow
        broadcast over the powers runs libm's scalar pow per element, ~6x the time."""
        n = t.shape[0]
        ones = torch.ones(n, 1, dtype=t.dtype, device=t.device)
        return torch.cumprod(torch.cat([ones, t.unsqueeze(1).expand(n, 5)], dim=1), dim=1)

    def _temperature_few(self, t: torch.Tensor, y: torch.Tensor, y_new: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`temperature` for a few cells: the mixture polynomials come to floats in one
        ``tolist`` and each cell iterates on its own until it converges (Horner's rule instead of
        the power basis: T' within ~1e-13 K of the tensor loop's), about a tenth of the time."""
        coefficients: list[list[list[float]]] = (
            torch.stack([y, y_new], dim=1) @ self.thermo_table).tolist()  # [n][Y, Y'][J·12]
        temperatures: list[float] = t.tolist()
        out: list[float] = []
        converged: list[bool] = []
        for i in range(len(temperatures)):
            old, new = coefficients[i][0], coefficients[i][1]
            t_i = temperatures[i]
            h = self._polynomial(old, 12 * self._interval(t_i), t_i)
            ok = False
            for _ in range(self.newton_max_iter):
                at = 12 * self._interval(t_i)
                g = h - self._polynomial(new, at, t_i)
                cp = self._polynomial(new, at + 6, t_i)
                if cp == 0.0 or not (math.isfinite(g) and math.isfinite(cp)):
                    t_i = float("nan")  # a non-finite Y' (as the tensor loop's NaN): not converged
                    break
                dt = min(max(g / cp, -500.0), 500.0)
                t_i = min(max(t_i + dt, 100.0), 6000.0)
                ok = abs(dt) <= self.newton_rtol * t_i
                if ok:
                    break
            out.append(t_i)
            converged.append(ok)
        # Not torch.tensor(out): TorchScript builds a tensor from a float list in float32 first.
        return (torch.stack([torch.scalar_tensor(v, dtype=torch.float64, device=t.device)
                             for v in out]),
                torch.tensor(converged, dtype=torch.bool, device=t.device))

    def _interval(self, t: float) -> int:
        """The interval of :attr:`t_bounds` that ``t`` (K) lies in (as ``searchsorted``: the
        number of bounds below ``t``)."""
        j = 0
        for bound in self.t_bounds_list:
            if bound < t:
                j += 1
        return j

    def _polynomial(self, c: list[float], at: int, t: float) -> float:
        """``c[at] + c[at+1]·t + … + c[at+5]·t⁵`` by Horner's rule."""
        return ((((c[at + 5] * t + c[at + 4]) * t + c[at + 3]) * t + c[at + 2]) * t
                + c[at + 1]) * t + c[at]


def script_step(step: CompiledStep) -> torch.jit.ScriptModule:
    """``step`` compiled by TorchScript: what the engine runs, and what :func:`export_step`
    writes."""
    with quiet_jit():
        return torch.jit.script(step)


def export_step(step: CompiledStep, meta: ModelMeta, path: str | Path) -> Path:
    """Write ``step`` as a TorchScript file (``torch::jit::load`` in C++, ``torch.jit.load`` in
    Python), atomically, with the model's metadata as the extra file ``deepkin_model.json``; its
    attributes ``species``, ``dt_s``, ``mechanism_sha256`` and ``model_name`` say what it steps."""
    path = Path(path)
    scripted = script_step(step)
    record = {"export_format": EXPORT_FORMAT, "torch": torch.__version__,
              "network_dtype": str(step.head.dtype).removeprefix("torch."),
              "hidden_dtype": str(step.head.hidden_dtype).removeprefix("torch."),
              "model": asdict(meta)}

    def write(tmp: Path) -> None:
        with quiet_jit():
            scripted.save(str(tmp), _extra_files={"deepkin_model.json": json.dumps(record)})

    atomic_write(path, write)
    return path


def export_model(model_path: str | Path, out: str | Path, precision: str = "float32",
                 device: str = "cpu") -> Path:
    """Export the model file ``model_path`` (checked on reading) to the TorchScript file ``out``
    with its networks in ``precision`` (a key of
    :data:`~kinetics.step.forward.NETWORK_PRECISIONS`: ``float32``, ``bfloat16`` or
    ``bfloat16-hidden``) on ``device``; InputError for a bad file, precision or device."""
    meta, tensors, yaml_text = read_model_file(model_path)
    if precision not in NETWORK_PRECISIONS:
        raise InputError(f"precision: must be {', '.join(NETWORK_PRECISIONS)}, got {precision!r}")
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    dtype, hidden_dtype = NETWORK_PRECISIONS[precision]
    step = CompiledStep.from_model(meta, tensors, gas, resolve_device(device), dtype, hidden_dtype)
    return export_step(step, meta, out)


__all__ = ["DOMAIN_MARGIN", "EXPORT_FORMAT", "FEW_CELLS", "FLAG_FALLBACK", "FLAG_FROZEN", "FLAG_NETWORK",
           "NOTHING_TO_BURN", "ROUTE_INDUCTION", "ROUTE_MAIN", "ROUTE_TAIL", "ROUTE_UNRESOLVED",
           "CompiledStep", "RateNetwork", "box_cox_inverse_squaring", "export_model", "export_step",
           "largest_scaled_rate", "mixture_products", "network_rates", "quiet_jit", "script_step"]
