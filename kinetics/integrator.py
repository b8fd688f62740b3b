"""The inference engine: advance batches of cells ``[n, 2+ns]`` by one chemistry step.

``Integrator.load(path, device=...)`` reads a model file; ``step(states, dt)`` returns the
advanced states in the caller's array type (numpy or torch) and dtype; ``advance(states,
n_substeps)`` does the same for a number of model steps (``substeps(dt)`` is the one conversion
of a dt into that number) and counts what happened to the cells. Per model step:

1. cells below the frozen temperature pass through unchanged;
2. cells outside the training domain take a Cantera step instead (CFD tolerances, a fresh reactor
   per cell) and are counted (``StepResult.n_fallback``): outside T, P or a species' Box-Cox range,
   and (format 4) in a bin of the occupancy grid over mixture fraction, dilution, T, P and progress
   that held no training rows (``kinetics/model/domain.py``);
3. the network (float32, or bfloat16 for a model validated in it on a CPU that multiplies it
   natively: :func:`kinetics.step.forward.network_precision`; on CPU in cache-sized blocks on oneDNN's
   GEMM, see :mod:`kinetics.step.forward`) predicts d BCT(Y)/dt (slow cells take the rates of a
   regime network when the model has one: near equilibrium, or induction); Y' = BCT⁻¹(BCT(Y) +
   dt·rate), projected onto the element mass fractions of Y (atoms are conserved), clipped at 0
   and rescaled so that ΣY' = 1 with inert species untouched;
4. T' follows from conservation of enthalpy at constant pressure (NASA-7, Newton, float64).

Steps 1-4 for every cell the networks take are one TorchScript module,
:class:`kinetics.step.compiled_step.CompiledStep`, compiled at load: a call runs no Python per cell or
per tensor operation. This class keeps the orchestration: the input checks, Cantera for the cells
the module flags, the substeps around them, and the counts.

A ``dt`` that is a whole multiple of the model's dt runs that many model steps. ``advance`` takes an
optional ``stop`` callable, asked before every model step and every Cantera fallback cell: when it
returns True the call ends with :class:`StepInterrupted` (how a caller bounds the time of one call).

Small calls can run an ahead-of-time compiled copy of the step instead
(``Integrator.load(path, small_calls="aot")``; :mod:`kinetics.step.small_step`): a call of up to
:data:`~kinetics.step.small_step.SMALL_CALL_MAX_CELLS` cells on CPU, one model step, without
``stop``, runs an AOTInductor package of the same arithmetic (compiled at load, or read from the
cache); the cells it holds for the fallback go to Cantera, those whose T' it has not converged
after a step by the TorchScript step (whose Newton iterates further), so the fallback and its
counts are as without it.

In a rollout (the same cells fed back step after step: 0D validation, a refine round's 0D cases),
``with integrator.following_cells():`` lets a fallback cell that the fallback stepped last call go
on from its own reactor instead of restarting one (:class:`mechanisms.reactor.FollowedCells`).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.model.domain import DomainCoordinates, OccupancyGrid
from kinetics.model.model_file import ModelMeta, read_model_file
from kinetics.step.compiled_step import (
    DOMAIN_MARGIN,
    FLAG_FALLBACK,
    FLAG_FROZEN,
    NOTHING_TO_BURN,
    ROUTE_INDUCTION,
    ROUTE_MAIN,
    ROUTE_TAIL,
    ROUTE_UNRESOLVED,
    CompiledStep,
    script_step,
)
from kinetics.step.device import resolve_device
from kinetics.step.forward import NETWORK_PRECISIONS, network_precision, precision_name
from kinetics.step.small_step import (
    FLAG_NEWTON_SHORT,
    ROUTING_SETTINGS,
    SETTINGS,
    SMALL_CALL_MAX_CELLS,
    SmallStep,
    load_small_step,
    model_sha256,
    step_settings,
)
from kinetics.step.thermo import Nasa7
from mechanisms.errors import DeepkinError, InputError
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import FALLBACK_TOLERANCES, FollowedCells, ReactorStep
from mechanisms.state import (
    PRESSURE_RANGE_PA,
    join_states,
    mass_fractions,
    pressure,
    state_width,
    temperature,
)

Y_TOLERANCE = 1e-6  # negative Y down to −tol is clipped silently; below it is an error
SUM_TOLERANCE = 1e-4  # |ΣY − 1| up to this is renormalised silently
# Which network gave a cell's rates (Integrator.rates), DOMAIN_MARGIN and NOTHING_TO_BURN: defined
# with the step they describe (kinetics/step/compiled_step.py), named here as before.
__all__ = ["DOMAIN_MARGIN", "NOTHING_TO_BURN", "ROUTE_INDUCTION", "ROUTE_MAIN", "ROUTE_TAIL",
           "ROUTE_UNRESOLVED", "Integrator", "StepInterrupted", "StepResult"]
SMALL_BATCH_ROWS = 8  # up to this many rows the input check runs on Python floats (no numpy calls)
SMALL_CALLS = ("torchscript", "aot")  # what runs a small call (Integrator's ``small_calls``)


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
    # cells stepped by Cantera without asking the step, held there after an earlier call handed
    # them over (Integrator.following_cells' hold_steps; counted in n_fallback's cells too)
    n_held: int = 0


def _as_held(out: torch.Tensor, x: torch.Tensor, rows: np.ndarray) -> None:
    """``out``'s ``rows`` get the Y of ``x``'s clipped at 0 and normalised, as the TorchScript
    step returns a cell it holds (the same bits: the same row-wise operations): Cantera starts
    from that, not from the caller's Y."""
    index = torch.as_tensor(rows, device=out.device)
    y = torch.clamp(x[index, 2:], min=0.0)
    out[index, 2:] = y / y.sum(dim=1, keepdim=True)


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


