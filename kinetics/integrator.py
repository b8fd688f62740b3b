"""The inference engine: advance batches of cells ``[n, 2+ns]`` by one chemistry step.

``Integrator.load(path, device=...)`` reads a model file; ``step(states, dt)`` returns the
advanced states in the caller's array type (numpy or torch) and dtype; ``advance(states,
n_substeps)`` does the same for a number of model steps (``substeps(dt)`` is the one conversion
of a dt into that number) and counts what happened to the cells. Per model step:

1. cells below the frozen temperature pass through unchanged;
2. cells outside the training domain take a Cantera step instead (CFD tolerances, a fresh reactor
   per cell) and are counted (``StepResult.n_fallback``): outside T, P or a species' Box-Cox range,
   and (format 4) in a bin of the occupancy grid over mixture fraction, dilution, T, P and progress
   that held no training rows (``kinetics/domain.py``);
3. the network (float32, or bfloat16 for a model validated in it on a CPU that multiplies it
   natively: :func:`kinetics.inference.network_dtype`; on CPU in cache-sized blocks on oneDNN's
   GEMM, see :mod:`kinetics.inference`) predicts d BCT(Y)/dt (slow cells take the rates of a regime network
   when the model has one: near equilibrium, or induction); Y' = BCT⁻¹(BCT(Y) + dt·rate),
   projected onto the element mass fractions of Y (atoms are conserved), clipped at 0 and
   rescaled so that ΣY' = 1 with inert species untouched;
4. T' follows from conservation of enthalpy at constant pressure (NASA-7, Newton, float64).

A ``dt`` that is a whole multiple of the model's dt runs that many model steps. ``advance`` takes an
optional ``stop`` callable, asked before every model step and every Cantera fallback cell: when it
returns True the call ends with :class:`StepInterrupted` (how a caller bounds the time of one call).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.domain import DomainCoordinates, OccupancyGrid
from kinetics.inference import BlockedForward, network_dtype
from kinetics.model_checks import OCCUPANCY_TENSOR
from kinetics.model_file import ModelMeta, network_state, read_model_file
from kinetics.models import build_model
from kinetics.thermo import Nasa7
from kinetics.transforms import box_cox, box_cox_inverse, decode_output, log_pressure
from mechanisms.errors import DeepkinError, InputError
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import FALLBACK_TOLERANCES, ReactorStep
from mechanisms.state import (
    PRESSURE_RANGE_PA,
    element_mass_matrix,
    join_states,
    mass_fractions,
    pressure,
    state_width,
    temperature,
)

Y_TOLERANCE = 1e-6  # negative Y down to −tol is clipped silently; below it is an error
SUM_TOLERANCE = 1e-4  # |ΣY − 1| up to this is renormalised silently
DOMAIN_MARGIN = 0.02  # fraction of each training range a cell may lie outside it
# Which network gave a cell's rates (Integrator.rates); ROUTE_UNRESOLVED: an induction cell
# whose rates lie below that network's resolution (``induction.fallback_below``), for Cantera.
ROUTE_MAIN, ROUTE_TAIL, ROUTE_INDUCTION, ROUTE_UNRESOLVED = 0, 1, 2, 3
# A cell whose complete combustion would form less product than this (mass fraction) has nothing
# to burn: it is never handed to Cantera as unresolved (pure air or fuel, however hot).
NOTHING_TO_BURN = 1e-6


class StepInterrupted(DeepkinError):
    """``advance`` stopped because its ``stop`` callable said so; ``substeps_done`` model steps
    of ``n_substeps`` had been taken (the states are not returned)."""

    def __init__(self, substeps_done: int, n_substeps: int):
        super().__init__(f"step stopped after {substeps_done} of {n_substeps} model steps")
        self.substeps_done = substeps_done
        self.n_substeps = n_substeps


@dataclass
class StepResult:
    """Advanced states plus what happened to the cells."""

    states: np.ndarray | torch.Tensor
    n_cells: int
    n_frozen: int  # below the frozen temperature, passed through unchanged
    n_fallback: int  # outside the training domain (in at least one substep), stepped by Cantera
    n_substeps: int
    frozen: np.ndarray | None = None  # [n] bool per cell (numpy, on the host)
    fallback: np.ndarray | None = None  # [n] bool per cell
    n_tail_steps: int = 0  # cell-steps whose rates came from the near-equilibrium network
    n_induction_steps: int = 0  # cell-steps whose rates came from the induction network
    # cell-steps below the induction network's resolution, stepped by Cantera (counted in
    # n_fallback's cells too)
    n_unresolved_steps: int = 0


def _at_step(stop: Callable[[], bool] | None, done: int, n_substeps: int
             ) -> Callable[[], None] | None:
    """What the fallback loop of model step ``done`` calls: raises StepInterrupted once ``stop``
    says so (None without a ``stop``)."""
    if stop is None:
        return None

    def interrupt() -> None:
        if stop():
            raise StepInterrupted(done, n_substeps)

    return interrupt


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"device: unknown device '{device}' (use cpu, cuda, cuda:N or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: '{device}' requested but no CUDA GPU is available")
    return dev


CHECK_BLOCK_ROWS = 4096  # rows per block of the host-side input check (~2 MB at 53 species)


def _host_states_look_valid(a: np.ndarray, t_floor_k: float, t_ceiling_k: float) -> bool:
    """True when every row of ``a`` ``[n, 2+ns]`` (float64, host) is finite with
    ``t_floor_k`` ≤ T ≤ ``t_ceiling_k`` (K; T > 0 whatever the floor), P within
    :data:`PRESSURE_RANGE_PA`, Y ≥ −tol and |ΣY − 1| ≤ tol.

    The row sums and the minimum are taken block by block, so the later passes over a block read
    it from cache: about one pass over memory instead of three. This check runs on every call,
    frozen cells included, and bounds how fast the service can pass cells through.
    """
    p_lo, p_hi = PRESSURE_RANGE_PA
    for start in range(0, len(a), CHECK_BLOCK_ROWS):
        b = a[start:start + CHECK_BLOCK_ROWS]
        row_sum = np.einsum("ij->i", b)  # NaN or inf anywhere makes the row sum non-finite
        t, p = temperature(b), pressure(b)
        t_min = t.min()
        if not (np.isfinite(row_sum).all() and b.min() >= -Y_TOLERANCE
                and t_min > 0 and t_min >= t_floor_k and t.max() <= t_ceiling_k
                and p.min() >= p_lo and p.max() <= p_hi
                and np.abs(row_sum - t - p - 1.0).max() <= SUM_TOLERANCE):
            return False
    return True


class RateHead:
    """One network with its feature and target scaling: features ``[n, 2+ns]`` → rates."""

    def __init__(self, architecture: dict, output_transform: dict | None,
                 tensors: dict[str, torch.Tensor], prefix: str, device: torch.device,
                 dtype: torch.dtype):
        self.network = build_model(architecture)
        self.network.load_state_dict(network_state(tensors, prefix + "net."))
        self.network.to(device, dtype).eval()
        self.forward = BlockedForward(self.network, device, dtype)
        self.dtype = dtype
        self.output_transform = output_transform
        f64 = dict(device=device, dtype=torch.float64)
        self.x_mean = tensors[prefix + "norm.x_mean"].to(**f64)
        self.x_std = tensors[prefix + "norm.x_std"].to(**f64)
        self.y_mean = tensors[prefix + "norm.y_mean"].to(**f64)
        self.y_std = tensors[prefix + "norm.y_std"].to(**f64)

    def rates(self, features: torch.Tensor) -> torch.Tensor:
        """d BCT(Y)/dt ``[n, ns]`` (1/s, float64) for features ``[T, ln(P/1 atm), BCT(Y)]``."""
        z = ((features - self.x_mean) / self.x_std).to(self.dtype)
        out = decode_output(self.forward(z).to(torch.float64), self.output_transform)
        return out * self.y_std + self.y_mean


class Integrator:
    """A trained surrogate ready to step cells."""

    def __init__(self, meta: ModelMeta, tensors: dict[str, torch.Tensor], mechanism_yaml: str,
                 device: str | torch.device | None = "auto",
                 dtype: torch.dtype | str | None = None, path: str | None = None):
        self.meta = meta
        self.path = path
        self.device = resolve_device(device)
        # The networks' dtype: given, or a precision name (None = "auto": the model's validated
        # inference precision where the device runs it natively, else float32).
        if not isinstance(dtype, torch.dtype):
            dtype = network_dtype(dtype or "auto", meta.inference_precision, self.device)
        self.dtype = dtype
        self.mechanism_yaml = mechanism_yaml
        self.head = RateHead(meta.architecture, meta.output_transform, tensors, "", self.device,
                             dtype)
        # The near-equilibrium network and its routing threshold (format 2 model files).
        self.tail: RateHead | None = None
        self.route_below = 0.0
        if meta.tail:
            self.tail = RateHead(meta.tail["architecture"], meta.tail.get("output_transform"),
                                 tensors, "tail.", self.device, dtype)
            self.route_below = float(meta.tail["route_below"])
        # The induction network (format 4): slow cells that have barely burnt.
        self.induction: RateHead | None = None
        self.induction_route_below = self.induction_progress_below = 0.0
        self.induction_fallback_below = 0.0
        if meta.induction:
            self.induction = RateHead(meta.induction["architecture"],
                                      meta.induction.get("output_transform"), tensors,
                                      "induction.", self.device, dtype)
            self.induction_route_below = float(meta.induction["route_below"])
            self.induction_progress_below = float(meta.induction["progress_below"])
            self.induction_fallback_below = float(meta.induction.get("fallback_below", 0.0))
        f64 = dict(device=self.device, dtype=torch.float64)
        lo, hi = tensors["domain.bct_min"].to(**f64), tensors["domain.bct_max"].to(**f64)
        span = torch.clamp(hi - lo, min=1e-6)
        self.bct_lo, self.bct_hi = lo - DOMAIN_MARGIN * span, hi + DOMAIN_MARGIN * span
        t_lo, t_hi = meta.temperature_k
        self.t_lo = t_lo - DOMAIN_MARGIN * (t_hi - t_lo)
        self.t_hi = t_hi + DOMAIN_MARGIN * (t_hi - t_lo)
        p_lo, p_hi = meta.pressure_pa
        self.p_lo, self.p_hi = p_lo * (1 - DOMAIN_MARGIN), p_hi * (1 + DOMAIN_MARGIN)
        self.gas = solution_from_yaml(mechanism_yaml, meta.phase, meta.mechanism_sha256)
        self._setup_domain(meta, tensors)
        self.thermo = Nasa7(self.gas, self.device)
        # The mechanism's thermo range (K): cells outside it are refused, except cells below the
        # frozen temperature, which are returned unchanged (only T > 0 is asked of them). Its top
        # reaches up to the hottest state the model was trained on: Cantera labelled states there
        # (extrapolating the one species fit that ends lower, as it and a CFD code's thermo do;
        # GRI-3.0's CH3O ends at 3000 K, hot methane flames at 20 atm pass it).
        t_top = max(float(self.gas.max_temp), float(meta.temperature_k[1]))
        self.thermo_range_k = (float(self.gas.min_temp), t_top)
        self._thermo_range_text = (
            f"the mechanism's thermo range {self.gas.min_temp:g}–{t_top:g} K"
            if t_top == self.gas.max_temp else
            f"{self.gas.min_temp:g}–{t_top:g} K (the mechanism's thermo range "
            f"{self.gas.min_temp:g}–{self.gas.max_temp:g} K up to the model's hottest training state)")
        inert = torch.zeros(meta.n_species, dtype=torch.bool)
        for name in meta.inert_species:
            inert[meta.species.index(name)] = True
        self.inert = inert.to(self.device)
        # Element mass fractions Z_e = Σ_k a_ek Y_k, a_ek = n_ek W_e / W_k, of the elements that
        # some non-inert species carries (the others' residual is zero: inert Y is held fixed).
        elements = element_mass_matrix(self.gas)
        keep = elements[:, ~inert.numpy()].any(axis=1)
        self.element_matrix = torch.as_tensor(elements[keep], dtype=torch.float64, device=self.device)
        a = self.element_matrix
        self.element_products = (a[:, None, :] * a[None, :, :]).reshape(-1, a.shape[1]).T.contiguous()
        self._fallback = ReactorStep(self.gas, meta.dt_s, FALLBACK_TOLERANCES)

    def _setup_domain(self, meta: ModelMeta, tensors: dict[str, torch.Tensor]) -> None:
        """The domain check of the file's format: the per-species box (formats 1-3, and format 4
        with ``domain.check: box``), the box and the occupancy grid (``occupancy``), or only T
        and P (``none``). The mixture coordinates are set whenever the model records its
        streams (the induction routing uses the progress variable)."""
        domain = meta.domain or {}
        self.domain_check = domain.get("check", "box")
        self.coordinates: DomainCoordinates | None = None
        self.grid: OccupancyGrid | None = None
        self.occupancy: torch.Tensor | None = None
        fuel, oxidizer = meta.streams
        if meta.domain or meta.induction:
            self.coordinates = DomainCoordinates(self.gas, fuel, oxidizer, self.device)
        if self.domain_check == "occupancy":
            self.grid = OccupancyGrid(domain["edges"], self.device)
            self.occupancy = tensors[OCCUPANCY_TENSOR].reshape(-1).to(self.device, torch.bool)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto",
             dtype: torch.dtype | str | None = None,
             expect_mechanism_sha256: str | None = None) -> Integrator:
        """Load a model file; refuse it when ``expect_mechanism_sha256`` names another mechanism.

        ``dtype``: the networks' dtype, or a precision name (``auto``, ``float32``,
        ``bfloat16``); None is ``auto`` (:func:`kinetics.inference.network_dtype`)."""
        meta, tensors, yaml_text = read_model_file(path)
        if expect_mechanism_sha256 and expect_mechanism_sha256 != meta.mechanism_sha256:
            raise InputError(f"model: {path} was trained on mechanism sha256 "
                             f"{meta.mechanism_sha256[:12]}… ({meta.mechanism_source}), not "
                             f"{expect_mechanism_sha256[:12]}…")
        return cls(meta, tensors, yaml_text, device=device, dtype=dtype, path=str(path))

    # -- facts -----------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        return list(self.meta.species)

    @property
    def dt_s(self) -> float:
        return self.meta.dt_s

    @property
    def precision(self) -> str:
        """The networks' dtype by name (``float32``, ``bfloat16``, …)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def width(self) -> int:
        return state_width(self.meta.n_species)

    # -- checks ----------------------------------------------------------------------------------
    def substeps(self, dt: float | None) -> int:
        """Number of model steps in ``dt`` (s); InputError unless a whole multiple of the model dt
        (and a count a float can hold: ``dt`` = 1e308 s is refused, not an OverflowError)."""
        if dt is None:
            return 1
        if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise InputError(f"dt: must be a number > 0, got {dt!r}")
        ratio = dt / self.dt_s
        if not math.isfinite(ratio):
            raise InputError(f"dt: {dt:g} s is too many model steps of {self.dt_s:g} s to count")
        n = round(ratio)
        if n < 1 or abs(ratio - n) > 1e-6 * max(1.0, ratio):
            raise InputError(f"dt: {dt:g} s is not a whole multiple of the model's dt "
                             f"({self.dt_s:g} s)")
        return n

    def check_states(self, states: torch.Tensor) -> None:
        """InputError naming the row and the problem for a wrong width, NaN/inf, T or P ≤ 0,
        T outside the mechanism's thermo range (:attr:`thermo_range_k`, up to the model's hottest
        training state; cells below the frozen temperature only need T > 0), P outside
        :data:`PRESSURE_RANGE_PA`, Y < −tol or ΣY off 1 by more than the tolerance."""
        if states.ndim != 2 or states.shape[1] != self.width:
            raise InputError(f"states: expected shape [n, {self.width}] (T, P and "
                             f"{self.meta.n_species} mass fractions), got {list(states.shape)}")
        if states.shape[0] == 0:
            return
        y = mass_fractions(states)
        # A fused pass decides (row sums and minimum; block by block on the host); the search
        # for the first bad row runs only on failure. NaN or inf anywhere makes a row sum
        # non-finite; T and P are positive, so the global minimum is that of Y unless something
        # is wrong anyway.
        t_lo, t_hi = self.thermo_range_k
        # Below the thermo range only frozen cells are allowed: a batch whose coldest cell lies
        # there takes the row-by-row search below, which lets frozen cells through.
        t_floor = t_lo if self.meta.frozen_temperature_k < t_lo else 0.0
        if states.device.type == "cpu":
            good = _host_states_look_valid(states.detach().numpy(), t_floor, t_hi)
        else:
            row_sum = states.sum(dim=1)
            total = row_sum - temperature(states) - pressure(states)
            t_min, t_max = (float(v) for v in torch.aminmax(temperature(states)))
            p_min, p_max = (float(v) for v in torch.aminmax(pressure(states)))
            good = (bool(torch.isfinite(row_sum).all()) and float(states.min()) >= -Y_TOLERANCE
                    and t_min > 0 and t_min >= t_floor and t_max <= t_hi
                    and PRESSURE_RANGE_PA[0] <= p_min and p_max <= PRESSURE_RANGE_PA[1]
                    and float(torch.abs(total - 1.0).max()) <= SUM_TOLERANCE)
        if good:
            return
        total = y.sum(dim=1)
        finite = torch.isfinite(states).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise InputError(f"states: row {row} holds NaN or inf")
        for name, column in (("temperature", temperature(states)), ("pressure", pressure(states))):
            bad = column <= 0
            if bool(bad.any()):
                row = int(bad.nonzero()[0])
                raise InputError(f"states: row {row} has {name} <= 0 ({float(column[row]):g})")
        t = temperature(states)
        hot_or_cold = (t > t_hi) | ((t < t_lo) & (t >= self.meta.frozen_temperature_k))
        if bool(hot_or_cold.any()):
            row = int(hot_or_cold.nonzero()[0])
            raise InputError(f"states: row {row} has temperature {float(t[row]):g} K, outside "
                             f"{self._thermo_range_text}")
        p = pressure(states)
        p_lo, p_hi = PRESSURE_RANGE_PA
        outside = (p < p_lo) | (p > p_hi)
        if bool(outside.any()):
            row = int(outside.nonzero()[0])
            raise InputError(f"states: row {row} has pressure {float(p[row]):g} Pa, outside "
                             f"{p_lo:g}–{p_hi:g} Pa")
        neg = y < -Y_TOLERANCE
        if bool(neg.any()):
            row, k = (int(v) for v in neg.nonzero()[0])
            raise InputError(f"states: row {row} has negative mass fraction of "
                             f"{self.meta.species[k]} ({float(y[row, k]):.3g})")
        off = torch.abs(total - 1.0) > SUM_TOLERANCE
        if bool(off.any()):
            row = int(off.nonzero()[0])
            raise InputError(f"states: row {row} has mass fractions summing to "
                             f"{float(total[row]):.6g}, not 1")

    # -- stepping --------------------------------------------------------------------------------
    def step(self, states: np.ndarray | torch.Tensor, dt: float | None = None
             ) -> np.ndarray | torch.Tensor:
        """Advance ``states`` ``[n, 2+ns]`` by ``dt`` (s; default: the model's dt); same type out.

        A new array is returned, except when every cell is frozen: then ``states`` itself.
        InputError for a ``dt`` that is not a whole multiple of the model's dt and for bad states
        (see :meth:`check_states`).
        """
        return self.advance(states, self.substeps(dt)).states

    @torch.no_grad()
    def advance(self, states: np.ndarray | torch.Tensor, n_substeps: int = 1,
                check: bool = True, stop: Callable[[], bool] | None = None) -> StepResult:
        """Advance ``states`` ``[n, 2+ns]`` by ``n_substeps`` model steps (``n_substeps`` × the
        model's dt, see :meth:`substeps`); the states in the caller's type and dtype plus the
        counts of frozen, fallback and near-equilibrium cells.

        ``check=False`` skips :meth:`check_states`, for states that have just passed it (the
        service checks each request before merging them). ``stop``, when given, is asked before
        each model step and each Cantera fallback cell; True ends the call with
        :class:`StepInterrupted` (the arithmetic is the same with or without it).
        """
        if (isinstance(n_substeps, bool) or not isinstance(n_substeps, numbers.Integral)
                or n_substeps < 1):
            raise InputError(f"n_substeps: must be a whole number >= 1, got {n_substeps!r}")
        n_sub = int(n_substeps)
        is_numpy = isinstance(states, np.ndarray)
        if is_numpy:
            if states.dtype.kind != "f":
                raise InputError(f"states: expected a float array, got dtype {states.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(states))
        elif isinstance(states, torch.Tensor):
            x = states
        else:
            raise InputError(f"states: expected a numpy array or torch tensor, got "
                             f"{type(states).__name__}")
        out_dtype, out_device = x.dtype, x.device
        x = x.to(self.device, torch.float64)
        if check:
            self.check_states(x)
        t = temperature(x)
        frozen = t < self.meta.frozen_temperature_k
        fell_back = torch.zeros_like(frozen)
        if bool(frozen.all()):
            # Nothing to advance: the input itself is the answer (no copy of a large batch).
            mask = frozen.cpu().numpy()
            return StepResult(states, len(t), len(t), 0, n_sub, mask, np.zeros_like(mask))
        t, p = t.clone(), pressure(x).clone()
        y = torch.clamp(mass_fractions(x), min=0.0)
        y = y / y.sum(dim=1, keepdim=True)
        active = ~frozen
        tail_steps = induction_steps = unresolved_steps = 0
        for done in range(n_sub):
            if stop is not None and stop():
                raise StepInterrupted(done, n_sub)
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            t_new, y_new, fb, counts = self._model_step(t[idx], p[idx], y[idx],
                                                        _at_step(stop, done, n_sub))
            tail_steps += counts[ROUTE_TAIL]
            induction_steps += counts[ROUTE_INDUCTION]
            unresolved_steps += counts[ROUTE_UNRESOLVED]
            t[idx], y[idx] = t_new, y_new
            fell_back[idx] |= fb
            active = t >= self.meta.frozen_temperature_k
        # Frozen cells are returned exactly as given (no renormalisation).
        y = torch.where(frozen[:, None], mass_fractions(x), y)
        result = join_states(t, p, y).to(out_device, out_dtype)
        if is_numpy:
            result = result.numpy()
        return StepResult(result, len(t), int(frozen.sum()), int(fell_back.sum()), n_sub,
                          frozen.cpu().numpy(), fell_back.cpu().numpy(), tail_steps,
                          induction_steps, unresolved_steps)

    def in_domain(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor,
                  y: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean ``[n]``: inside the training domain (T in K, P in Pa, ``bct`` the Box-Cox
        features ``[n, ns]``, ``y`` the mass fractions, computed from ``bct`` when None).

        Always T and P within the trained ranges (widened by :data:`DOMAIN_MARGIN`); with the
        ``box`` check (formats 1-3) every species' Box-Cox value within its trained range too;
        with ``occupancy`` (format 4) also a bin of the grid over mixture fraction, dilution, T,
        P and progress that held training rows; with ``none`` nothing more.
        """
        inside = (t >= self.t_lo) & (t <= self.t_hi) & (p >= self.p_lo) & (p <= self.p_hi)
        if self.domain_check == "none":
            return inside
        inside &= ((bct >= self.bct_lo) & (bct <= self.bct_hi)).all(dim=1)
        if self.grid is not None and len(t):
            if y is None:
                y = box_cox_inverse(bct, self.meta.box_cox_lambda)
            flat, in_grid = self.grid.flat_index(self.coordinates.coordinates(t, p, y))
            inside &= in_grid & self.occupancy[flat]
        return inside

    def _model_step(self, t: torch.Tensor, p: torch.Tensor, y: torch.Tensor,
                    interrupt: Callable[[], None] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, int]]:
        """One model step: ``(T', Y', fell_back [n] bool, {route: cells})``, the cells each
        network served (:data:`ROUTE_TAIL`, :data:`ROUTE_INDUCTION`) and those handed to Cantera
        below the induction network's resolution (:data:`ROUTE_UNRESOLVED`); ``interrupt`` is
        called before each Cantera fallback cell (it raises to stop)."""
        lam = self.meta.box_cox_lambda
        bct = box_cox(y, lam)
        inside = self.in_domain(t, p, bct, y)
        t_out, y_out = t.clone(), y.clone()
        counts = dict.fromkeys((ROUTE_TAIL, ROUTE_INDUCTION, ROUTE_UNRESOLVED), 0)
        if bool(inside.any()):
            i = inside.nonzero().squeeze(1)
            t_out[i], y_out[i], ok, route = self._network_step(t[i], p[i], y[i], bct[i])
            counts[ROUTE_TAIL] = int(((route == ROUTE_TAIL) & ok).sum())
            counts[ROUTE_INDUCTION] = int(((route == ROUTE_INDUCTION) & ok).sum())
            counts[ROUTE_UNRESOLVED] = int((route == ROUTE_UNRESOLVED).sum())
            # Enthalpy inversion failed, or below the induction network's resolution: Cantera
            # takes these cells.
            inside[i[~ok]] = False
        outside = (~inside).nonzero().squeeze(1)
        for j in outside.tolist():
            if interrupt is not None:
                interrupt()
            t_out[j], y_out[j] = self._cantera_step(float(t[j]), float(p[j]), y[j])
        return t_out, y_out, ~inside, counts

    def rates(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor,
              y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d BCT(Y)/dt [n, ns] in 1/s, route [n] int8)`` for in-domain cells; ``route`` says
        which network gave a cell's rates (:data:`ROUTE_MAIN`, :data:`ROUTE_TAIL`,
        :data:`ROUTE_INDUCTION`).

        Regime networks were trained on slow cells alone, each with its own, much finer scale.
        A cell whose rates, as the main network predicts them, are all below a regime's
        ``route_below`` × the main target scale takes that regime's rates: the induction
        network's when its progress variable is below ``progress_below`` (fresh or barely
        burnt: slow induction, preheat), else the near-equilibrium network's. An induction cell
        whose rates, in the induction network's own scale, are all below its ``fallback_below``
        (where that network's error is as large as the rates it predicts: slow induction near
        the second explosion limit) is marked :data:`ROUTE_UNRESOLVED`, for Cantera, unless it
        has nothing to burn. ``y``: the mass fractions ``bct`` came from (computed from ``bct``
        when None).
        """
        features = torch.cat([t[:, None], log_pressure(p)[:, None], bct], dim=1)
        rate = self.head.rates(features)
        route = torch.zeros(len(t), dtype=torch.int8, device=t.device)
        if (self.tail is None and self.induction is None) or not len(t):
            return rate, route
        largest = (rate / self.head.y_std).abs().masked_fill(self.inert, 0.0).amax(dim=1)
        if self.tail is not None:
            route[largest < self.route_below] = ROUTE_TAIL
        if self.induction is not None:
            if y is None:
                y = box_cox_inverse(bct, self.meta.box_cox_lambda)
            fresh = self.coordinates.progress(y) < self.induction_progress_below
            route[fresh & (largest < self.induction_route_below)] = ROUTE_INDUCTION
        for code, head in ((ROUTE_TAIL, self.tail), (ROUTE_INDUCTION, self.induction)):
            chosen = route == code
            if head is not None and bool(chosen.any()):
                i = chosen.nonzero().squeeze(1)
                rate[i] = head.rates(features[i])
                if code == ROUTE_INDUCTION and self.induction_fallback_below > 0:
                    own = (rate[i] / head.y_std).abs().masked_fill(self.inert, 0.0).amax(dim=1)
                    burnable = self.coordinates.complete_products(y[i]) > NOTHING_TO_BURN
                    route[i[(own < self.induction_fallback_below) & burnable]] = ROUTE_UNRESOLVED
        return rate, route

    def _network_step(self, t, p, y, bct):
        rate, route = self.rates(t, p, bct, y)  # d BCT(Y)/dt, 1/s in BCT units
        y_new = box_cox_inverse(bct + self.dt_s * rate, self.meta.box_cox_lambda)
        y_new = torch.where(self.inert, y, y_new)
        y_new = self._conserve_elements(y, y_new)
        inert_total = (y * self.inert).sum(dim=1, keepdim=True)
        active_total = (y_new * ~self.inert).sum(dim=1, keepdim=True)
        scale = (1.0 - inert_total) / torch.clamp(active_total, min=1e-300)
        y_new = torch.where(self.inert, y, y_new * scale)
        h_k, cp_k = self.thermo.species_properties(t)
        h = (h_k * y).sum(dim=1)
        t_new, converged = self.thermo.temperature(h, y_new, t, guess_properties=(h_k, cp_k))
        ok = (converged & torch.isfinite(t_new) & torch.isfinite(y_new).all(dim=1)
              & (route != ROUTE_UNRESOLVED))
        return t_new, y_new, ok, route

    def _conserve_elements(self, y: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
        """Project ``y_new`` ``[n, ns]`` onto the element mass fractions of ``y``.

        Chemistry moves atoms between species but never creates them; the network does not know
        that, and unprojected errors accumulate into drift over long rollouts (hundreds of K at
        equilibrium). Weighted least squares with weights ∝ Y' (so trace species barely move and
        stay non-negative), inert species held fixed; the result is clipped at 0.
        """
        a = self.element_matrix  # [ne, ns]
        ne = a.shape[0]
        w = (y_new + 1e-30) * ~self.inert
        resid = (y_new - y) @ a.T  # [n, ne]
        # m[n, e, f] = Σ_k a[e, k] a[f, k] w[n, k], as one matmul with the precomputed products.
        m = (w @ self.element_products).view(-1, ne, ne)
        # Ridge term: when two elements are carried by the same species only (H and C in a fresh
        # CH4/air mixture) m is singular; the part of the residual no species can absorb stays.
        ridge = 1e-9 * m.diagonal(dim1=1, dim2=2).amax(dim=1) + 1e-300
        m = m + ridge[:, None, None] * torch.eye(ne, dtype=m.dtype, device=m.device)
        lam = torch.linalg.solve(m, resid.unsqueeze(-1)).squeeze(-1)
        return torch.clamp(y_new - w * (lam @ a), min=0.0)

    def _cantera_step(self, t: float, p: float, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        state = join_states(np.array([t]), np.array([p]), y.cpu().numpy()[None, :])[0]
        try:
            _, end = self._fallback.advance(state)
        except ct.CanteraError:
            return t, y  # Cantera cannot advance it either: leave the cell unchanged
        return (float(temperature(end)),
                torch.as_tensor(mass_fractions(end), dtype=torch.float64, device=y.device))
