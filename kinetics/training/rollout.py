"""The rollout loss: a network follows its own steps along Cantera's trajectories.

A dataset's ``rollout`` rows (``deepkin sample`` with ``rows.rollout``, sampling/config.py's
``RolloutOptions``) are trajectories: consecutive rows each of whose target is the next row's
input. :func:`read_windows` finds them and every window of ``k`` consecutive steps along them.

In training (``rollout_steps: k``, ``rollout_loss_weight``), every optimiser step also takes a
batch of windows. From each window's first state s_0 the network steps its **own** state k
times, with the model's step (:class:`ModelStep`: Box-Cox inverse, inert species held, element
projection, renormalisation, T from the enthalpy, as ``kinetics/step/compiled_step.py``). At
each of its states ŝ_j the loss compares the network's output with the rate that takes ŝ_j to
Cantera's state s_j+1 in one step, (BCT(Y_j+1) − BCT(Ŷ_j))/dt, encoded, weighted and penalised
as the one-step rows are (the same ``_Objective``). On Cantera's trajectory (ŝ_j = s_j) that is
the one-step label; where the network's own steps drift, it points back onto the trajectory, so
drift and a false fixed point (a state where the network stops while Cantera moves on) cost
loss, step after step. The states themselves are not differentiated through: each step's
gradient is that of its own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cantera as ct
import numpy as np
import torch

from kinetics.networks.transforms import box_cox, box_cox_inverse, decode_output, log_pressure
from kinetics.step.compiled_step import project_elements, renormalise
from kinetics.step.tables import element_tables
from kinetics.step.thermo import Nasa7
from kinetics.training.data import TrainingRows
from mechanisms.dataset_file import BlockReader, DatasetFacts
from mechanisms.errors import InputError
from mechanisms.loading import inert_species
from mechanisms.state import join_states, mass_fractions, pressure, temperature

# A row continues a trajectory when its input equals the previous row's target to this
# (relative to the row's largest entry, T or P): Cantera renormalises Y when it is set (~1 ulp).
CHAIN_RTOL = 1e-12
# The rollout term's signed power is softened below this share of the target scale (finite slope).
SOFT_ORIGIN = 1e-4
# Mass fractions are floored here where Box-Cox is differentiated (y^λ has an infinite slope at 0).
Y_FLOOR = 1e-30


@dataclass
class RolloutWindows:
    """Windows of ``steps`` consecutive labelled steps: window i is the states
    ``states[starts[i] : starts[i] + steps + 1]`` ``[steps + 1, 2+ns]`` (float64, s_0 … s_k)."""

    states: np.ndarray  # [m, 2+ns]: every trajectory's states, one trajectory after another
    starts: np.ndarray  # [n] int64
    is_val: np.ndarray  # [n] bool: the window's first row is a validation row
    steps: int

    def __len__(self) -> int:
        return len(self.starts)

    def select(self, keep: np.ndarray) -> RolloutWindows:
        """The windows where ``keep`` ``[n]`` is True."""
        return RolloutWindows(self.states, self.starts[keep], self.is_val[keep], self.steps)

    def batch(self, index: np.ndarray) -> np.ndarray:
        """States ``[len(index), steps + 1, 2+ns]`` of the windows ``index``."""
        return self.states[self.starts[index][:, None] + np.arange(self.steps + 1)[None, :]]


def read_windows(facts: DatasetFacts, steps: int, block_rows: int, val_fraction: float,
                 seed: int, row_mask: np.ndarray | None = None) -> RolloutWindows:
    """Every window of ``steps`` steps along the ``rollout`` rows of the dataset ``facts``
    (those of ``row_mask`` ``[n_rows]`` when given), each marked validation or training by its
    first row's draw (the split of :class:`~kinetics.training.data.TrainingRows`, same
    ``block_rows``, ``val_fraction`` and ``seed``). InputError when the file holds no window."""
    if "rollout" not in facts.source_names:
        raise InputError(f"rollout_steps: {facts.path} holds no rollout rows (sample some with "
                         "rows.rollout, sampling config's rollout.steps >= rollout_steps)")
    rows = TrainingRows(BlockReader(facts, block_rows, ["rollout"]), val_fraction, seed,
                        row_mask=row_mask)
    states: list[np.ndarray] = []
    starts: list[int] = []
    is_val: list[bool] = []
    run_first = 0  # index in states of the current trajectory's first state
    run_val: list[bool] = []  # validation flags of the current trajectory's rows
    last_target: np.ndarray | None = None
    count = 0

    def close_run() -> None:
        n_rows = len(run_val)
        for j in range(n_rows - steps + 1):
            starts.append(run_first + j)
            is_val.append(run_val[j])

    for inputs, targets, val in rows.blocks():
        for row_in, row_out, v in zip(inputs, targets, val):
            continues = last_target is not None and bool(np.all(
                np.abs(row_in - last_target) <= CHAIN_RTOL * np.abs(last_target).max()))
            if not continues:
                if last_target is not None:
                    close_run()
                    states.append(last_target[None, :])
                    count += 1
                run_first, run_val = count, []
            states.append(row_in[None, :])
            count += 1
            run_val.append(bool(v))
            last_target = row_out
    if last_target is not None:
        close_run()
        states.append(last_target[None, :])
    if not starts:
        raise InputError(f"rollout_steps: the rollout rows of {facts.path} hold no trajectory of "
                         f"{steps} steps (sample them with rollout.steps >= {steps})")
    return RolloutWindows(np.concatenate(states), np.asarray(starts, dtype=np.int64),
                          np.asarray(is_val, dtype=bool), steps)


class ModelStep:
    """The model's step of cells from their rates, without a network, for following a network's
    own states in training: ``Y' = BCT⁻¹(BCT(Y) + dt·rate)`` with the inert species held, projected
    onto Y's element mass fractions, renormalised, and T' from h(T', Y') = h(T, Y) (float64, as
    :class:`~kinetics.step.compiled_step.CompiledStep` steps a cell)."""

    def __init__(self, gas: ct.Solution, lam: float, dt_s: float, device: torch.device):
        inert = np.array([name in inert_species(gas) for name in gas.species_names])
        self.lam, self.dt_s = lam, dt_s
        self.has_inert = bool(inert.any())
        self.inert = torch.as_tensor(inert, device=device)
        self.reactive = (~self.inert).to(torch.float64)
        a, products = element_tables(gas, inert, device)
        self.element_matrix, self.element_matrix_t = a, a.T.contiguous()
        self.element_products = products
        self.thermo = Nasa7(gas, device)

    def advance(self, states: torch.Tensor, rate: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states' [n, 2+ns], ok [n] bool)``: one step of ``states`` (float64) with ``rate``
        d BCT(Y)/dt ``[n, ns]`` (1/s), differentiable in both; a row not ``ok`` (Y' or T' not
        finite, T' not converged) is not to be followed further."""
        t, p, y = temperature(states), pressure(states), mass_fractions(states)
        y_new = box_cox_inverse(_floored_box_cox(y, self.lam) + self.dt_s * rate, self.lam)
        if self.has_inert:
            y_new = torch.where(self.inert, y, y_new)
        y_new = project_elements(y, y_new, self.element_matrix, self.element_matrix_t,
                                 self.element_products, self.reactive, self.has_inert)
        y_new = renormalise(y, y_new, self.inert, self.reactive, self.has_inert)
        t_new, converged = self.thermo.temperature(self.thermo.enthalpy(t, y), y_new, t)
        ok = converged & torch.isfinite(t_new) & torch.isfinite(y_new).all(dim=1)
        return join_states(t_new, p, y_new), ok


