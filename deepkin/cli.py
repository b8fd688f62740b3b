"""The ``deepkin`` command line."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from kinetics.model.precisions import INFERENCE_PRECISIONS
from mechanisms.errors import DeepkinError, StorageError

# The networks' precisions (kinetics.step.forward.NETWORK_PRECISIONS' names, from a module without
# torch: the command line starts without it).
PRECISION_NAMES = list(INFERENCE_PRECISIONS)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise DeepkinError(f"threads: must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="deepkin")
def cli() -> None:
    """deepkin: datasets, DNN chemistry integrators and mechanism reduction on Cantera."""


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML file with any of the options below (flags override it).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Dataset file (HDF5) to write.")
@click.option("--mechanism", help="Cantera mechanism: a shipped name (h2o2.yaml, gri30.yaml) or a path.")
@click.option("--phase", help="Phase name inside the mechanism file (e.g. nDodecane_IG).")
@click.option("--fuel", help="Fuel composition (mole basis), e.g. 'CH4:1' or 'H2:1'.")
@click.option("--oxidizer", help="Oxidiser composition (mole basis), e.g. 'O2:1,N2:3.76'.")
@click.option("--phi", help="Equivalence ratios: '0.5,1,2' or 'start:stop:count'.")
@click.option("--T0", "--temperature-k", "temperature_k",
              help="Initial temperatures of the autoignition cases in K: '1000,1200' or 'start:stop:count'.")
@click.option("--pressure-atm", help="Pressures in atm: '1,5,20' or 'start:stop:count'.")
@click.option("--rows", "rows", multiple=True, metavar="SOURCE=N",
              help="Rows of one source (autoignition, free_flame, counterflow, solver_states, "
                   "multiscale, perturbed, emcs, equilibrium, rollout); repeat the option for "
                   "several.")
@click.option("--solver-states", "solver_states", multiple=True, type=click.Path(dir_okay=False),
              help="A states file of a flow solver's run (deepkin openfoam states) for the "
                   "solver_states rows; repeat for several (replaces solver_states.files).")
@click.option("--rollout-steps", type=int,
              help="Consecutive labelled steps per trajectory of the rollout rows (rollout.steps, "
                   "default 8).")
@click.option("--dt", type=float, help="Label step in s (default 1e-6).")
@click.option("--seed", type=int, help="Random seed; the same seed gives identical arrays.")
@click.option("--task-rows", type=int, help="Rows per parallel task of the sampled sources.")
@click.option("--workers", type=int, default=None,
              help="Local worker processes (default: all cores; 0 runs in this process).")
@click.option("--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--append", is_flag=True,
              help="Add a new run to an existing dataset of the same mechanism and dt.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def sample(config_path, output, mechanism, phase, fuel, oxidizer, phi, temperature_k, pressure_atm,
           rows, solver_states, rollout_steps, dt, seed, task_rows, workers, scheduler, overwrite,
           append, quiet) -> None:
    """Generate a labelled dataset: manifold cases, a solver's own states, multi-scale,
    perturbed, EMCS and equilibrium-approach samples, and trajectories of consecutive steps
    (rollout rows, for the training's rollout loss).

    Each state is advanced by dt in an adiabatic constant-pressure Cantera reactor. A run that is
    interrupted resumes when the same command is run again.
    """
    from sampling.config import SamplingConfig, parse_rows, parse_values
    from sampling.journal import Journal
    from sampling.pipeline import run_sampling

    if overwrite and append:
        raise DeepkinError("--overwrite and --append exclude each other")
    if workers is not None and workers < 0:
        raise DeepkinError(f"workers: must be >= 0, got {workers}")
    base = SamplingConfig.from_yaml(config_path) if config_path else SamplingConfig()
    overrides = {k: v for k, v in {
        "mechanism": mechanism, "phase": phase, "fuel": fuel, "oxidizer": oxidizer,
        "dt": dt, "seed": seed, "task_rows": task_rows,
    }.items() if v is not None}
    for key, text in (("phi", phi), ("temperature_k", temperature_k), ("pressure_atm", pressure_atm)):
        if text is not None:
            overrides[key] = parse_values(text, key)
    if rows:
        overrides["rows"] = parse_rows(rows)
    if solver_states:
        overrides["solver_states"] = {**base.to_dict()["solver_states"],
                                      "files": list(solver_states)}
    if rollout_steps is not None:
        overrides["rollout"] = {**dataclasses.asdict(base.rollout), "steps": rollout_steps}
    config = base.with_overrides(overrides) if overrides else base
    if workers is None and not scheduler:
        workers = os.cpu_count() or 1
    try:
        summary = run_sampling(config, output, workers=workers, scheduler=scheduler,
                               overwrite=overwrite, append=append, progress=not quiet)
    except StorageError as exc:
        journal = Journal.for_output(Path(output)).directory
        raise StorageError(f"{exc}; every finished task is kept in {journal}: make room and "
                           "rerun the same command to finish the dataset") from None
    rate = summary.rows_computed / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(f"wrote {summary.n_rows} rows to {output} in {summary.seconds:.1f} s "
               f"({rate:.0f} rows/s computed this session)")
    for name, count in summary.rows_per_source.items():
        if count:
            click.echo(f"  {name:<12}{count:>10}")
    for line in summary.failed_tasks:
        click.echo(f"  failed task {line}", err=True)
    if summary.partial_tasks:
        click.echo(f"  {len(summary.partial_tasks)} task(s) partial (see `deepkin dataset info`)",
                   err=True)


@cli.group()
def dataset() -> None:
    """Inspect and check dataset files."""


@dataset.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def dataset_info(path: str, as_json: bool) -> None:
    """Rows per source, species, T/P/Y ranges, dt and size of a dataset file (after the cheap
    checks of `deepkin dataset check`)."""
    from dataclasses import asdict

    from mechanisms.dataset_check import verified_facts
    from mechanisms.dataset_file import summarise_dataset

    verified_facts(path)
    summary = summarise_dataset(path)
    if as_json:
        data = asdict(summary)
        data.pop("attrs")
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(summary.format())


@dataset.command("check")
@click.argument("path", type=click.Path())
@click.option("--full", is_flag=True,
              help="Also read every row: finite values, sum of Y, T and P ranges, source codes, "
                   "every chunk decodable (streams the file in blocks).")
def dataset_check(path: str, full: bool) -> None:
    """Verify every invariant the dataset writer guarantees: attributes, task records (and the
    run journal beside the file), the embedded mechanism, shapes; with --full every row.

    Exit 0 when the file is sound; 1 with one `error:` line per problem.
    """
    from mechanisms.dataset_check import check_dataset
    from sampling.journal import Journal

    report = check_dataset(path, full=full,
                           journal_rows=Journal.for_output(Path(path)).row_counts())
    if report.problems:
        for problem in report.problems:
            click.echo(f"error: dataset: {path}: {problem}", err=True)
        sys.exit(1)
    scope = (f"every invariant, all {report.n_rows} rows read" if full else
             f"attributes, tasks, mechanism and shapes ({report.n_rows} rows; --full reads them)")
    click.echo(f"{path}: sound: {scope}")


@cli.command("train")
@click.argument("dataset", type=click.Path())
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Training settings (YAML); see docs/training.md.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (safetensors); the best epoch by validation loss.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--epochs", type=int, help="Override the number of epochs (>= 1).")
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt.")
@click.option("--allow-incomplete", is_flag=True,
              help="Train on a dataset whose sampling run did not finish (refused by default).")
@click.option("--threads", type=int, help="CPU threads for torch (1 is fastest on a busy machine).")
@click.option("--log", "log_csv", type=click.Path(dir_okay=False),
              help="CSV log (default: OUT stem + .log.csv).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_cmd(dataset, config_path, out, device, epochs, resume, allow_incomplete, threads, log_csv,
              quiet) -> None:
    """Train a DNN chemistry integrator on DATASET (an HDF5 file of `deepkin sample`).

    Several GPUs: torchrun --nproc_per_node N -m deepkin train ...
    """
    from kinetics.training.train import TrainConfig, train

    _set_threads(threads)
    config = TrainConfig.from_yaml(config_path)
    if epochs is not None:
        config.epochs = epochs
        config.check()
    result = train(dataset, out, config, device=device, resume=resume, progress=not quiet,
                   log_csv=log_csv, allow_incomplete=allow_incomplete)
    if not Path(result.model_path).is_file():
        raise DeepkinError(f"out: training ended but {result.model_path} does not exist")
    loss = "validation loss" if result.n_val else "training loss (no validation rows)"
    click.echo(f"best {loss} {result.best_val_loss:.5g} after {result.epochs_run} epoch(s) "
               f"this session, {result.seconds:.0f} s; model: {result.model_path}")


@cli.command("validate")
@click.argument("model")
@click.option("--fuel", help="Fuel (default: the one the model's dataset used).")
@click.option("--oxidizer", help="Oxidiser (default: the one the model's dataset used).")
@click.option("--T0", "--temperature-k", "temperature_k", default="1000,1200,1400", show_default=True)
@click.option("--pressure-atm", default="1,5,20", show_default=True)
@click.option("--phi", default="0.5,1,2", show_default=True)
@click.option("--steps", default=10000, show_default=True, help="Length of the long rollout.")
@click.option("--ignition-search-s", default=0.2, show_default=True, type=float,
              help="How long (s) Cantera looks for ignition; the rollout covers twice the slowest "
                   "delay found.")
@click.option("--after-ignition", "after_ignition",
              help="Species compared some time after each side's own ignition, e.g. 'CO,NO' "
                   "(default: CO and NO where the mechanism has them; 'none' for none).")
@click.option("--after-ignition-s", default=0.01, show_default=True, type=float,
              help="How long after ignition (s) those species are compared.")
@click.option("-o", "--out", "out_dir", default="validation", show_default=True, type=click.Path(),
              help="Directory for report.md, report.json and the PNG plots.")
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", *PRECISION_NAMES]), default="auto",
              show_default=True, help="The networks' dtype; auto: the model's validated one where "
                                      "the CPU multiplies it natively, else float32.")
@click.option("--small-calls", type=click.Choice(["auto", "torchscript", "aot"]), default="auto",
              show_default=True,
              help="What steps the rollout's calls (a few cells each): the TorchScript step, or "
                   "the same step compiled by AOTInductor (~2x faster a call; compiled once, "
                   "~1 min and a C++ compiler, then cached; CPU only). auto: the compiled step "
                   "when it is cached, or for a rollout of 300,000 steps or more (compiled then, "
                   "where there is a C++ compiler).")
@click.option("--hold-steps", type=int, default=None,
              help="A cell the model hands to Cantera stays there this many steps before the "
                   "model is asked again (default 32; 0: asked every step). The held steps are "
                   "Cantera's and are reported as such.")
@click.option("--check", is_flag=True, help="Exit with code 1 when a target is missed.")
@click.option("--flames", is_flag=True,
              help="Also report the share of the cells of Cantera's premixed (1 and 5 atm; H2: "
                   "phi 0.5-3, other fuels 0.7-1.3) and counterflow flames that the model's "
                   "networks serve (H2: ~1 min; GRI-3.0: ~10 min).")
@click.option("--states-out", type=click.Path(dir_okay=False),
              help="Also write the surrogate's own rollout states (~2000 per condition, evenly "
                   "in time) as a states file, for deepkin sample --solver-states. Use other "
                   "conditions than the validation grid's, or the grid is no longer held out.")
@click.option("--threads", type=int, help="CPU threads for torch (1 is fastest on a busy machine).")
@click.option("-q", "--quiet", is_flag=True)
def validate_cmd(model, fuel, oxidizer, temperature_k, pressure_atm, phi, steps, ignition_search_s,
                 after_ignition, after_ignition_s, out_dir, device, precision, small_calls,
                 hold_steps, check, flames, states_out, threads, quiet) -> None:
    """Validate MODEL (a path or a shipped name) against Cantera: 0D autoignition over a grid
    (and, with --flames, the cells of flames it serves)."""
    _set_threads(threads)
    from kinetics.integrator import Integrator
    from kinetics.model.registry import resolve_model
    from kinetics.validation.validate import ROLLOUT_HOLD_STEPS, validate
    from sampling.config import parse_values

    if hold_steps is None:
        hold_steps = ROLLOUT_HOLD_STEPS
    elif hold_steps < 0:
        raise DeepkinError(f"hold-steps: must be a whole number >= 0, got {hold_steps}")
    integrator = Integrator.load(resolve_model(model), device=device, dtype=precision,
                                 small_calls="torchscript" if small_calls == "auto" else small_calls)
    training = integrator.meta.training
    fuel = fuel or training.get("fuel")
    oxidizer = oxidizer or training.get("oxidizer")
    if not fuel or not oxidizer:
        raise DeepkinError("fuel/oxidizer: the model does not record them; pass --fuel and --oxidizer")
    if steps < 1:
        raise DeepkinError("steps: must be >= 1")
    if not ignition_search_s > 0 or ignition_search_s > 10:
        raise DeepkinError(f"ignition-search-s: must be in (0, 10] s, got {ignition_search_s:g}")
    report = validate(integrator, fuel, oxidizer, parse_values(temperature_k, "temperature_k"),
                      parse_values(pressure_atm, "pressure_atm"), parse_values(phi, "phi"),
                      rollout_steps=steps, out_dir=out_dir, progress=not quiet, flames=flames,
                      ignition_search_s=ignition_search_s, after_ignition_s=after_ignition_s,
                      after_ignition_species=_species_list(after_ignition),
                      states_out=states_out, hold_steps=hold_steps,
                      small_calls="auto" if small_calls == "auto" else None)
    for label in report.outside_domain:
        click.echo(f"  note: {label} never entered the model's domain (Cantera took every step); "
                   "left out of the figures", err=True)
    if len(report.outside_domain) == len(report.conditions):
        raise DeepkinError("validate: no condition entered the model's domain, so nothing was "
                           f"validated; report in {out_dir}/report.md")
    for name, ok in report.passed.items():
        click.echo(f"  {name:<15} {'pass' if ok else 'FAIL'}")
    click.echo(f"IDT error max {100 * report.idt_max_rel:.2f} %, mean {100 * report.idt_mean_rel:.2f} % "
               f"(against adaptive Cantera {100 * report.idt_max_rel_continuous:.2f} % / "
               f"{100 * report.idt_mean_rel_continuous:.2f} %, where Cantera itself on the step "
               f"grid scores {100 * report.grid_idt_max_rel:.2f} %); equilibrium "
               f"{report.equilibrium_max_k:.2f} K; fallback "
               f"{100 * report.fallback_fraction:.2f} % of cell-steps; networks in "
               f"{report.precision}; report in {out_dir}/report.md")
    if check and not all(report.passed.values()):
        sys.exit(1)


@cli.command("refine")
@click.argument("model")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Refinement config (YAML): cases, recipes, training configs, targets; see "
                   "docs/training.md, \"The refinement loop\".")
@click.option("--work", "work_dir", type=click.Path(file_okay=False),
              help="Work folder; a killed run resumes there (default ~/.cache/deepkin/refine/NAME).")
@click.option("--rounds", type=int, default=None,
              help="Rounds to run at most, instead of the config's (not part of the recipe: "
                   "raise it to go on with a finished run).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or progress lines.")
def refine_cmd(model, config_path, work_dir, rounds, quiet) -> None:
    """Refine MODEL (a path or shipped name) on the states its own runs visit: run the cases,
    harvest and label their states, fine-tune the networks, repeat; every stage resumable."""
    from refinement import load_refine_config, run_refinement

    if rounds is not None and rounds < 1:
        raise DeepkinError(f"rounds: must be a whole number >= 1, got {rounds}")
    config = load_refine_config(config_path)
    if rounds is not None:
        config = dataclasses.replace(config, rounds=rounds)
    summary = run_refinement(model, config, work_dir, progress=not quiet,
                             echo=None if quiet else (lambda line: click.echo(line, err=True)))
    last = summary.last
    met = {True: "met", False: "missed", None: "not judged (no validation cases)"}
    click.echo(f"{len(summary.outcomes) - 1} round(s); validation targets "
               f"{met[last.targets_met]} in round {last.round}; {summary.stopped}")
    click.echo(f"best: round {summary.best_round} -> {summary.best_model}; report in "
               f"{summary.work_dir / 'rounds.md'}")


@cli.command("refine-status")
@click.argument("work_dir", required=False, metavar="[DIR]")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def refine_status_cmd(work_dir, as_json) -> None:
    """Where the refinement run in work folder DIR stands, read from its files: whether a run
    holds it now, the rounds evaluated with their headline errors, the stage running, its
    progress, and an estimate of when the round ends. DIR may also be a plain name (a folder of
    ~/.cache/deepkin/refine); without DIR, every work folder there.

    Exit 2 with one line when DIR is not a refine work folder.
    """
    from mechanisms.errors import InputError
    from refinement.config import default_work_dir
    from refinement.status import format_status, read_status, work_folders

    if work_dir is None:
        parent = default_work_dir("x").parent
        folders = work_folders(parent)
        if not folders:
            _fail(f"work: no refine work folders in {parent}", 2)
    else:
        named = Path(work_dir)
        plain = not named.exists() and named.name == work_dir and not work_dir.startswith(".")
        folders = [default_work_dir(work_dir) if plain else named]
    try:
        statuses = [read_status(folder) for folder in folders]
    except InputError as exc:
        _fail(str(exc), 2)
    if as_json:
        data = [s.as_dict() for s in statuses]
        click.echo(json.dumps(data if work_dir is None else data[0], indent=1))
    else:
        click.echo("\n\n".join(format_status(s) for s in statuses))


def _species_list(text: str | None) -> list[str] | None:
    """``--after-ignition``: None (the default species), [] for 'none', else the names."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [name.strip() for name in text.split(",") if name.strip()]


@cli.group("models")
def models_group() -> None:
    """Shipped and local surrogate models."""


@models_group.command("list")
@click.option("--model-dir", type=click.Path(), help="List the models of this directory instead.")
def models_list(model_dir) -> None:
    """Models with their mechanism, dt and training domain."""
    from kinetics.model.registry import list_models

    entries = list_models(model_dir)
    if not entries:
        click.echo("no models found")
    for entry in entries:
        click.echo(entry.summary())


@models_group.command("set")
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Model file to write: MODEL with the setting changed.")
@click.option("--fallback-below", type=float,
              help="The induction network's resolution floor: its cells whose rates are all "
                   "below this × its own target scale go to Cantera (0: none).")
@click.option("--inference-precision", type=click.Choice(PRECISION_NAMES),
              help="The precision the model is validated in: what --precision auto runs its "
                   "networks in where the CPU multiplies bfloat16 natively (float32 elsewhere).")
def models_set(model, out, fallback_below, inference_precision) -> None:
    """Write MODEL (a path or shipped name) with a setting changed that needs no retraining:
    the induction network's resolution floor, the precision it is validated in. Validate the
    result on the slow induction you care about and on your flames (their served share, their
    speed in the new precision) before use (docs/training.md, "The resolution floor, set after
    training" and "bfloat16 in the hidden layers")."""
    from kinetics.model.settings import change_settings

    meta = change_settings(model, out, fallback_below, inference_precision)
    if fallback_below is not None:
        click.echo(f"wrote {out}: induction cells whose rates are all below "
                   f"{meta.induction['fallback_below']:g} × the induction network's scale go to "
                   "Cantera")
    if inference_precision is not None:
        click.echo(f"wrote {out}: validated in {meta.inference_precision} (auto runs its networks "
                   f"in {meta.inference_precision} where the CPU multiplies bfloat16 natively)")


@cli.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="TorchScript file to write (e.g. h2-air.pt).")
@click.option("--precision", type=click.Choice(PRECISION_NAMES), default="float32",
              show_default=True, help="The networks' dtype in the file (bfloat16 only for a model "
                                      "validated in it, on CPUs that multiply it natively).")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, or cuda[:N]: the device the file's step runs on.")
