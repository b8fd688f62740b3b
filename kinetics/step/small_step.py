"""One model step without Python control flow, compiled ahead of time by AOTInductor for small calls.

At a few cells a call of the TorchScript step (:mod:`kinetics.step.compiled_step`) costs its
~130 tensor operations of about a microsecond each plus the networks' oneDNN layer calls, whatever
the arithmetic. :class:`DenseStep` is the same model step written so that ``torch.export`` takes
it whole (no ``.item()``, no branch on a tensor's value) and AOTInductor
(``aoti_compile_and_package``) fuses its elementwise work into a few generated C++ loops:

- the main network runs on every row (but those a router sends straight to the near-equilibrium
  network, gathered as below); a regime network (near-equilibrium "tail", induction) on
  the rows routed to it, gathered by ``nonzero`` (a size known at run time only: no layer runs when
  no cell takes it; ``torch.cond`` cannot take the packed weights as a branch's operands), its rates
  put back with ``index_copy``; routing as :meth:`CompiledStep._rates` (``ROUTE_UNRESOLVED`` and
  :data:`~kinetics.step.compiled_step.NOTHING_TO_BURN` included), the thresholds an input
  (``settings``), so the Integrator's setters need no recompile;
- the networks are the model file's (``build_model`` + its weights, in the engine's dtype); an MLP
  runs as the TorchScript step runs it, on oneDNN's fused linear op with the weights packed once
  (folded into the package's constants by Inductor's freezing) and never on one row, so the
  rates are the same bits (:class:`DenseRates`);
- the domain check (``box``, ``none``, ``occupancy`` with one ``searchsorted`` over the grid);
- the projection's ne×ne system (ne ≤ 5) solved by a Cholesky factorisation unrolled over its
  columns (elementwise operations: they fuse; a pivot ≤ 0 gives NaN, and the cell is not ok);
- T' by :data:`NEWTON_ITERATIONS` Newton iterations on each cell's mixture polynomials (Horner's
  rule, the interval picked per iteration as the TorchScript step does; a cell stops moving once
  converged, as the few-cells float path does); a cell that has not converged by then is flagged
  :data:`FLAG_NEWTON_SHORT`, and the Integrator steps that cell again by the TorchScript step
  (whose Newton goes on to 50 iterations). A cell held for any other reason (outside the domain,
  below the induction network's resolution: the same test, the same bits, as the TorchScript
  step's) is flagged :data:`~kinetics.step.compiled_step.FLAG_FALLBACK` and goes straight to
  Cantera.

``DenseStep(states [n, 2+ns], settings [11]) → (states' [n, 2+ns], flag [n] int8, counts [7]
int64)`` is ``CompiledStep.forward(states, 1)`` with its counts (:data:`COUNTS`: tail, induction
and unresolved cell-steps, then the rows that fail the input check, the frozen, fallback and
Newton-short rows, so that a caller reads one small tensor instead of scanning the flags):
T' within 1e-11 K and Y' within 1e-15 of it (the unrolled Cholesky and the order of a few float64
sums round differently; ``tests/test_small_step.py``). The input check is the Integrator's fast
one (finite, T and P within bounds, Y ≥ −tol, |ΣY − 1| ≤ tol, the bounds in ``settings``), fused
into the step's loops: the Integrator runs its own row-by-row check, which names the row, only
when a row fails it.

:func:`compile_small_step` exports it with a dynamic first dimension (1 to
:data:`EXPORT_MAX_CELLS` cells) and compiles it into a ``.pt2`` package (35-75 s a model on one
core of a shared machine; a C++ compiler is needed to compile, not to load);
:func:`load_small_step` keeps packages under ``<cache>/aot/`` (``$DEEPKIN_CACHE_DIR`` or
``~/.cache/deepkin``) keyed by the model's contents (sha256), torch version, CPU capability,
network dtype, domain check and this code's sources, and returns a :class:`SmallStep` that calls
one. The :class:`~kinetics.integrator.Integrator` uses it for calls of up to
:data:`SMALL_CALL_MAX_CELLS` cells when made with ``small_calls="aot"``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cantera as ct
import torch
from torch import nn

from kinetics.model.model_file import INDUCTION, TAIL, WEIGHTS, ModelMeta, network_state
from kinetics.networks.architectures import build_model
from kinetics.step.compiled_step import (
    FEW_CELLS,
    FLAG_FALLBACK,
    FLAG_FROZEN,
    FLAG_NETWORK,
    NEWTON_RTOL,
    NOTHING_TO_BURN,
    ROUTE_INDUCTION,
    ROUTE_TAIL,
    ROUTE_UNRESOLVED,
    CompiledStep,
    RateNetwork,
    box_cox_inverse_squaring,
    mixture_products,
    network_rates,
)
from kinetics.step.forward import PACK_BATCH_ROWS, FusedMLP, fusable, precision_name
from mechanisms.atomic_io import atomic_write
from mechanisms.cache import cache_root
from mechanisms.errors import DeepkinError, InputError

# Newton iterations for T' (fixed: the compiled loop has no early exit). From the old T, Newton
# takes 3-6 iterations on the shipped models' ignition and flame cells (a step of up to 1,200 K
# at ±500 K a step included); a cell that needs more than this is flagged FLAG_NEWTON_SHORT, and
# the Integrator steps it again by the TorchScript step (up to 50 iterations).
NEWTON_ITERATIONS = 10
# DenseStep's flag of a cell stepped by a network whose T' has not converged within
# NEWTON_ITERATIONS: the Integrator steps it again by the TorchScript step (beside FLAG_NETWORK,
# FLAG_FROZEN and FLAG_FALLBACK; never returned by the Integrator)
FLAG_NEWTON_SHORT = 3
# The compiled package takes 1 to EXPORT_MAX_CELLS cells; the Integrator uses it up to
# SMALL_CALL_MAX_CELLS. On one core of the shared AMD EPYC it still beats the TorchScript step at
# 1,024 cells (1.1-1.2×), where the networks' GEMMs dominate either way: the cut-over keeps the
# package to the calls it speeds up (docs/training.md, "The compiled step").
EXPORT_MAX_CELLS = 1024
SMALL_CALL_MAX_CELLS = 128
# DenseStep's ``settings``, in order: the routing thresholds (the Integrator's properties of
# those names), then the bounds of the input check (K, K, Pa, Pa, the tolerance on Y ≥ −tol and
# on |ΣY − 1|: the Integrator's check_states' fast test).
SETTINGS = ("route_below", "induction_route_below", "induction_progress_below",
            "induction_fallback_below", "skip_main_below", "check_t_floor_k", "check_t_ceiling_k",
            "check_p_lo_pa", "check_p_hi_pa", "check_y_tolerance", "check_sum_tolerance")
ROUTING_SETTINGS = SETTINGS.index("check_t_floor_k")  # the routing thresholds come first
# DenseStep's ``counts``, in order (cells or cell-steps of the call).
COUNTS = ("tail", "induction", "unresolved", "failed_check", "frozen", "fallback", "newton_short")
# What the cache key hashes besides the model: the sources whose arithmetic the package holds.
_SOURCES = ("small_step.py", "compiled_step.py", "forward.py", "tables.py", "thermo.py")
PACKAGE_SUFFIX = ".pt2"


def step_settings(routing: list[float],
                  check: tuple[float, float, float, float, float, float] | None = None
                  ) -> torch.Tensor:
    """DenseStep's ``settings`` input ``[11]`` float64 (:data:`SETTINGS`): the five routing
    thresholds ``routing``, then the input check's bounds ``check`` (T floor and ceiling in K, P
    low and high in Pa, the Y and ΣY tolerances; None: only non-finite rows and T ≤ 0 fail)."""
    inf = float("inf")
    bounds = check if check is not None else (0.0, inf, -inf, inf, inf, inf)
    return torch.tensor([*routing, *bounds], dtype=torch.float64)


class DenseRates(nn.Module):
    """:class:`~kinetics.step.compiled_step.RateNetwork`'s arithmetic on the model file's plain
    network: features ``[n, 2+ns]`` float64 → d BCT(Y)/dt ``[n, ns]`` (1/s, float64); the scaling
    buffers are ``rates``'.

    An MLP whose activations oneDNN fuses runs as in the TorchScript step
    (:class:`~kinetics.step.forward.FusedMLP`): on oneDNN's fused linear op, its weights packed
    into oneDNN's layout (in the graph: AOTInductor's freezing folds the packing into constants
    of the package; eagerly it runs every call, slowly, with the same bits), and never on a lone
    row (oneDNN's GEMM, not its GEMV), so that its rows are the TorchScript step's bits. Other
    networks (MscaleDNN, float64) run as they are."""

    def __init__(self, rates: RateNetwork, architecture: dict, tensors: dict[str, torch.Tensor],
                 prefix: str, dtype: torch.dtype):
        super().__init__()
        network = build_model(architecture)
        network.load_state_dict(network_state(tensors, prefix + WEIGHTS))
        self.network = network.to(torch.device("cpu"), dtype).eval().requires_grad_(False)
        self.dtype = dtype
        for name in ("x_mean", "x_std", "y_mean", "y_std", "y_std_quarter"):
            self.register_buffer(name, getattr(rates, name).detach().clone())
        self.output_lambda = float(rates.output_lambda)
        self.activations: list[str] = []  # oneDNN's fused activation per layer; [] : not fused
        # the hidden layers' dtype (bfloat16-hidden: the activations cast before the second layer
        # and back before the last, as FusedMLP does)
        self.hidden_dtype = rates.hidden_dtype
        self.mixed = False
        if (dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
                and fusable(self.network)):
            fused = FusedMLP(self.network, self.hidden_dtype)
            self.mixed = fused.mixed
            self.activations = list(fused.activations)
            for i, (weight, bias) in enumerate(zip(fused.weights, fused.biases)):
                self.register_buffer(f"weight{i}", weight.detach())
                self.register_buffer(f"bias{i}", bias.detach())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rates ``[n, ns]`` of every row (a fused network takes the first row once more)."""
        z = self._inputs(features)
        if not self.activations:
            return self._outputs(self.network(z))
        n = z.shape[0]
        return self._outputs(self._fused(torch.cat([z, z.narrow(0, 0, 1)])).narrow(0, 0, n))

    def rows(self, features: torch.Tensor, rate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``rate`` ``[n, ns]`` with this network's rates in the rows of ``mask`` ``[n]``, the
        network evaluated on those rows only (none: no layer runs; a fused network takes the
        first of them once more, so never one row)."""
        index = torch.nonzero(mask).squeeze(1)
        z = self._inputs(features.index_select(0, index))
        if self.activations:
            # the first row once more when there is one (none: no rows, no work)
            out = self._fused(torch.cat([z, z[:1]])).narrow(0, 0, index.shape[0])
        else:
            out = self.network(z)
        return rate.index_copy(0, index, self._outputs(out))

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.x_mean) / self.x_std).to(self.dtype)

    def _fused(self, h: torch.Tensor) -> torch.Tensor:
        last = len(self.activations) - 1
        for i, activation in enumerate(self.activations):
            if self.mixed and i == 1:
                h = h.to(self.hidden_dtype)
            elif self.mixed and i == last:
                h = h.to(self.dtype)
            weight = torch.ops.mkldnn._reorder_linear_weight(getattr(self, f"weight{i}"),
                                                             PACK_BATCH_ROWS)
            h = torch.ops.mkldnn._linear_pointwise(h, weight, getattr(self, f"bias{i}"),
                                                   activation, [], "none")
        return h

    def _outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Network outputs → rates (float64): :func:`network_rates`."""
        return network_rates(out, self.output_lambda, self.y_std, self.y_std_quarter, self.y_mean)


class DenseStep(nn.Module):
    """One model step of a model file's contents, dense (see the module's docstring).

    ``domain_check`` (``box``, ``none``, ``occupancy``) and ``use_grid`` default to the model's;
    they are fixed in the module (a compiled package is keyed by them)."""

    def __init__(self, meta: ModelMeta, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                 dtype: torch.dtype = torch.float32, domain_check: str | None = None,
                 use_grid: bool | None = None, hidden_dtype: torch.dtype | None = None):
        super().__init__()
        step = CompiledStep.from_model(meta, tensors, gas, "cpu", dtype, hidden_dtype)
        self.dtype = dtype
        for name in ("n_species", "dt_s", "lam", "whole_exponent", "one_atm_pa",
                     "frozen_temperature_k", "has_inert", "n_elements", "has_coordinates",
                     "beta_oxidizer", "beta_span", "stoichiometric", "w_h2o", "w_co2", "n_bins",
                     "n_intervals"):
            setattr(self, name, getattr(step, name))
        self.domain_check = str(step.domain_check if domain_check is None else domain_check)
        if self.domain_check not in ("box", "none", "occupancy"):
            raise InputError(f"domain_check: must be occupancy, box or none, got {self.domain_check!r}")
        self.use_grid = bool(step.use_grid if use_grid is None else use_grid)
        if self.use_grid and int(step.occupancy.numel()) <= 1:
            raise InputError("use_grid: the model has no occupancy grid")
        for name in ("t_bounds", "thermo_table", "tp_lo", "tp_hi", "feature_lo", "feature_hi",
                     "mixture_rows", "grid_edges", "grid_strides", "occupancy", "inert", "reactive",
                     "element_matrix", "element_matrix_t"):
            self.register_buffer(name, getattr(step, name).detach().clone())
        # The projection's matrix, lower triangle only: column (i, j), i ≥ j, is a_i·a_j per
        # species, in the order :meth:`_conserve_elements` reads them.
        ne = self.n_elements
        lower = [i * ne + j for i in range(ne) for j in range(i + 1)]
        self.register_buffer("element_products_lower", step.element_products[:, lower].contiguous())
        self.head = DenseRates(step.head, meta.architecture, tensors, "", dtype)
        self.tail = (DenseRates(step.tail, meta.tail["architecture"], tensors, TAIL, dtype)
                     if step.tail is not None else None)
        self.induction = (DenseRates(step.induction, meta.induction["architecture"], tensors,
                                     INDUCTION, dtype) if step.induction is not None else None)
        # the router: the main network in bfloat16 (CompiledStep's, when it has one)
        self.router = (DenseRates(step.router, meta.architecture, tensors, "", torch.bfloat16)
                       if step.router is not None and step.tail is not None else None)
        self.newton_iterations = NEWTON_ITERATIONS

    def settings(self, route_below: float, induction_route_below: float,
                 induction_progress_below: float, induction_fallback_below: float,
                 skip_main_below: float = 0.0,
                 check: tuple[float, float, float, float, float, float] | None = None
                 ) -> torch.Tensor:
        """The ``settings`` input ``[11]`` float64 (:data:`SETTINGS`): the routing thresholds, as
        the Integrator's properties of those names (``skip_main_below`` 0: the router sends no
        cell), and ``check``, the input check's bounds (:func:`step_settings`)."""
        return step_settings([route_below, induction_route_below, induction_progress_below,
                              induction_fallback_below, skip_main_below], check)

    def forward(self, states: torch.Tensor, settings: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(states' [n, 2+ns] float64, flag [n] int8, counts [7] int64)`` after one model step
        of ``states`` ``[n, 2+ns]`` (T in K, P in Pa, Y; float64, contiguous) with the routing
        thresholds and check bounds ``settings`` ``[11]`` (:data:`SETTINGS`): Y clipped at 0 and
        rescaled to ΣY = 1 first; frozen cells (:data:`FLAG_FROZEN`), cells outside the domain
        or unresolved (:data:`FLAG_FALLBACK`) and cells whose T' has not converged within
        :data:`NEWTON_ITERATIONS` (:data:`FLAG_NEWTON_SHORT`) come back as given. ``counts``
        (:data:`COUNTS`): cell-steps from the near-equilibrium network, from the induction
        network, and below the induction network's resolution; rows that fail the input check
        (their step is still computed: a caller refuses the call); rows flagged frozen, fallback
        and Newton-short."""
        t = states.select(1, 0).contiguous()
        p = states.select(1, 1)
        given_y = states.narrow(1, 2, self.n_species)
        given_total = given_y.sum(dim=1)
        passes = (torch.isfinite(given_total + t + p) & (t > 0.0) & (t >= settings[5])
                  & (t <= settings[6]) & (p >= settings[7]) & (p <= settings[8])
                  & (given_y.amin(dim=1) >= -settings[9])
                  & (torch.abs(given_total - 1.0) <= settings[10]))
        frozen = t < self.frozen_temperature_k
        y = torch.clamp(given_y, min=0.0)
        y = y / y.sum(dim=1, keepdim=True)
        bct = (torch.clamp(y, min=0.0) ** self.lam - 1.0) / self.lam  # box_cox
        features = torch.cat([t.unsqueeze(1), torch.log(p / self.one_atm_pa).unsqueeze(1), bct],
                             dim=1)
        mix = _product(y, self.mixture_rows) if self.has_coordinates else features
        complete, progress = mixture_products(mix, self.has_coordinates, self.w_h2o, self.w_co2)
        inside = self._inside(features, mix, progress)
        stepped = inside & ~frozen
        rate, route = self._rates(features, complete, progress, settings, stepped)
        y_new = box_cox_inverse_squaring(bct + self.dt_s * rate, self.lam, self.whole_exponent)
        if self.has_inert:
            y_new = torch.where(self.inert, y, y_new)
        y_new = self._conserve_elements(y, y_new)
        if self.has_inert:
            inert_total = (y * self.inert).sum(dim=1, keepdim=True)
            active_total = (y_new * self.reactive).sum(dim=1, keepdim=True)
            scale = torch.rsub(inert_total, 1.0) / torch.clamp(active_total, min=1e-300)
            y_new = torch.where(self.inert, y, y_new * scale)
        else:
            y_new = y_new * torch.reciprocal(torch.clamp(y_new.sum(dim=1, keepdim=True), min=1e-300))
        t_new, converged = self._temperature(t, y, y_new, stepped)
        resolved = stepped & (route != ROUTE_UNRESOLVED)
        ok = resolved & converged
        out = torch.where(ok.unsqueeze(1),
                          torch.cat([t_new.unsqueeze(1), p.unsqueeze(1), y_new], dim=1), states)
        held = torch.where(resolved, FLAG_NEWTON_SHORT, FLAG_FALLBACK)
        flag = torch.where(frozen, FLAG_FROZEN, torch.where(ok, FLAG_NETWORK, held))
        counts = torch.stack([(ok & (route == ROUTE_TAIL)).sum(),
                              (ok & (route == ROUTE_INDUCTION)).sum(),
                              (stepped & (route == ROUTE_UNRESOLVED)).sum(),
                              (~passes).sum(), frozen.sum(), (flag == FLAG_FALLBACK).sum(),
                              (flag == FLAG_NEWTON_SHORT).sum()]).to(torch.int64)
        return out, flag.to(torch.int8), counts

    # -- the parts, as CompiledStep's ---------------------------------------------------------
    def _rates(self, features: torch.Tensor, complete: torch.Tensor, progress: torch.Tensor,
               settings: torch.Tensor, stepped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rates [n, ns] 1/s, route [n] int64)``: :meth:`CompiledStep._rates`, the main
        network on every row (but those the router sends to the near-equilibrium network), a
        regime network on the ``stepped`` cells routed to it."""
        tail, induction, router = self.tail, self.induction, self.router
        if router is not None and tail is not None:
            largest = (router(features) / self.head.y_std).abs()
            if self.has_inert:
                largest = torch.where(self.inert, 0.0, largest)
            skip = (largest.amax(dim=1) < settings[4]) & stepped  # setting 0: none skips
            if induction is not None:
                skip = skip & (progress >= settings[2])
            rate = self.head.rows(features, torch.zeros_like(features.narrow(1, 2, self.n_species)),
                                  ~skip)
        else:
            rate = self.head(features)
        route = torch.zeros_like(progress, dtype=torch.int64)
        if tail is None and induction is None:
            return rate, route
        largest = (rate / self.head.y_std).abs()
        if self.has_inert:
            largest = torch.where(self.inert, 0.0, largest)
        largest = largest.amax(dim=1)
        if tail is not None:
            route = torch.where(largest < settings[0], ROUTE_TAIL, route)
        if induction is not None:
            fresh = progress < settings[2]
            route = torch.where(fresh & (largest < settings[1]), ROUTE_INDUCTION, route)
        if tail is not None:
            rate = tail.rows(features, rate, (route == ROUTE_TAIL) & stepped)
        if induction is not None:
            chosen = (route == ROUTE_INDUCTION) & stepped
            rate = induction.rows(features, rate, chosen)
            own = (rate / induction.y_std).abs()  # the induction network's, in chosen rows
            if self.has_inert:
                own = torch.where(self.inert, 0.0, own)
            own = own.amax(dim=1)
            unresolved = (chosen & (own < settings[3]) & (complete > NOTHING_TO_BURN)
                          & (settings[3] > 0.0))
            route = torch.where(unresolved, ROUTE_UNRESOLVED, route)
        return rate, route

    def _inside(self, features: torch.Tensor, mix: torch.Tensor, progress: torch.Tensor
                ) -> torch.Tensor:
        """:meth:`CompiledStep._inside` with this module's domain check."""
        if self.domain_check == "none":
            tp = features.narrow(1, 0, 2)
            return ((tp >= self.tp_lo) & (tp <= self.tp_hi)).all(dim=1)
        inside = ((features >= self.feature_lo) & (features <= self.feature_hi)).all(dim=1)
        if self.use_grid:
            z = torch.clamp((mix.select(1, 0) - self.beta_oxidizer) / self.beta_span, 0.0, 1.0)
            coords = torch.stack([z / (z + self.stoichiometric), mix.select(1, 1),
                                  features.select(1, 0), features.select(1, 1), progress], dim=0)
            # searchsorted(right=True) as a count of the edges ≤ each value (it fuses; the
            # edges are padded with +inf): [5, n], 0 below the first edge
            bins = (self.grid_edges.unsqueeze(2) <= coords.unsqueeze(1)).sum(dim=1)
            flat = torch.clamp((bins * self.grid_strides).sum(dim=0), 0, self.n_bins - 1)
            inside = inside & self.occupancy.index_select(0, flat)
        return inside

    def _conserve_elements(self, y: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
        """:meth:`CompiledStep.conserve_elements` with the ne×ne Cholesky solve unrolled over
        columns ``[n]`` (ne ≤ ~5: a few dozen elementwise operations, fused)."""
        ne = self.n_elements
        w = y_new + 1e-30
        if self.has_inert:
            w = w * self.reactive
        resid = _product(y_new - y, self.element_matrix_t)  # [n, ne]
        packed = _product(w, self.element_products_lower)  # [n, ne(ne+1)/2]
        columns = packed.unbind(1)
        m = [[columns[i * (i + 1) // 2 + j] for j in range(i + 1)] for i in range(ne)]
        diagonal = torch.stack([m[i][i] for i in range(ne)], dim=1)
        ridge = diagonal.amax(dim=1) * 1e-9 + 1e-300
        factor: list[list[torch.Tensor]] = []
        for i in range(ne):
            row: list[torch.Tensor] = []
            for j in range(i + 1):
                s = m[i][j] + ridge if i == j else m[i][j]
                other = row if i == j else factor[j]
                for k in range(j):
                    s = s - row[k] * other[k]
                if i == j:
                    # A pivot ≤ 0: the factorisation fails (NaN, as cholesky_ex's info ≠ 0).
                    row.append(torch.sqrt(torch.where(s > 0.0, s, float("nan"))))
                else:
                    row.append(s / factor[j][j])
            factor.append(row)
        r = resid.unbind(1)
        z: list[torch.Tensor] = []
        for i in range(ne):  # L z = r
            s = r[i]
            for k in range(i):
                s = s - factor[i][k] * z[k]
            z.append(s / factor[i][i])
        x: list[torch.Tensor] = [z[0]] * ne
        for i in range(ne - 1, -1, -1):  # Lᵀ x = z
            s = z[i]
            for k in range(i + 1, ne):
                s = s - factor[k][i] * x[k]
            x[i] = s / factor[i][i]
        lam = torch.stack(x, dim=1)
        return torch.clamp(y_new - w * _product(lam, self.element_matrix), min=0.0)

    def _temperature(self, t: torch.Tensor, y: torch.Tensor, y_new: torch.Tensor,
                     stepped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T' [n], converged [n] bool)``: h(T', y_new) = h(t, y) by :data:`NEWTON_ITERATIONS`
        Newton iterations from ``t`` (steps within ±500 K, T' within [100, 6000] K, Horner's
        rule on the mixture polynomial of the interval T lies in), as
        :meth:`CompiledStep.temperature` iterates the cells it steps (``stepped``): up to
        :data:`~kinetics.step.compiled_step.FEW_CELLS` of them each stop at their first step
        ≤ 1e-12·T' (converged if they took one, meeting no non-finite or zero heat capacity on
        the way; its float path); more all iterate until every one has taken such a step in the
        same iteration (its tensor path). The two differ where Newton hops across a ``T_mid``
        of the NASA-7 fits (GRI-3.0's h jumps there: up to ~1e-4 K in T'), so both run."""
        n = t.shape[0]
        j = self.n_intervals
        both = (torch.cat([y, y_new], dim=0) @ self.thermo_table).view(2, n, j, 12)
        old, new = both[0], both[1]
        h = _horner(_pick(old, _interval(self.t_bounds, t)), 0, t)
        few = stepped.sum() <= FEW_CELLS
        t_few, t_all = t, t
        done = torch.zeros_like(t, dtype=torch.bool)  # float path: this cell has converged
        bad = torch.zeros_like(t, dtype=torch.bool)  # float path: met a non-finite or zero cp
        converged = torch.zeros_like(t, dtype=torch.bool)  # tensor path: the last step's test
        stopped = torch.zeros((), dtype=torch.bool, device=t.device)  # tensor path: all were
        for _ in range(self.newton_iterations):
            t_next, step_ok, finite = _newton_step(new, self.t_bounds, h, t_few)
            bad = bad | (~done & ~finite)
            t_few = torch.where(done, t_few, t_next)
            done = done | step_ok
            t_next, step_ok, _ = _newton_step(new, self.t_bounds, h, t_all)
            t_all = torch.where(stopped, t_all, t_next)
            converged = torch.where(stopped, converged, step_ok)
            stopped = stopped | (step_ok | ~stepped).all()
        return (torch.where(few, t_few, t_all),
                torch.where(few, done & ~bad, converged))


def _newton_step(c: torch.Tensor, t_bounds: torch.Tensor, h: torch.Tensor, t: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Newton iteration of h(T) = ``h`` on the mixture polynomials ``c`` ``[n, J, 12]`` from
    ``t`` ``[n]`` (K): ``(T', |ΔT| ≤ 1e-12·T', h and cp finite with cp ≠ 0)``."""
    sel = _pick(c, _interval(t_bounds, t))
    g = h - _horner(sel, 0, t)
    cp = _horner(sel, 6, t)
    dt = torch.clamp(g / cp, -500.0, 500.0)
    t_next = torch.clamp(t + dt, 100.0, 6000.0)
    return (t_next, torch.abs(dt) <= NEWTON_RTOL * t_next,
            torch.isfinite(g) & torch.isfinite(cp) & (cp != 0.0))


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` ``[n, m]`` for ``a`` ``[n, k]`` and a small ``b`` ``[k, m]`` (k ≤ ns, m ≤ 15), as
    a product and a sum that fuse with their neighbours (a few cells: ~4 µs less a product than
    a GEMM call)."""
    return (a.unsqueeze(2) * b).sum(dim=1)


def _interval(t_bounds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The interval of ``t_bounds`` ``[J-1]`` each ``t`` ``[n]`` lies in: the number of bounds
    below it (``searchsorted``'s answer, as a comparison that fuses into the Newton loop)."""
    return (t.unsqueeze(1) > t_bounds).sum(dim=1)


def _pick(c: torch.Tensor, interval: torch.Tensor) -> torch.Tensor:
    """Row ``interval[i]`` of each cell's ``c[i]`` ``[n, J, 12]`` → ``[n, 12]``."""
    index = interval.view(-1, 1, 1).expand(-1, 1, c.shape[2])
    return c.gather(1, index).squeeze(1)


def _horner(c: torch.Tensor, at: int, t: torch.Tensor) -> torch.Tensor:
    """``c[:, at] + c[:, at+1]·t + … + c[:, at+5]·t⁵`` ``[n]`` by Horner's rule (as
    :meth:`CompiledStep._polynomial`)."""
    value = c.select(1, at + 5)
    for k in range(at + 4, at - 1, -1):
        value = value * t + c.select(1, k)
    return value


# -- compiling and loading -------------------------------------------------------------------------
@dataclass(frozen=True)
class SmallStepKey:
    """What a compiled package depends on; :meth:`digest` names its file."""

    model_sha256: str  # of the model's contents (model_sha256)
    torch_version: str
    cpu_capability: str  # the vector ISA the generated code targets (AVX512, AVX2, …)
    machine: str
    network_dtype: str
    domain_check: str
    use_grid: bool
    max_cells: int
    sources_sha256: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


def _sources_sha256() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def model_sha256(meta: ModelMeta, tensors: dict[str, torch.Tensor], yaml_text: str) -> str:
    """The sha256 of a model's contents (``read_model_file``'s three parts: its metadata, every
    tensor's name and bytes, its mechanism), what a compiled package is keyed by: the model file's
    own bytes would miss a model edited in memory."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(meta), sort_keys=True, default=str).encode())
    digest.update(yaml_text.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def small_step_key(model_digest: str, dtype: torch.dtype, domain_check: str, use_grid: bool,
                   max_cells: int = EXPORT_MAX_CELLS, hidden_dtype: torch.dtype | None = None
                   ) -> SmallStepKey:
    """The cache key of a package for this machine and torch (networks in ``dtype``, their
    hidden layers in ``hidden_dtype``)."""
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = "unknown"
    return SmallStepKey(model_digest, torch.__version__, capability, platform.machine(),
                        precision_name(dtype, hidden_dtype), str(domain_check), bool(use_grid),
                        int(max_cells), _sources_sha256())


def small_step_cache_dir() -> Path:
    """``<cache>/aot``: where compiled packages are kept (:func:`mechanisms.cache.cache_root`)."""
    return cache_root() / "aot"


def _check_compiler() -> None:
    """DeepkinError when Inductor finds no C++ compiler."""
    from torch._inductor import config

    names = [c for c in config.cpp.cxx if c]
    if not any(shutil.which(c) for c in names):
        raise DeepkinError(f"aot: no C++ compiler found (looked for {', '.join(names)}; set CXX); "
                           f"use small_calls='torchscript'")


def compile_small_step(step: DenseStep, package: str | Path, max_cells: int = EXPORT_MAX_CELLS
                       ) -> Path:
    """Export ``step`` for 1 to ``max_cells`` cells and compile it with AOTInductor into the
    ``.pt2`` file ``package`` (written atomically); DeepkinError in one line when there is no
    C++ compiler or the compilation fails."""
    _check_compiler()
    _register_reorder_fake()
    package = Path(package)
    example = (_example_states(step, min(4, max_cells)),
               torch.zeros(len(SETTINGS), dtype=torch.float64))
    cells = torch.export.Dim("cells", min=1, max=max_cells)
    try:
        with torch.no_grad():
            exported = torch.export.export(step, example, dynamic_shapes=({0: cells}, None),
                                           strict=False)

        def write(tmp: Path) -> None:
            with torch.no_grad():  # (Inductor freezes the constants only without grad)
                torch._inductor.aoti_compile_and_package(
                    exported, package_path=str(tmp),
                    # Small calls: one thread's loops (no OpenMP region to start per kernel);
                    # freezing: the weights become constants, packed once for oneDNN; memory
                    # planning: the ~70 intermediate buffers of a call come from one pool (one
                    # allocation instead of ~70: 4-6 % of a call at 1-128 cells, the same bits).
                    inductor_configs={"cpp.threads": 1, "freezing": True,
                                      "memory_planning": True})

        atomic_write(package, write, suffix=PACKAGE_SUFFIX)
    except DeepkinError:
        raise
    except Exception as exc:  # noqa: BLE001 - export and Inductor raise many types
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise DeepkinError(f"aot: compiling the small-call step failed ({type(exc).__name__}: "
                           f"{first[:300]}); use small_calls='torchscript'") from exc
    return package


_REORDER_FAKE: list[torch.library.Library] = []  # the registration, kept alive


def _register_reorder_fake() -> None:
    """Let ``torch.export`` trace ``mkldnn._reorder_linear_weight`` (torch has no fake
    implementation of it: its output is an opaque oneDNN tensor, here of the weight's shape;
    AOTInductor's freezing computes the real one at compile time)."""
    if _REORDER_FAKE:
        return
    library = torch.library.Library("mkldnn", "FRAGMENT")
    try:
        torch.library.register_fake("mkldnn::_reorder_linear_weight",
                                    lambda weight, batch_size=None: torch.empty_like(weight),
                                    lib=library)
    except RuntimeError:  # a torch that has one already
        pass
    _REORDER_FAKE.append(library)


def _example_states(step: DenseStep, n: int) -> torch.Tensor:
    """``n`` rows of a valid shape (values do not matter to the export)."""
    x = torch.zeros(n, 2 + step.n_species, dtype=torch.float64)
    x[:, 0] = 1500.0
    x[:, 1] = step.one_atm_pa
    x[:, 2:] = 1.0 / step.n_species
    return x


class SmallStep:
    """A compiled package of :class:`DenseStep`, called as it: ``(states, settings) → (states',
    flag, counts)``; ``states`` ``[n, 2+ns]`` float64 contiguous on CPU, 1 ≤ n ≤ ``max_cells``.
    ``key`` says what it was compiled for; ``compile_s``: the seconds compiling took (0 when it
    came from the cache)."""

    def __init__(self, package: Path, key: SmallStepKey, compile_s: float = 0.0):
        self.package = package
        self.key = key
        self.compile_s = compile_s
        self.max_cells = key.max_cells
        self.domain = (key.domain_check, key.use_grid)
        try:
            compiled = torch._inductor.aoti_load_package(str(package))
        except Exception as exc:  # noqa: BLE001 - the loader raises RuntimeError and others
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            raise DeepkinError(f"aot: cannot load {package} ({type(exc).__name__}: {first[:200]}); "
                               f"delete it to compile it again") from exc
        # The loader itself: the package's Python wrapper parses its call spec on every call.
        self._run = compiled.loader.run

    def __call__(self, states: torch.Tensor, settings: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, flag, counts = self._run([states, settings])
        return out, flag, counts


def load_small_step(meta: ModelMeta, tensors: dict[str, torch.Tensor], gas: ct.Solution,
                    dtype: torch.dtype, domain_check: str, use_grid: bool,
                    model_digest: str, cache_dir: str | Path | None = None,
                    max_cells: int = EXPORT_MAX_CELLS, hidden_dtype: torch.dtype | None = None,
                    compile_missing: bool = True) -> SmallStep | None:
    """The compiled small-call step of a model (``model_digest``: :func:`model_sha256`), networks
    in ``dtype`` (hidden layers in ``hidden_dtype``, None: ``dtype``), with the domain check
    ``domain_check`` (grid: ``use_grid``), for 1 to ``max_cells`` cells: from the cache
    (``cache_dir``, default :func:`small_step_cache_dir`) or compiled into it (35-75 s on one
    core; ``compile_missing=False``: None instead); DeepkinError in one line when it cannot be
    compiled or loaded."""
    key = small_step_key(model_digest, dtype, domain_check, use_grid, max_cells, hidden_dtype)
    folder = Path(cache_dir) if cache_dir is not None else small_step_cache_dir()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", meta.name)[:64] or "model"
    package = folder / f"{stem}-{key.digest()}{PACKAGE_SUFFIX}"
    compile_s = 0.0
    if not package.exists():
        if not compile_missing:
            return None
        started = time.perf_counter()
        step = DenseStep(meta, tensors, gas, dtype, domain_check, use_grid, hidden_dtype).eval()
        compile_small_step(step, package, max_cells)
        compile_s = time.perf_counter() - started
    return SmallStep(package, key, compile_s)


__all__ = ["COUNTS", "EXPORT_MAX_CELLS", "NEWTON_ITERATIONS", "ROUTING_SETTINGS", "SETTINGS",
           "SMALL_CALL_MAX_CELLS", "DenseRates", "DenseStep", "SmallStep", "SmallStepKey",
           "compile_small_step", "load_small_step", "model_sha256", "small_step_cache_dir", "small_step_key",
           "step_settings"]