def soft_encode(z: torch.Tensor, transform: dict | None) -> torch.Tensor:
    """The one-step targets' encoding (:func:`~kinetics.networks.transforms.encode_output`) with
    the signed power softened below :data:`SOFT_ORIGIN` of the scale, sign(z)·((|z| + ε)^λ −
    ε^λ)/λ, so that its slope at 0 stays finite (ε^(λ−1): 100 at λ = 1/2) where the rollout is
    differentiated through it."""
    if transform and transform.get("type") == "signed_power":
        lam = transform["lambda"]
        return torch.sign(z) * ((z.abs() + SOFT_ORIGIN) ** lam - SOFT_ORIGIN ** lam) / lam
    return z


def rollout_loss(net: torch.nn.Module, windows: np.ndarray, objective, step: ModelStep
                 ) -> torch.Tensor:
    """The rollout term of windows ``[n, k+1, 2+ns]`` (float64 states s_0 … s_k): the mean over
    j = 1 … k of the L1 distance, in the network's output scale, between the mean rate of the
    network's own rollout from s_0 over its first j steps, (BCT(Ŷ_j) − BCT(Y_0))/(j·dt), and
    Cantera's, (BCT(Y_j) − BCT(Y_0))/(j·dt), each scaled as the targets and encoded by
    :func:`soft_encode`, the outputs weighted as the one-step loss weights them. Differentiated
    through the states (back-propagation through the k steps). ``objective`` holds the
    scales (``_Objective``). A row whose step fails stops counting from that step on."""
    steps = windows.shape[1] - 1
    dev = step.inert.device
    truth = torch.as_tensor(windows, dtype=torch.float64, device=dev)
    lam, dt_s = step.lam, step.dt_s
    transform = objective.transform
    weights = objective.output_weights
    b0 = box_cox(mass_fractions(truth[:, 0]), lam)
    own = truth[:, 0]
    alive = torch.ones(len(own), dtype=torch.bool, device=dev)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for j in range(1, steps + 1):
        t, p, y = temperature(own), pressure(own), mass_fractions(own)
        x = join_states(t, log_pressure(p), _floored_box_cox(y, lam))
        out = net(((x - objective.x_mean) / objective.x_std).float())
        rate = decode_output(out.double(), transform) * objective.r_std + objective.r_mean
        nxt, ok = step.advance(own, rate)
        alive = alive & ok
        own = torch.where(alive[:, None], nxt, truth[:, j])  # a failed row goes on from Cantera's
        scale = j * dt_s
        z_own = ((_floored_box_cox(mass_fractions(own), lam) - b0) / scale - objective.r_mean) \
            / objective.r_std
        z_true = ((box_cox(mass_fractions(truth[:, j]), lam) - b0) / scale - objective.r_mean) \
            / objective.r_std
        error = (soft_encode(z_own, transform) - soft_encode(z_true, transform)).abs()
        if weights is not None:
            error = error * weights
        total = total + (error.mean(dim=1) * alive).sum() / alive.sum().clamp(min=1)
    return (total / steps).float()