def export_cmd(model, output, precision, device) -> None:
    """Write MODEL's chemistry step (a path or a shipped name) as one TorchScript file: the
    networks, the domain check, the element projection and the enthalpy inversion, for libtorch's
    torch::jit::load (the C library's in-process backend) or torch.jit.load."""
    from kinetics.model.registry import resolve_model
    from kinetics.step.compiled_step import export_model

    out = export_model(resolve_model(model), output, precision=precision, device=device)
    click.echo(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, networks in {precision}, "
               f"{device})")


@cli.command("router")
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Model file to write: MODEL with its router set (or removed).")
@click.option("--skip-main-below", type=float,
              help="Cells whose rates, by the main network in bfloat16, are all below this × the "
                   "main target scale skip the float32 main network (at most tail.route_below; "
                   "default half of it).")
@click.option("-d", "--data", "datasets", multiple=True, type=click.Path(dir_okay=False),
              help="Dataset (HDF5) of the model's mechanism to check the router on first; repeat "
                   "for several.")
@click.option("--max-rows", type=int, default=200_000, show_default=True,
              help="Rows drawn from each dataset for the check.")
@click.option("--off", is_flag=True, help="Remove the router instead.")
@click.option("--threads", type=int, help="CPU threads for torch.")
def router_cmd(model, out, skip_main_below, datasets, max_rows, off, threads) -> None:
    """Set MODEL's router (a path or shipped name with a near-equilibrium network): the main
    network runs first in bfloat16, and the cells it finds near equilibrium take the
    near-equilibrium network's rates without the float32 main network. No rate comes from
    bfloat16, only the route. On where bfloat16 multiplies natively (AVX512-BF16, AMX, CUDA);
    check the model in its flames before use (docs/training.md, "The router")."""
    from kinetics.training.router import set_router

    _set_threads(threads)
    if max_rows < 1:
        raise DeepkinError(f"max-rows: must be >= 1, got {max_rows}")
    if off and (skip_main_below is not None or datasets):
        raise DeepkinError("off: removes the router; give no --skip-main-below or --data with it")
    meta, checks = set_router(model, out, skip_main_below, datasets, max_rows, off)
    for check in checks:
        click.echo(check.summary(float(meta.tail["route_below"])))
    if off:
        click.echo(f"wrote {out} without a router")
    else:
        click.echo(f"wrote {out}: cells below {meta.router['skip_main_below']:g} × the main "
                   f"scale by the bfloat16 main network skip the float32 one")


