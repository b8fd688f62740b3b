"""The reduction report: the run's summary (plain data), Markdown with the per-condition table, a
PNG of ignition delay against 1000/T (detailed lines, reduced markers), and the summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.atomic_io import atomic_write, atomic_write_text
from mechanisms.reduction.config import ReductionConfig
from mechanisms.reduction.evaluate import CandidateScore
from mechanisms.reduction.method import MethodOutcome
from mechanisms.reduction.targets import ReferenceTargets
from mechanisms.state import ONE_ATM_PA


def build_summary(config: ReductionConfig, reference: ReferenceTargets, method: str,
                  outcome: MethodOutcome, chosen: CandidateScore, verified: CandidateScore, path: Path,
                  wall_s: float, n_simulated: int, executor: str) -> dict[str, Any]:
    """The plain-data summary of a run: the problem, the written model ``path``, its independent
    re-run ``verified`` beside the in-memory score ``chosen``, per condition and overall.

    ``wall_s``: the run's wall time (s); ``n_simulated``: candidate models simulated; ``executor``:
    the executor's description.
    """
    mech = config.mechanism
    gas = mech.solution()
    rows = []
    for i, cond in enumerate(config.conditions):
        red_teq = None if verified.t_eq_k is None or not np.isfinite(verified.t_eq_k[i]) \
            else float(verified.t_eq_k[i])
        value = verified.values[i]
        rows.append({
            "label": cond.label, "kind": cond.kind, "temperature_k": cond.temperature_k,
            "pressure_atm": cond.pressure_pa / ONE_ATM_PA, "phi": cond.phi,
            "mixture": f"phi={cond.phi:g}" if cond.phi is not None else "reactants",
            "detailed": float(reference.values[i]),
            "reduced": float(value) if np.isfinite(value) else None,
            "status": verified.statuses[i], "error": float(verified.errors[i]),
            "error_in_memory": float(chosen.errors[i]),
            "t_eq_detailed_k": float(reference.t_eq_k[i]), "t_eq_reduced_k": red_teq,
            "delta_t_eq_k": None if red_teq is None else red_teq - float(reference.t_eq_k[i]),
        })
    return {
        "method": method, "source": mech.source, "source_sha256": mech.sha256, "phase": mech.phase,
        "error_bound_percent": config.error_percent, "equilibrium_error_k": config.equilibrium_error_k,
        "targets": config.targets, "retained_species": config.retained,
        "forced_species": config.forced_species(),
        "detailed": {"n_species": gas.n_species, "n_reactions": gas.n_reactions},
        "reduced": {"path": str(path), "n_species": verified.n_species,
                    "n_reactions": verified.n_reactions, "species": chosen.species(mech.species_names)},
        "threshold": outcome.threshold,
        "verification": {"passed": verified.passed, "max_error_percent": 100 * verified.max_error,
                         "mean_error_percent": 100 * verified.mean_error,
                         "max_eq_error_k": (verified.eq_error_k if verified.eq_error_k is not None
                                            else float("nan")),
                         "in_memory_max_error_percent": 100 * chosen.max_error},
        "conditions": rows,
        "simulation": config.simulation.to_dict(),
        "reference": {"key": reference.key, "cached": reference.cached, "seconds": reference.seconds},
        "simulated_candidates": n_simulated, "wall_s": wall_s, "executor": executor,
        "cantera_version": ct.__version__,
        "method_details": outcome.details,
    }


def write_outputs(out_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``<method>-ignition.png``, ``<method>-report.md`` and ``<method>-summary.json`` of
    ``summary`` in ``out_dir``; records their paths in ``summary["report"]`` first."""
    method = summary["method"]
    png = plot_ignition(out_dir / f"{method}-ignition.png", summary["conditions"],
                        f"{summary['source']}: {summary['detailed']['n_species']} → "
                        f"{summary['reduced']['n_species']} species ({method.upper()}, bound "
                        f"{summary['error_bound_percent']:g} %)")
    summary["report"] = {"markdown": str(out_dir / f"{method}-report.md"),
                         "png": str(png) if png else None,
                         "json": str(out_dir / f"{method}-summary.json")}
    write_report(out_dir / f"{method}-report.md", summary, png.name if png else None)
    write_summary_json(out_dir / f"{method}-summary.json", summary)