def _floored_box_cox(y: torch.Tensor, lam: float) -> torch.Tensor:
    """Box-Cox of ``y``, its value exact and its derivative that of Y floored at
    :data:`Y_FLOOR` (none below it): y^λ's slope is infinite at 0."""
    floored = box_cox(torch.clamp(y, min=Y_FLOOR), lam)
    return box_cox(y.detach(), lam) + (floored - floored.detach())


class RolloutTerm:
    """The rollout loss as a training run adds it: ``weight`` × :func:`rollout_loss` on
    ``batch_windows`` training windows drawn at random per optimiser step, and on every
    validation window for the validation loss."""

    def __init__(self, windows: RolloutWindows, step: ModelStep, weight: float,
                 batch_windows: int):
        self.train = windows.select(~windows.is_val)
        self.val = windows.select(windows.is_val)
        self.step = step
        self.weight = weight
        self.batch_windows = batch_windows

    def training_loss(self, net: torch.nn.Module, objective, rng: np.random.Generator
                      ) -> torch.Tensor | None:
        """The weighted loss of one batch of training windows (None when there are none)."""
        if len(self.train) == 0:
            return None
        index = rng.integers(0, len(self.train), self.batch_windows)
        return self.weight * rollout_loss(net, self.train.batch(index), objective, self.step)

    @torch.no_grad()
    def validation_loss(self, model: torch.nn.Module, objective) -> float | None:
        """The weighted mean loss over the validation windows (None when there are none)."""
        if len(self.val) == 0:
            return None
        total, count = 0.0, 0
        chunk = max(8 * self.batch_windows, 1)
        for first in range(0, len(self.val), chunk):
            index = np.arange(first, min(first + chunk, len(self.val)))
            loss = rollout_loss(model, self.val.batch(index), objective, self.step)
            total += float(loss) * len(index)
            count += len(index)
        return self.weight * total / count

__all__ = ["CHAIN_RTOL", "ModelStep", "RolloutTerm", "RolloutWindows", "read_windows", "rollout_loss"]