@cli.command("reduce")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="Reduction input file (pyMARS keys plus deepkin's simulation:/deepmr: blocks).")
@click.option("--method", type=click.Choice(["drg", "drgep", "pfa", "deepmr"], case_sensitive=False),
              help="Reduction method (overrides the file's 'method').")
@click.option("-o", "--out", "out_dir", default="reduction", show_default=True, type=click.Path(),
              help="Directory for <method>.yaml, the Chemkin files, the report, the PNGs and the "
                   "JSON summary.")
@click.option("--workers", type=int, default=None,
              help="Local worker processes (default: all cores; 0 runs in this process).")
@click.option("--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache of detailed-mechanism targets (default: ~/.cache/deepkin/reduction).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-step lines.")
def reduce_cmd(input_path, method, out_dir, workers, scheduler, cache_dir, quiet) -> None:
    """Reduce a mechanism (DRG, DRGEP, PFA, each optionally followed by a sensitivity analysis, or
    DeePMR) against ignition-delay, equilibrium-temperature, flame-speed and PSR-extinction targets.

    A killed DeePMR run resumes from OUT/deepmr-checkpoint.* when the same command is run again.
    """
    from mechanisms.reduction import load_reduce_config, run_reduction

    if workers is not None and workers < 0:
        raise DeepkinError(f"workers: must be >= 0, got {workers}")
    if workers is not None and scheduler:
        raise DeepkinError("--workers and --scheduler exclude each other")
    config = load_reduce_config(input_path, method=method.lower() if method else None)
    if workers is None and not scheduler:
        workers = os.cpu_count() or 1
    summary = run_reduction(config, out_dir, workers=workers, scheduler=scheduler,
                            progress=not quiet, cache_dir=cache_dir,
                            log=None if quiet else (lambda msg: click.echo(msg, err=True)))
    ver = summary["verification"]
    errors = ", ".join(f"{target} {v['max_error_percent']:.2f} % (bound {v['bound_percent']:g} %)"
                       for target, v in ver["targets"].items())
    click.echo(f"{summary['method']}: {summary['detailed']['n_species']} → "
               f"{summary['reduced']['n_species']} species, {summary['reduced']['n_reactions']} "
               f"reactions; independent re-run max errors: {errors}; max |dT_eq| "
               f"{ver['max_eq_error_k']:.1f} K; bound by {summary['binding']['bound_by']}; "
               f"{summary['wall_s']:.0f} s")
    click.echo(f"wrote {summary['reduced']['path']}, {', '.join(summary['reduced']['chemkin'].values())}, "
               f"{summary['report']['markdown']}, {summary['report']['json']}")
    if not ver["passed"]:
        _fail("the written mechanism does not meet the bound in the independent re-run", 2)