def write_summary_json(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` (plain data) as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(summary, indent=1, default=float) + "\n")


def plot_ignition(path: str | Path, rows: list[dict[str, Any]], title: str) -> Path | None:
    """PNG of ignition delay (ms, log axis) against 1000/T0 (1/K), one colour per (kind, P, mixture).

    ``rows`` are the summary's per-condition dicts; flame rows are skipped. Returns None when there
    is no ignition condition.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "flame":
            continue
        groups.setdefault((row["kind"], row["pressure_atm"], row["mixture"]), []).append(row)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (group_key, members) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        members = sorted(members, key=lambda r: r["temperature_k"])
        x = [1000.0 / r["temperature_k"] for r in members]
        det = [1e3 * r["detailed"] for r in members]
        red = [1e3 * r["reduced"] if r["reduced"] else float("nan") for r in members]
        colour = colours[n % len(colours)]
        kind, p_atm, mix = group_key
        ax.plot(x, det, "-", color=colour, lw=1.2, label=f"{p_atm:g} atm, {mix}")
        ax.plot(x, red, "o", color=colour, mfc="none", ms=6)
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T0 (1/K)")
    ax.set_ylabel("ignition delay (ms)")
    ax.set_title(title, fontsize=10)
    ax.plot([], [], "k-", label="detailed")
    ax.plot([], [], "ko", mfc="none", label="reduced")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(fig)
    return Path(path)


def write_report(path: str | Path, summary: dict[str, Any], png_name: str | None) -> Path:
    """Markdown report of a reduction ``summary`` (see :func:`build_summary`)."""
    s = summary
    red, det = s["reduced"], s["detailed"]
    ver = s["verification"]
    lines = [
        f"# Reduction of {s['source']} by {s['method'].upper()}",
        "",
        f"- detailed: **{det['n_species']} species, {det['n_reactions']} reactions** "
        f"(sha256 `{s['source_sha256'][:16]}…`)",
        f"- reduced: **{red['n_species']} species, {red['n_reactions']} reactions** → `{red['path']}`",
        f"- error bound: {s['error_bound_percent']:g} % (max relative error over "
        f"{len(s['conditions'])} conditions)",
        f"- independent re-run of the written file: max error **{ver['max_error_percent']:.2f} %**, "
        f"mean {ver['mean_error_percent']:.2f} %, max |ΔT_eq| {ver['max_eq_error_k']:.1f} K — "
        f"{'**verified**' if ver['passed'] else '**NOT within the bound**'}",
        f"- wall time {s['wall_s']:.0f} s on {s['executor']}; {s['simulated_candidates']} candidate "
        f"models simulated; detailed targets {'from the cache' if s['reference']['cached'] else 'computed'}"
        f" (key `{s['reference']['key'][:16]}…`)",
        "",
    ]
    if s.get("threshold") is not None:
        lines += [f"Threshold {s['threshold']:.4g} (any value in the interval that gives this model).", ""]
    if png_name:
        lines += [f"![ignition delay, detailed vs reduced]({png_name})", ""]
    lines += ["## Per condition (independent re-run)", "",
              "| condition | detailed | reduced | error % | T_eq detailed (K) | T_eq reduced (K) "
              "| ΔT_eq (K) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in s["conditions"]:
        unit = "m/s" if row["kind"] == "flame" else "s"
        reduced = f"{row['reduced']:.4e} {unit}" if row["reduced"] else row["status"]
        teq_r = f"{row['t_eq_reduced_k']:.1f}" if row["t_eq_reduced_k"] is not None else "—"
        dteq = f"{row['delta_t_eq_k']:+.1f}" if row["delta_t_eq_k"] is not None else "—"
        lines.append(f"| {row['label']} | {row['detailed']:.4e} {unit} | {reduced} | "
                     f"{100 * row['error']:.2f} | {row['t_eq_detailed_k']:.1f} | {teq_r} | {dteq} |")
    lines += ["", "## Species kept", "", ", ".join(red["species"]), ""]
    details = s.get("method_details") or {}
    if details.get("steps"):
        lines += ["## Threshold search", "",
                  "| phase | level | threshold interval | species | max error % | pass |",
                  "|---|---:|---|---:|---:|---|"]
        for st in details["steps"]:
            lines.append(f"| {st['phase']} | {st['level']} | ({st['threshold_low']:.3g}, "
                         f"{st['threshold_high']:.3g}] | {st['n_species']} | "
                         f"{100 * st['max_error']:.2f} | {'yes' if st['passed'] else 'no'} |")
        lines.append("")
    if details.get("history"):
        lines += ["## DeePMR iterations", "", "| iteration | simulated | passed | screened in | "
                  "smallest passing | bound (log10) | s |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for h in details["history"]:
            bound = "—" if h.get("bound_log10") is None else f"{h['bound_log10']:.4f}"
            screened = "—" if h.get("screened") is None else f"{h['screened']} / {h.get('children', 0)}"
            lines.append(f"| {h['iteration']} | {h['simulated']} | {h['passed']} | {screened} | "
                         f"{h['best_size']} | {bound} | {h['seconds']:.1f} |")
        lines += ["", f"Stopped: {details.get('stop_reason', '')}.", ""]
    return atomic_write_text(path, "\n".join(lines) + "\n")