def _few_states_look_valid(a: np.ndarray, t_floor_k: float, t_ceiling_k: float) -> bool:
    """:func:`_host_states_look_valid` for a few rows, on Python floats: a handful of numpy calls
    cost more than the arithmetic of a row."""
    p_lo, p_hi = PRESSURE_RANGE_PA
    for row in a.tolist():
        t, p, y = row[0], row[1], row[2:]
        total = sum(y)
        if not (math.isfinite(total + t + p) and min(y) >= -Y_TOLERANCE and t > 0
                and t_floor_k <= t <= t_ceiling_k and p_lo <= p <= p_hi
                and abs(total - 1.0) <= SUM_TOLERANCE):
            return False
    return True


class Integrator:
    """A trained surrogate ready to step cells.

    ``step_module`` is the compiled step (:class:`kinetics.step.compiled_step.CompiledStep`, scripted)
    that does the arithmetic; ``head``, ``tail`` and ``induction`` are its networks (None where the
    model has none). The routing and domain settings (``route_below``,
    ``induction_route_below``, ``induction_progress_below``, ``induction_fallback_below``,
    ``skip_main_below`` (the router's), ``domain_check``, ``grid``) read and write the
    module's, so a changed setting steps at once.

    ``small_calls``: ``torchscript`` (default) or ``aot``: calls of up to
    :attr:`small_call_max_cells` cells (one model step, no ``stop``, CPU) run the step compiled
    by AOTInductor (:mod:`kinetics.step.small_step`; compiled when the Integrator is made, 35-75 s
    a model on one core and a C++ compiler, then read from the cache ``<cache>/aot``). It takes
    the routing settings as they are set; after a change of ``domain_check`` or ``grid`` to what
    it was not compiled for, calls go to the TorchScript step (:attr:`small_calls` says which
    runs them). Change the settings through these properties, not on ``step_module``: the
    compiled step reads its copy. The cells it holds for the fallback go to Cantera; those it
    holds because T' has not converged are stepped by the TorchScript step first.
    """

    def __init__(self, meta: ModelMeta, tensors: dict[str, torch.Tensor], mechanism_yaml: str,
                 device: str | torch.device | None = "auto",
                 dtype: torch.dtype | str | None = None, path: str | None = None,
                 small_calls: str = "torchscript"):
        self.meta = meta
        self.path = path
        self.device = resolve_device(device)
        # The networks' dtype: given, or a precision name (None = "auto": the model's validated
        # inference precision where the device runs it natively, else float32); hidden_dtype:
        # that of their hidden layers (bfloat16-hidden: bfloat16 between float32 first and last).
        hidden_dtype: torch.dtype | None = None
        if not isinstance(dtype, torch.dtype):
            dtype, hidden_dtype = NETWORK_PRECISIONS[network_precision(
                dtype or "auto", meta.inference_precision, self.device)]
        self.dtype = dtype
        self.hidden_dtype = hidden_dtype
        self.mechanism_yaml = mechanism_yaml
        self.gas = solution_from_yaml(mechanism_yaml, meta.phase, meta.mechanism_sha256)
        self.step_module = script_step(CompiledStep.from_model(meta, tensors, self.gas, self.device,
                                                               dtype, hidden_dtype))
        self.step_module.prepack()
        module = self.step_module
        self.head = module.head
        self.tail = module.tail if meta.tail else None
        self.induction = module.induction if meta.induction else None
        # The training domain's T and P ranges widened by DOMAIN_MARGIN (K, Pa), as the step
        # checks them.
        t_lo, t_hi = meta.temperature_k
        self.t_lo = t_lo - DOMAIN_MARGIN * (t_hi - t_lo)
        self.t_hi = t_hi + DOMAIN_MARGIN * (t_hi - t_lo)
        p_lo, p_hi = meta.pressure_pa
        self.p_lo, self.p_hi = p_lo * (1 - DOMAIN_MARGIN), p_hi * (1 + DOMAIN_MARGIN)
        domain = meta.domain or {}
        fuel, oxidizer = meta.streams
        self.coordinates: DomainCoordinates | None = (
            DomainCoordinates(self.gas, fuel, oxidizer, self.device)
            if meta.domain or meta.induction else None)
        self._grid: OccupancyGrid | None = (
            OccupancyGrid(domain["edges"], self.device) if module.use_grid else None)
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
        self.inert = module.inert
        self._fallback = ReactorStep(self.gas, meta.dt_s, FALLBACK_TOLERANCES)
        self._followed: FollowedCells | None = None
        # following_cells' hold: steps each row has still to stay on Cantera, and how many a
        # row that falls back is held for (0: none)
        self._held: dict[int, int] = {}
        self._hold_steps = 0
        # the caller's row of each row of a call on some of its cells (None: the same rows)
        self._row_keys: np.ndarray | None = None
        if small_calls not in SMALL_CALLS:
            raise InputError(f"small_calls: must be torchscript or aot, got {small_calls!r}")
        if small_calls == "aot" and self.device.type != "cpu":
            raise InputError(f"small_calls: aot runs on CPU only, not {self.device}")
        # The AOTInductor step of small calls (None: TorchScript only), whether it matches the
        # domain settings now (_small_ready), and its routing settings [5] (kept current by the
        # setters: reading the module's attributes costs ~10 µs a call).
        self._small: SmallStep | None = None
        self._small_ready = False
        self._small_settings = torch.zeros(len(SETTINGS), dtype=torch.float64)
        self._small_max_cells = SMALL_CALL_MAX_CELLS
        self._tensors = tensors  # kept for use_small_calls (the networks' own tensors, no copy)
        if small_calls == "aot":
            self.use_small_calls()
        self._settings_changed()

    def use_small_calls(self, compile_missing: bool = True) -> bool:
        """From now on run small calls on the AOTInductor step, as ``small_calls="aot"`` does:
        from the cache, or compiled into it (35-75 s a model on one core, a C++ compiler
        needed; ``compile_missing=False``: only a package already in the cache). True when the
        step is there; DeepkinError in one line when it cannot be compiled or loaded, InputError
        on a GPU."""
        if self._small is not None:
            return True
        if self.device.type != "cpu":
            raise InputError(f"small_calls: aot runs on CPU only, not {self.device}")
        module = self.step_module
        small = load_small_step(self.meta, self._tensors, self.gas, self.dtype,
                                module.domain_check, module.use_grid,
                                model_sha256(self.meta, self._tensors, self.mechanism_yaml),
                                hidden_dtype=self.hidden_dtype, compile_missing=compile_missing)
        if small is None:
            return False
        self._small = small
        self.small_call_max_cells = SMALL_CALL_MAX_CELLS
        self._settings_changed()
        return True

    # -- the step's settings (the compiled module's attributes) ----------------------------------
    @property
    def route_below(self) -> float:
        """Near-equilibrium routing threshold (× the main target scale; 0 without a tail)."""
        return self.step_module.route_below

    @route_below.setter
    def route_below(self, value: float) -> None:
        self.step_module.route_below = float(value)
        self._settings_changed()

    @property
    def induction_route_below(self) -> float:
        return self.step_module.induction_route_below

    @induction_route_below.setter
    def induction_route_below(self, value: float) -> None:
        self.step_module.induction_route_below = float(value)
        self._settings_changed()

    @property
    def induction_progress_below(self) -> float:
        return self.step_module.induction_progress_below

    @induction_progress_below.setter
    def induction_progress_below(self, value: float) -> None:
        self.step_module.induction_progress_below = float(value)
        self._settings_changed()

    @property
    def induction_fallback_below(self) -> float:
        return self.step_module.induction_fallback_below

    @induction_fallback_below.setter
    def induction_fallback_below(self, value: float) -> None:
        self.step_module.induction_fallback_below = float(value)
        self._settings_changed()

    @property
    def skip_main_below(self) -> float:
        """The router's threshold (× the main target scale): a cell it predicts below it skips
        the main network and takes the near-equilibrium network's rates (0: off, or no router)."""
        return self.step_module.skip_main_below

    @skip_main_below.setter
    def skip_main_below(self, value: float) -> None:
        self.step_module.skip_main_below = float(value)
        self._settings_changed()

    @property
    def domain_check(self) -> str:
        """``occupancy``, ``box`` or ``none`` (see :meth:`in_domain`)."""
        return self.step_module.domain_check

    @domain_check.setter
    def domain_check(self, value: str) -> None:
        self.step_module.domain_check = str(value)
        self._settings_changed()

    @property
    def grid(self) -> OccupancyGrid | None:
        """The occupancy grid the domain check uses (None: no grid; setting None turns it off)."""
        return self._grid

    @grid.setter
    def grid(self, value: OccupancyGrid | None) -> None:
        if value is not None and value is not self._grid:
            raise ValueError("grid: only None (no grid check) or the model's own grid")
        self._grid = value
        self.step_module.use_grid = value is not None
        self._settings_changed()

    @property
    def small_call_max_cells(self) -> int:
        """The most cells a call may have to run the AOTInductor step (the cut-over, default
        :data:`~kinetics.step.small_step.SMALL_CALL_MAX_CELLS`; set it to move the cut-over,
        up to what the package takes)."""
        return self._small_max_cells

    @small_call_max_cells.setter
    def small_call_max_cells(self, value: int) -> None:
        limit = self._small.max_cells if self._small is not None else SMALL_CALL_MAX_CELLS
        self._small_max_cells = max(0, min(int(value), limit))

    @property
    def small_calls(self) -> str:
        """``aot`` when small calls run the AOTInductor step (with the present domain
        settings), else ``torchscript``."""
        return "aot" if self._small_ready else "torchscript"

    def _settings_changed(self) -> None:
        """The AOTInductor step's view of the settings: its routing thresholds, and whether it
        was compiled for the domain check in force."""
        small = self._small
        if small is None:
            return
        module = self.step_module
        t_floor, t_ceiling = self._check_temperature_bounds()
        self._small_settings = step_settings(
            [getattr(module, name) for name in SETTINGS[:ROUTING_SETTINGS]],
            (t_floor, t_ceiling, *PRESSURE_RANGE_PA, Y_TOLERANCE, SUM_TOLERANCE))
        self._small_ready = small.domain == (module.domain_check, bool(module.use_grid))

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto",
             dtype: torch.dtype | str | None = None,
             expect_mechanism_sha256: str | None = None,
             small_calls: str = "torchscript") -> Integrator:
        """Load a model file; refuse it when ``expect_mechanism_sha256`` names another mechanism.

        ``dtype``: the networks' dtype, or a precision name (``auto``, ``float32``,
        ``bfloat16``, ``bfloat16-hidden``); None is ``auto``
        (:func:`kinetics.step.forward.network_precision`).
        ``small_calls``: ``torchscript`` or ``aot`` (see the class; DeepkinError in one line
        when the AOTInductor step cannot be compiled)."""
        meta, tensors, yaml_text = read_model_file(path)
        if expect_mechanism_sha256 and expect_mechanism_sha256 != meta.mechanism_sha256:
            raise InputError(f"model: {path} was trained on mechanism sha256 "
                             f"{meta.mechanism_sha256[:12]}… ({meta.mechanism_source}), not "
                             f"{expect_mechanism_sha256[:12]}…")
        return cls(meta, tensors, yaml_text, device=device, dtype=dtype, path=str(path),
                   small_calls=small_calls)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        return list(self.meta.species)

    @property
    def dt_s(self) -> float:
        return self.meta.dt_s

    @property
    def precision(self) -> str:
        """The networks' precision by name (``float32``, ``bfloat16``, ``bfloat16-hidden``, …)."""
        return precision_name(self.dtype, self.hidden_dtype)

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

    def _check_temperature_bounds(self) -> tuple[float, float]:
        """The fast input check's T floor and ceiling (K): the thermo range, but a floor of 0
        where the frozen temperature lies below the range (a batch whose coldest cell lies below
        the range takes the row-by-row search, which lets frozen cells through)."""
        t_lo, t_hi = self.thermo_range_k
        return (t_lo if self.meta.frozen_temperature_k < t_lo else 0.0), t_hi

    def _check_shape(self, states: torch.Tensor) -> None:
        """InputError for states that are not ``[n, 2+ns]``."""
        if states.ndim != 2 or states.shape[1] != self.width:
            raise InputError(f"states: expected shape [n, {self.width}] (T, P and "
                             f"{self.meta.n_species} mass fractions), got {list(states.shape)}")

    def check_states(self, states: np.ndarray | torch.Tensor) -> None:
        """InputError naming the row and the problem for a wrong width, NaN/inf, T or P ≤ 0,
        T outside the mechanism's thermo range (:attr:`thermo_range_k`, up to the model's hottest
        training state; cells below the frozen temperature only need T > 0), P outside
        :data:`PRESSURE_RANGE_PA`, Y < −tol or ΣY off 1 by more than the tolerance. A numpy
        array is checked in place (no copy)."""
        if isinstance(states, np.ndarray):
            states = torch.from_numpy(states)
        self._check_shape(states)
        if states.shape[0] == 0:
            return
        y = mass_fractions(states)
        # A fused pass decides (row sums and minimum; block by block on the host); the search
        # for the first bad row runs only on failure. NaN or inf anywhere makes a row sum
        # non-finite; T and P are positive, so the global minimum is that of Y unless something
        # is wrong anyway.
        t_lo, t_hi = self.thermo_range_k
        t_floor, _ = self._check_temperature_bounds()
        if states.device.type == "cpu":
            good = self._rows_look_valid(states)
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
        # Float64 on the step's device (the usual case) goes in as it is: a small call's host work
        # is a handful of calls of about a microsecond each, each one counts.
        as_is = out_dtype == torch.float64 and out_device == self.device
        # A numpy caller gets numpy back, so the step may run in inference mode (a little faster);
        # a torch caller's tensors stay ordinary tensors.
        with torch.inference_mode() if is_numpy else torch.no_grad():
            if not as_is:
                x = x.to(self.device, torch.float64)
            # A call the AOTInductor step takes whole has its values checked there, fused into
            # its loops; the row-by-row check runs only when a row fails it (recheck).
            recheck = None
            if check:
                if self._small_takes(x, n_sub) and stop is None:
                    self._check_shape(x)
                    recheck = partial(self.check_states, x)
                else:
                    self.check_states(x)
            if stop is None and self._hold_steps and n_sub == 1:
                out, flag, fell_back, counts = self._advance_holding(x, recheck)
            elif stop is None:
                out, flag, fell_back, counts = self._advance_all(x, n_sub, recheck)
            else:
                out, flag, fell_back, counts = self._advance_stepwise(x, n_sub, stop)
            n = len(flag)
            frozen = flag == FLAG_FROZEN
            n_frozen = int(np.count_nonzero(frozen))
            if n_frozen == n:
                # Nothing was advanced: the input itself is the answer (no copy of a large batch).
                return StepResult(states, n, n, 0, n_sub, frozen, np.zeros_like(frozen))
            result = out if as_is else out.to(out_device, out_dtype)
        if is_numpy:
            result = result.numpy()
        n_fallback = int(np.count_nonzero(fell_back)) if counts[3] else 0
        return StepResult(result, n, n_frozen, n_fallback, n_sub, frozen, fell_back, *counts[:3],
                          n_held=counts[4])

    def _advance_holding(self, x: torch.Tensor, recheck: Callable[[], None] | None = None
                         ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[int]]:
        """One model step as :meth:`_advance_all`, inside :meth:`following_cells` with a hold:
        the rows handed to Cantera in one of the last ``hold_steps`` calls go straight to their
        reactors without the compiled step; a row the step hands over now is held for the next
        ``hold_steps`` calls. Counts as :meth:`_advance_all`'s, the held rows among them.
        ``recheck``: as :meth:`_advance_all`'s (the held rows get the fast check here)."""
        n = len(x)
        held = np.array(sorted(j for j in self._held if j < n), dtype=np.int64)
        if not len(held):
            out, flag, fell_back, counts = self._advance_all(x, 1, recheck)
        else:
            if recheck is not None and not self._rows_look_valid(x[held]):
                recheck()  # InputError naming the row (a frozen cell below the range passes)
            stepped = np.ones(n, dtype=bool)
            stepped[held] = False
            free = np.flatnonzero(stepped)
            out = x.clone()
            flag = np.full(n, FLAG_FALLBACK, dtype=np.int8)
            fell_back = np.zeros(n, dtype=bool)
            fell_back[held] = True
            counts = [0, 0, 0, True, len(held)]
            if len(free):
                index = torch.as_tensor(free, device=x.device)
                self._row_keys = free
                try:
                    sub, sub_flag, sub_fell_back, sub_counts = self._advance_all(x[index], 1,
                                                                                 recheck)
                finally:
                    self._row_keys = None
                out[index] = sub
                flag[free] = sub_flag
                fell_back[free] = sub_fell_back
                counts = sub_counts[:3] + [True, len(held)]
            _as_held(out, x, held)
            for j in held.tolist():
                self._fallback_cell(out, j)
        for j in held.tolist():
            if self._held[j] <= 1:
                del self._held[j]
            else:
                self._held[j] -= 1
        if counts[3]:
            handed_over = fell_back.copy()
            handed_over[held] = False  # held this call: asked afresh once their hold ends
            for j in np.flatnonzero(handed_over).tolist():
                self._held[j] = self._hold_steps
        return out, flag, fell_back, counts

    def _rows_look_valid(self, rows: torch.Tensor) -> bool:
        """The fast input check (:meth:`check_states`' first test) of ``rows`` on the host: on
        Python floats for a few rows, block by block in numpy for more."""
        t_floor, t_ceiling = self._check_temperature_bounds()
        host = rows.detach().cpu().numpy()
        return (_few_states_look_valid(host, t_floor, t_ceiling) if len(host) <= SMALL_BATCH_ROWS
                else _host_states_look_valid(host, t_floor, t_ceiling))

    def _small_takes(self, x: torch.Tensor, n_sub: int) -> bool:
        """True when a call of ``x`` (float64, on the step's device) taking ``n_sub`` model steps
        runs the AOTInductor step (without ``stop``)."""
        return self._small_ready and n_sub == 1 and 0 < len(x) <= self._small_max_cells

    def _advance_all(self, x: torch.Tensor, n_sub: int, recheck: Callable[[], None] | None = None
                     ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[int]]:
        """All ``n_sub`` model steps in one call of the compiled step; the cells it holds for the
        fallback take their Cantera step and go on from there. ``(states, flag [n] int8,
        fell_back [n] bool, [tail, induction, unresolved cell-steps, any fell back, 0 cells
        held])`` (flags and masks on the host).

        A small call takes the AOTInductor step when there is one: the cells it holds for the
        fallback go to Cantera, but those whose T' it has not converged
        (:data:`~kinetics.step.small_step.FLAG_NEWTON_SHORT`) are stepped again by the
        TorchScript step first (which iterates Newton further), and those it holds too go to
        Cantera. ``recheck``: the caller deferred the check of the values to the AOTInductor
        step, and this runs the full check (InputError naming the row) when a row fails the
        step's (before any Cantera work); with the TorchScript step it runs first."""
        has_regimes = self.tail is not None or self.induction is not None
        if self._small_takes(x, n_sub):
            out, flag_t, counts_t = self._small(x.contiguous(), self._small_settings)
            tail, induction, unresolved, failed, _, fallback, short = counts_t.tolist()
            if failed and recheck is not None:
                recheck()  # InputError naming the row (a frozen cell below the range passes)
            counts = [tail, induction, unresolved] if has_regimes else [0, 0, 0]
            flag = flag_t.numpy()
            if short:
                # The same cells, routes and rates in the TorchScript step: only T' differs.
                retry = np.flatnonzero(flag == FLAG_NEWTON_SHORT)
                index = torch.as_tensor(retry, device=out.device)
                sub, sub_flag_t, done_t, sub_counts = self.step_module.advance(x[index], 1, None,
                                                                               True)
                out[index] = sub
                if has_regimes:
                    counts = [a + b for a, b in zip(counts, sub_counts.tolist())]
                flag[retry] = sub_flag_t.numpy()
                fallback = int(np.count_nonzero(flag == FLAG_FALLBACK))
            if not fallback:
                return out, flag, np.zeros(len(flag), dtype=bool), counts + [False, 0]
            fell_back = flag == FLAG_FALLBACK
            held = np.flatnonzero(fell_back)
            _as_held(out, x, held)
            for j in held.tolist():
                self._fallback_cell(out, j)  # one model step: nothing left after it
            return out, flag, fell_back, counts + [True, 0]
        if recheck is not None:
            recheck()
        out, flag_t, done_t, counts_t = self.step_module.advance(x, n_sub, None, True)
        flag = flag_t.numpy() if flag_t.device.type == "cpu" else flag_t.cpu().numpy()
        fell_back = flag == FLAG_FALLBACK
        counts = counts_t.tolist() if has_regimes else [0, 0, 0]
        if not fell_back.any():
            return out, flag, fell_back, counts + [False, 0]
        left = n_sub - done_t.cpu().numpy()  # model steps each cell has still to take
        held = np.flatnonzero(fell_back)
        while len(held):
            fell_back[held] = True
            for j in held.tolist():
                self._fallback_cell(out, j)
            left[held] -= 1
            again = held[left[held] > 0]
            if not len(again):
                break
            index = torch.as_tensor(again, device=out.device)
            sub, sub_flag, sub_done, sub_counts = self.step_module.advance(
                out[index], 0, torch.as_tensor(left[again], device=out.device), False)
            out[index] = sub
            counts = [a + b for a, b in zip(counts, sub_counts.tolist())]
            sub_flag = sub_flag.cpu().numpy()
            left[again] -= sub_done.cpu().numpy()
            held = again[sub_flag == FLAG_FALLBACK]
        return out, flag, fell_back, counts + [True, 0]

    def _advance_stepwise(self, x: torch.Tensor, n_sub: int, stop: Callable[[], bool]
                          ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[int]]:
        """As :meth:`_advance_all`, one model step per call of the compiled step, asking
        ``stop`` before each model step and each fallback cell."""
        n = len(x)
        out, flag = x, np.zeros(n, dtype=np.int8)
        fell_back = np.zeros(n, dtype=bool)
        counts = [0, 0, 0]
        frozen_k = self.meta.frozen_temperature_k
        for done in range(n_sub):
            if stop():
                raise StepInterrupted(done, n_sub)
            if done == 0:
                index = None
                out, sub_flag, _, sub_counts = self.step_module.advance(x, 1, None, True)
                sub_flag = flag = sub_flag.cpu().numpy()
                cells = np.arange(n)
            else:
                active = (flag != FLAG_FROZEN) & (temperature(out).cpu().numpy() >= frozen_k)
                if not active.any():
                    break
                cells = np.flatnonzero(active)
                index = torch.as_tensor(cells, device=out.device)
                sub, sub_flag, _, sub_counts = self.step_module.advance(out[index], 1, None, False)
                out[index] = sub
                sub_flag = sub_flag.cpu().numpy()
            counts = [a + b for a, b in zip(counts, sub_counts.tolist())]
            held = cells[sub_flag == FLAG_FALLBACK]
            fell_back[held] = True
            interrupt = _at_step(stop, done, n_sub)
            for j in held.tolist():
                interrupt()
                self._fallback_cell(out, j)
        return out, flag, fell_back, counts + [True, 0]

    @contextlib.contextmanager
    def following_cells(self, max_cells: int = 64, hold_steps: int = 0
                        ) -> Iterator[FollowedCells]:
        """Within the block, the Cantera fallback follows cells by their row index: a cell it
        stepped in the last call and got back unchanged goes on from its own reactor (CVODES not
        restarted) instead of a fresh one; up to ``max_cells`` rows are followed (the others as
        outside the block). For rollouts, where the same cells come back step after step; a CFD
        code's cells change between calls and would only be restarted. Yields the
        :class:`~mechanisms.reactor.FollowedCells` (its ``n_continued`` and ``n_restarted``
        count the steps).

        ``hold_steps`` > 0 (one-step calls without ``stop``): a row the step hands to Cantera
        stays there for the next ``hold_steps`` calls without the compiled step being asked
        again (counted in :attr:`StepResult.n_held`), then the step decides afresh. A 0D
        rollout's slow induction, below the induction network's resolution for 10^4-10^5 steps
        in a row, otherwise pays the networks every step only to hand the cells over again.
        The held steps are Cantera's (the reference chemistry), each row's at most
        ``hold_steps`` more than the step would have asked for at a hand-back."""
        if isinstance(hold_steps, bool) or not isinstance(hold_steps, int) or hold_steps < 0:
            raise InputError(f"hold_steps: must be a whole number >= 0, got {hold_steps!r}")
        followed = FollowedCells(
            lambda: ct.Solution(yaml=self.mechanism_yaml, name=self.meta.phase),
            self.meta.dt_s, FALLBACK_TOLERANCES, max_cells)
        before = self._followed, self._held, self._hold_steps
        self._followed, self._held, self._hold_steps = followed, {}, hold_steps
        try:
            yield followed
        finally:
            self._followed, self._held, self._hold_steps = before

    def _fallback_cell(self, states: torch.Tensor, j: int) -> None:
        """Row ``j`` of ``states`` (float64) advanced by one Cantera step, in place."""
        row = states[j]
        if self._followed is not None:
            state = row.cpu().numpy()
            key = j if self._row_keys is None else int(self._row_keys[j])
            try:
                end = self._followed.advance(key, state)
            except ct.CanteraError:
                return  # Cantera cannot advance it either: leave the cell unchanged
            if end is not None:
                row.copy_(torch.as_tensor(end, dtype=torch.float64))
                return
        t, y = self._cantera_step(float(row[0]), float(row[1]), row[2:])
        row[0] = t
        row[2:] = y

    def in_domain(self, t: torch.Tensor, p: torch.Tensor, bct: torch.Tensor,
                  y: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean ``[n]``: inside the training domain (T in K, P in Pa, ``bct`` the Box-Cox
        features ``[n, ns]``, ``y`` the mass fractions, computed from ``bct`` when None).

        Always T and P within the trained ranges (widened by :data:`DOMAIN_MARGIN`; P compared
        as ln(P/1 atm)); with the ``box`` check (formats 1-3) every species' Box-Cox value within
        its trained range too; with ``occupancy`` (format 4) also a bin of the grid over mixture
        fraction, dilution, T, P and progress that held training rows; with ``none`` nothing more.
        """
        with torch.no_grad():
            return self.step_module.in_domain(*self._float64(t, p, bct, y))

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
        with torch.no_grad():
            return self.step_module.rates(*self._float64(t, p, bct, y))

    def _float64(self, *arrays: torch.Tensor | np.ndarray | None) -> list[torch.Tensor | None]:
        """The arrays as float64 tensors on the device (None stays None)."""
        return [None if a is None else torch.as_tensor(a).to(self.device, torch.float64)
                for a in arrays]

    def _cantera_step(self, t: float, p: float, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        state = join_states(np.array([t]), np.array([p]), y.cpu().numpy()[None, :])[0]
        try:
            _, end = self._fallback.advance(state)
        except ct.CanteraError:
            return t, y  # Cantera cannot advance it either: leave the cell unchanged
        return (float(temperature(end)),
                torch.as_tensor(mass_fractions(end), dtype=torch.float64, device=y.device))

