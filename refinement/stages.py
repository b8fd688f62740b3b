"""The stages of a round, each a function ``(fresh) → (outputs, figures)`` for
:meth:`refinement.workdir.WorkDir.run_stage`:

- :func:`replay`: the replay dataset (``DIR/replay.h5``) from the config's sampling recipes (or a
  copy of its dataset), once;
- :func:`harvest`: the previous round's dataset copied to ``round-K/data.h5`` and the states the
  previous model's runs visited appended to it, labelled by Cantera with perturbed and
  equilibrium-approach rows spread around them (``run_sampling``, the ``solver_states`` source);
- :func:`train_network`: one network (main, tail or induction) fine-tuned from the previous
  model (``init_from`` + ``init_scales``), or trained afresh with ``retrain``;
- :func:`evaluate`: the round's model on the harvest and validation cases, against their ODE
  references, and the harvest cases' states for the next round.

Sampling and training resume their own partial work (a journal, a checkpoint); a stage started
``fresh`` removes what a start from other inputs left.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechanisms.errors import DeepkinError, InputError
from refinement.config import FlameCase, RefineConfig, ZeroDSet
from refinement.workdir import WorkDir, file_digest

RUN_TIMEOUT_S = 4 * 3600.0  # one OpenFOAM run (an ODE reference of a GRI-3.0 flame: 10-40 min)
ZERO_D_STATES = "zero-d.states.h5"


@dataclass
class Context:
    """What every stage needs: the config, the work folder, the starting model's mechanism,
    dt and streams, and whether to draw progress bars."""

    config: RefineConfig
    work: WorkDir
    mechanism_sha256: str
    dt_s: float
    fuel: str
    oxidizer: str
    progress: bool = True


def _remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _journal(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def _workers(ctx: Context) -> int:
    workers = ctx.config.harvest_workers
    return workers if workers is not None else (os.cpu_count() or 1)


def _run_is_done(path: Path, config, run_index: int) -> bool:
    """Whether ``path`` holds run ``run_index`` of sampling ``config``, finished."""
    from mechanisms.dataset_file import dataset_facts

    if not path.is_file() or _journal(path).exists():
        return False
    runs = dataset_facts(path).runs
    return len(runs) > run_index and runs[run_index].get("complete") is True and \
        runs[run_index].get("config") == config.to_dict()


# -- replay -----------------------------------------------------------------------------------
def replay(ctx: Context, fresh: bool) -> tuple[list[Path], dict[str, Any]]:
    """``DIR/replay.h5``: the config's dataset copied, or its recipes sampled one after the
    other (the second and later appended)."""
    from mechanisms.dataset_file import dataset_facts
    from sampling.config import SamplingConfig
    from sampling.pipeline import run_sampling

    out = ctx.work.replay
    cfg = ctx.config
    if fresh and not _holds_recipes(out, cfg.replay_recipes):
        _remove(out, _journal(out))
    if cfg.replay_dataset is not None:
        if not cfg.replay_dataset.is_file():
            raise InputError(f"replay.dataset: file '{cfg.replay_dataset}' not found")
        ctx.work.copy(cfg.replay_dataset, out)
    else:
        for i, recipe in enumerate(cfg.replay_recipes):
            sampling = SamplingConfig.from_yaml(recipe)
            if _run_is_done(out, sampling, i):
                continue
            run_sampling(sampling, out, workers=_workers(ctx), append=i > 0,
                         progress=ctx.progress, log=ctx.work.log)
    facts = dataset_facts(out)
    _check_dataset(ctx, facts, "replay")
    return [out], {"rows": facts.n_rows}


def _holds_recipes(path: Path, recipes: list[Path]) -> bool:
    """Whether ``path`` holds only finished runs of ``recipes``, in their order: a replay
    dataset sampled beforehand by hand (``deepkin sample -c RECIPE -o DIR/replay.h5``, the
    second recipe ``--append``ed) that a fresh replay stage keeps instead of sampling again."""
    from mechanisms.dataset_file import dataset_facts
    from sampling.config import SamplingConfig

    if not recipes or not path.is_file() or _journal(path).exists():
        return False
    try:
        runs = dataset_facts(path).runs
    except (DeepkinError, OSError):  # not a dataset file (or unreadable): sampled again
        return False
    return 0 < len(runs) <= len(recipes) and all(
        _run_is_done(path, SamplingConfig.from_yaml(recipes[i]), i) for i in range(len(runs)))


def _check_dataset(ctx: Context, facts, where: str) -> None:
    if facts.mechanism_sha256 != ctx.mechanism_sha256:
        raise InputError(f"{where}: {facts.path} holds rows of another mechanism "
                         f"({facts.mechanism_source}) than the model's")
    if abs(facts.dt_s - ctx.dt_s) > 1e-12 * ctx.dt_s:
        raise InputError(f"{where}: {facts.path} holds labels of dt {facts.dt_s:g} s, the model "
                         f"steps {ctx.dt_s:g} s")


# -- harvest ----------------------------------------------------------------------------------
def harvest(ctx: Context, k: int, base: Path, states_files: list[Path], fresh: bool
            ) -> tuple[list[Path], dict[str, Any]]:
    """``round-K/data.h5``: ``base`` (the replay dataset or the previous round's) with one more
    run, the harvest recipe on ``states_files`` (seed: the recipe's + K)."""
    from mechanisms.dataset_file import dataset_facts
    from sampling.config import SamplingConfig
    from sampling.pipeline import run_sampling

    out = ctx.work.round_dir(k) / "data.h5"
    if fresh:
        _remove(out, _journal(out))
    if not states_files:
        raise InputError(f"harvest: round {k - 1}'s runs left no states to harvest (every flame "
                         "stopped before its first write and no 0D grid was harvested)")
    recipe = SamplingConfig.from_yaml(ctx.config.harvest_recipe)
    sampling = recipe.with_overrides({
        "seed": recipe.seed + k,
        "solver_states": {**recipe.to_dict()["solver_states"],
                          "files": [str(p) for p in states_files]}})
    base_runs = len(dataset_facts(base).runs)
    if not out.exists() and not _journal(out).exists():
        ctx.work.copy(base, out)
    if not _run_is_done(out, sampling, base_runs):
        run_sampling(sampling, out, workers=_workers(ctx), append=True, progress=ctx.progress,
                     log=ctx.work.log)
    facts = dataset_facts(out)
    _check_dataset(ctx, facts, "harvest")
    added = facts.runs[base_runs].get("summary", {}).get("rows_per_source", {})
    return [out], {"rows": facts.n_rows, "rows_added": {s: n for s, n in added.items() if n},
                   "states_files": [ctx.work.relative(p) for p in states_files]}


def reference_states(ctx: Context) -> list[Path]:
    """The states of the harvest flames' ODE reference runs (``harvest.reference_states``), one
    states file per flame in ``DIR/reference-states/`` (extracted once, named by the reference's
    cache key; the times after the case's ``from_time_s``): the states the true flame visits,
    which the surrogate's own runs may never reach (docs/training.md, "The ch4-air loop, run").
    InputError when a reference has not been computed (round 0's evaluation computes them)."""
    from couplers.openfoam.flame_runs import RESULT_FILE
    from refinement.cases import flame_states
    from refinement.references import flame_reference_folder

    out_dir = ctx.work.root / "reference-states"
    files = []
    for case in ctx.config.harvest.flames:
        folder = flame_reference_folder(ctx.work.references, case, case.fuel or ctx.fuel,
                                        case.oxidizer or ctx.oxidizer, ctx.mechanism_sha256,
                                        ctx.dt_s, ctx.config.heat_release_band_k)
        if not (folder / RESULT_FILE).is_file():
            raise InputError(f"harvest.reference_states: the ODE reference of {case.label} is not "
                             f"computed ({folder}); round 0's evaluation computes it")
        out = out_dir / f"{folder.name}.states.h5"
        if not out.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            if flame_states(folder, case.from_time_s, out) is None:
                continue
        files.append(out)
    return files


# -- training ---------------------------------------------------------------------------------
def network_outputs(ctx: Context, k: int) -> dict[str, Path]:
    """``{network: its file}`` of round ``k``, in training order; the last is the round's
    model."""
    networks = list(ctx.config.train.paths())
    folder = ctx.work.round_dir(k)
    return {n: ctx.work.model(k) if i == len(networks) - 1 else folder / f"{n}.safetensors"
            for i, n in enumerate(networks)}


def train_network(ctx: Context, k: int, network: str, dataset: Path, previous: Path,
                  fresh: bool) -> tuple[list[Path], dict[str, Any]]:
    """Train round ``k``'s ``network`` on ``dataset``: its config with the overrides, added to
    this round's previous network (``tail_of``), started from ``previous``'s network of the same
    kind with its scales (unless ``retrain`` or ``previous`` has none)."""
    from kinetics.model.model_file import read_model_file
    from kinetics.training.checkpoint import checkpoint_path
    from kinetics.training.train import TrainConfig, train
    from mechanisms.config_file import read_yaml_mapping

    settings = ctx.config.train
    outputs = network_outputs(ctx, k)
    order = list(outputs)
    out = outputs[network]
    log_csv = out.with_name(out.stem + ".log.csv")
    ckpt = checkpoint_path(out)
    if fresh:
        _remove(out, ckpt, log_csv)
    raw = {**read_yaml_mapping(settings.paths()[network], f"train.{network}"),
           **settings.settings_for(network)}
    raw.pop("init_from", None)
    raw.pop("init_scales", None)
    if network != "main":
        raw["tail_of"] = str(outputs[order[order.index(network) - 1]])
    meta = read_model_file(previous)[0]
    has_network = network == "main" or getattr(meta, network) is not None
    if not ctx.config.retrain and has_network:
        raw["init_from"], raw["init_scales"] = str(previous), True
    config = TrainConfig.from_dict(raw)
    result = train(dataset, out, config, device=settings.device, resume=ckpt.is_file(),
                   progress=ctx.progress, log_csv=log_csv)
    return [out], {"best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
                   "rows_train": result.n_train, "rows_val": result.n_val,
                   "init_from": ctx.work.relative(previous) if "init_from" in raw else None}


# -- evaluation -------------------------------------------------------------------------------
class _LazyServer:
    """A ``deepkin serve`` of the round's model, started on first use (only by a flame that runs
    with the service: ``evaluate.chemistry: deepkin``)."""

    def __init__(self, ctx: Context, k: int, model: Path):
        self.ctx, self.k, self.model = ctx, k, model
        self.server = None
        self.served: Path | None = None

    def served_model(self) -> Path:
        """The round's model as the server serves it (``refine-rK``)."""
        if self.served is None:
            folder = self.ctx.work.round_dir(self.k) / "serve"
            self.served = folder / f"refine-r{self.k}.safetensors"
            if not self.served.is_file() or file_digest(self.served) != file_digest(self.model):
                self.ctx.work.copy(self.model, self.served)
        return self.served

    def start(self):
        from refinement.serving import ModelServer

        if self.server is None:
            self.served_model()
            self.server = ModelServer(self.served.parent,
                                      self.ctx.work.round_dir(self.k) / "evaluate" / "serve.log",
                                      threads=self.ctx.config.serve_threads).start()
            self.ctx.work.log(f"r{self.k}/evaluate: serving {self.served.name} at "
                              f"{self.server.url}")
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def evaluate(ctx: Context, k: int, model: Path, fresh: bool) -> tuple[list[Path], dict[str, Any]]:
    """Round ``k``'s model on every case: the harvest cases (their states kept in
    ``round-K/states/`` for round K + 1) and the validation cases, each against its ODE
    reference; the figures of both sets."""
    from tqdm import tqdm

    from refinement.cases import flame_states

    folder = ctx.work.round_dir(k) / "evaluate"
    states_dir = ctx.work.round_dir(k) / "states"
    if fresh:
        _remove(folder, states_dir, ctx.work.round_dir(k) / "serve")
    folder.mkdir(parents=True, exist_ok=True)
    states_dir.mkdir(parents=True, exist_ok=True)
    cfg = ctx.config
    items: list[tuple[str, FlameCase | ZeroDSet]] = [
        *(("harvest", c) for c in cfg.harvest.flames),
        *(("validation", c) for c in cfg.validation.flames),
        *((name, s.zero_d) for name, s in (("harvest", cfg.harvest), ("validation", cfg.validation))
          if s.zero_d is not None)]
    figures: dict[str, Any] = {"harvest": {"flames": []}, "validation": {"flames": []}}
    states: list[Path] = []
    server = _LazyServer(ctx, k, model)
    # in-process: the round's own model file is what each case exports (no served copy)
    _flame_references(ctx, model if cfg.in_process else server.served_model())
    try:
        for which, item in tqdm(items, desc=f"round {k} cases", unit="case",
                                disable=not ctx.progress):
            if isinstance(item, FlameCase):
                case_dir = folder / which / item.label
                figures[which]["flames"].append(_flame(ctx, k, item, case_dir, server, model))
                harvested = states_dir / f"{item.label}.states.h5"
                if which == "harvest" and not harvested.is_file():
                    flame_states(case_dir, item.from_time_s, harvested)
                states += [harvested] if which == "harvest" and harvested.is_file() else []
            else:
                out = states_dir / ZERO_D_STATES if which == "harvest" else None
                figures[which]["zero_d"] = _zero_d(ctx, item, model, folder / f"{which}-zero-d",
                                                   out)
                states += [out] if out else []
    finally:
        server.stop()
    return [folder, *states], figures


def _flame_references(ctx: Context, served: Path) -> None:
    """Every flame case's ODE reference, the missing ones computed side by side (cached)."""
    from refinement.references import flame_references

    cfg = ctx.config
    flame_references(ctx.work.references, [*cfg.harvest.flames, *cfg.validation.flames], served,
                     ctx.fuel, ctx.oxidizer, ctx.mechanism_sha256, ctx.dt_s,
                     cfg.heat_release_band_k, RUN_TIMEOUT_S, workers=cfg.reference_workers,
                     progress=ctx.progress, log=ctx.work.log)


def _flame(ctx: Context, k: int, case: FlameCase, case_dir: Path, server: _LazyServer,
           model: Path) -> dict[str, Any]:
    """One flame of the round's model and its ODE reference, compared. With
    ``evaluate.chemistry: deepkin`` the flame calls ``server`` (started here when the flame is
    not cached); with ``deepkin-inprocess`` ``model`` is exported into the case
    (``constant/deepkin-model.pt``, precision ``auto`` as the service resolves it, one libtorch
    thread) and no server is started."""
    from couplers.openfoam.flame_runs import RESULT_FILE
    from refinement.cases import flame_figures, run_flame
    from refinement.references import flame_reference

    fuel = case.fuel or ctx.fuel
    oxidizer = case.oxidizer or ctx.oxidizer
    band = ctx.config.heat_release_band_k
    in_process = ctx.config.in_process
    stepped = model if in_process else server.served_model()
    reference = flame_reference(ctx.work.references, case, stepped, fuel, oxidizer,
                                ctx.mechanism_sha256, ctx.dt_s, band, RUN_TIMEOUT_S)
    url = token = None  # cached or in-process: no server needed
    if not (case_dir / RESULT_FILE).is_file():
        if not in_process:
            live = server.start()
            url, token = live.url, live.token
        ctx.work.log(f"r{k}/evaluate: running {case.label}"
                     + (" (in-process)" if in_process else ""))
    run = run_flame(case, case_dir, stepped, ctx.config.evaluate_chemistry, url, token, band,
                    RUN_TIMEOUT_S, fuel=fuel, oxidizer=oxidizer)
    return flame_figures(case, run, reference)


def _zero_d(ctx: Context, grid: ZeroDSet, model: Path, out_dir: Path, states_out: Path | None
            ) -> dict[str, Any]:
    """The 0D rollouts of ``grid`` against Cantera's cached references."""
    from kinetics.model.model_file import read_model_file
    from mechanisms.loading import solution_from_yaml
    from refinement.cases import run_zero_d, zero_d_figures
    from refinement.references import zero_d_reference

    workers = ctx.config.zero_d_workers or os.cpu_count() or 1
    result = run_zero_d(model, ctx.fuel, ctx.oxidizer, grid, out_dir, states_out, ctx.progress,
                        workers=workers, small_calls=ctx.config.zero_d_small_calls)
    meta, _, yaml_text = read_model_file(model)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    references = [zero_d_reference(ctx.work.references, gas, ctx.fuel, ctx.oxidizer,
                                   ctx.mechanism_sha256, c["temperature_k"], c["pressure_atm"],
                                   c["phi"], c.get("end_time_s", result["end_time_s"]))
                  for c in result["conditions"]]
    return zero_d_figures(result, references)