@cli.command("serve")
@click.option("--model-dir", type=click.Path(), help="Serve every *.safetensors model of this directory "
              "(default: the shipped models).")
@click.option("--host", help="Interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")
@click.option("--port", type=int, help="TCP port (default 8000).")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default auto).")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core).")
@click.option("--precision", type=click.Choice(["auto", *PRECISION_NAMES]),
              help="The networks' dtype (default auto: a model's validated precision where the CPU "
                   "multiplies it natively, else float32).")
@click.option("--token", "tokens", multiple=True, help="Accept this bearer token (repeat for several); "
              "with none, no auth. Also DEEPKIN_TOKENS (comma-separated) or DEEPKIN_TOKENS_FILE.")
@click.option("--tokens-file", type=click.Path(dir_okay=False), help="Bearer tokens, one a line.")
@click.option("--max-body-mb", type=float, help="Request-size limit in MiB (default 1024), before and "
              "after decompression; 413 above.")
@click.option("--max-json-mb", type=float, help="Size limit of a JSON body or v2 JSON header in MiB "
              "(default 16); 413 above.")
@click.option("--max-header-kb", type=float, help="Size limit of a request line and its headers "
              "together in KiB (default 64, 1 to 1024), counted while they arrive; 431 above.")
@click.option("--max-batch-cells", type=int, help="Cell cap of one merged device call (default 1048576).")
@click.option("--max-batch-requests", type=int,
              help="Requests merged into one device call (default 64; 1 = no merging).")
@click.option("--queue-delay-ms", type=float, help="Wait this long for requests to merge (default 0).")
@click.option("--max-queue-requests", type=int, help="Queued requests before 503 (default 256).")
@click.option("--max-queue-cells", type=int, help="Queued cells before 503 (default 4194304).")
@click.option("--max-substeps", type=int, help="Model steps (dt / the model's dt) one request may ask "
              "for (default 1000); 422 above.")
@click.option("--max-cell-substeps", type=int, help="Cells × model steps of one request (default "
              "67108864); 422 above.")
@click.option("--step-timeout-s", type=float, help="Device-time budget of one device call in s "
              "(default 60); a request alone past it gets 422, and the service is not ready while a "
              "call runs longer.")
@click.option("--header-timeout-s", type=float, help="Request line and headers must arrive within "
              "this many s (default 10); 408 and the connection closed after it.")
@click.option("--body-timeout-s", type=float, help="Longest pause in a request body, or in reading "
              "the answer, in s (default 30); the connection is closed after it.")
@click.option("--graceful-shutdown-s", type=float, help="On SIGTERM/SIGINT the process exits within "
              "this many s (default 60, at least 2); requests unanswered by then get 503.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_cmd(model_dir, host, port, device, threads, precision, tokens, tokens_file, max_body_mb,
              max_json_mb, max_header_kb, max_batch_cells, max_batch_requests, queue_delay_ms,
              max_queue_requests, max_queue_cells, max_substeps, max_cell_substeps, step_timeout_s,
              header_timeout_s, body_timeout_s, graceful_shutdown_s, log_level) -> None:
    """Serve the chemistry-step REST API (v1 binary/JSON, KServe v2, /metrics) with uvicorn.

    Settings also come from DEEPKIN_* environment variables (flags win); see docs/service.md.
    A setting out of range, an address in use or a host that does not resolve stops it with one
    line (exit 1).
    """
    from service.settings import ServiceSettings, read_tokens_file, scaled_size

    token_list = list(tokens) + (read_tokens_file(tokens_file) if tokens_file else [])
    settings = ServiceSettings.from_env(
        model_dir=model_dir, host=host, port=port, device=device, threads=threads,
        precision=precision,
        tokens=token_list or None,
        max_body_bytes=scaled_size("max_body_bytes", max_body_mb, 2**20),
        max_json_bytes=scaled_size("max_json_bytes", max_json_mb, 2**20),
        max_header_bytes=scaled_size("max_header_bytes", max_header_kb, 2**10),
        max_batch_cells=max_batch_cells, max_batch_requests=max_batch_requests,
        queue_delay_s=queue_delay_ms / 1e3 if queue_delay_ms is not None else None,
        max_queue_requests=max_queue_requests, max_queue_cells=max_queue_cells,
        max_substeps=max_substeps, max_cell_substeps=max_cell_substeps, step_timeout_s=step_timeout_s,
        header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
        graceful_shutdown_s=graceful_shutdown_s, log_level=log_level)
    from service.server import serve  # torch: imported once the settings are known to be good

    serve(settings)


def _add_openfoam() -> None:
    from couplers.openfoam.commands import openfoam  # click only; its commands import lazily

    cli.add_command(openfoam)


_add_openfoam()


def main() -> None:
    """Console entry point: known errors print one line and exit 1, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume", 130)
    except DeepkinError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the user gets one line; developers set DEEPKIN_DEBUG
        if os.environ.get("DEEPKIN_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set DEEPKIN_DEBUG=1 for a traceback)", 3)
    sys.exit(0)


if __name__ == "__main__":
    main()
