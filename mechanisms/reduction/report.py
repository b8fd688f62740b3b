"""The reduction report: the run's summary (plain data), Markdown with the per-target and
per-condition tables, a PNG of ignition delay against 1000/T (detailed lines, reduced markers), a
PNG of error against species count for every candidate simulated, and the summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.atomic_io import atomic_write, atomic_write_text
from mechanisms.reduction.config import EQUILIBRIUM, ReductionConfig
from mechanisms.reduction.evaluate import CandidateScore
from mechanisms.reduction.method import MethodOutcome
from mechanisms.reduction.targets import ReferenceTargets
from mechanisms.state import ONE_ATM_PA

TARGET_LABELS = {"ignition-delay": "ignition delay", "flame-speed": "laminar flame speed",
                 "psr-extinction": "PSR extinction residence time",
                 "equilibrium-temperature": "equilibrium temperature"}
UNITS = {"ignition-delay": "s", "flame-speed": "m/s", "psr-extinction": "s"}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def build_summary(config: ReductionConfig, reference: ReferenceTargets, outcome: MethodOutcome,
                  chosen: CandidateScore, verified: CandidateScore, path: Path,
                  chemkin: dict[str, Path], bound: dict[str, Any], wall_s: float, n_simulated: int,
                  executor: str) -> dict[str, Any]:
    """The plain-data summary of a run: the problem, the written model ``path`` (and its Chemkin
    files), its independent re-run ``verified`` beside the in-memory score ``chosen``, per target,
    per condition and overall, and ``bound``, the binding constraint (``constraints.binding``).

    ``wall_s``: the run's wall time (s); ``n_simulated``: candidate models simulated; ``executor``:
    the executor's description.
    """
    mech = config.mechanism
    gas = mech.solution()
    rows = []
    for i, cond in enumerate(config.conditions):
        red_teq = _finite(verified.t_eq_k[i])
        rows.append({
            "label": cond.label, "kind": cond.kind, "target": cond.target,
            "temperature_k": cond.temperature_k, "pressure_atm": cond.pressure_pa / ONE_ATM_PA,
            "phi": cond.phi, "mixture": f"phi={cond.phi:g}" if cond.phi is not None else "reactants",
            "detailed": float(reference.values[i]), "reduced": _finite(verified.values[i]),
            "status": verified.statuses[i], "error": float(verified.errors[i]),
            "error_in_memory": _finite(chosen.errors[i]),
            "t_eq_detailed_k": float(reference.t_eq_k[i]), "t_eq_reduced_k": red_teq,
            "delta_t_eq_k": None if red_teq is None else red_teq - float(reference.t_eq_k[i]),
            "eq_error": float(verified.eq_errors[i]),
        })
    bounds = config.bounds_percent
    targets = {t: {"max_error_percent": 100 * verified.target_errors[t], "bound_percent": bounds[t],
                   "mean_error_percent": 100 * float(np.mean(
                       verified.eq_errors if t == EQUILIBRIUM else
                       verified.errors[[c.target == t for c in config.conditions]])),
                   "weight": config.weight(t),
                   "passed": bool(verified.target_errors[t] <= bounds[t] / 100.0)} for t in bounds}
    return {
        "method": config.run_name, "source": mech.source, "source_sha256": mech.sha256,
        "phase": mech.phase, "error_bound_percent": config.error_percent, "bounds_percent": bounds,
        "targets": config.targets, "retained_species": config.retained,
        "forced_species": config.forced_species(),
        "detailed": {"n_species": gas.n_species, "n_reactions": gas.n_reactions},
        "reduced": {"path": str(path), "n_species": verified.n_species,
                    "n_reactions": verified.n_reactions, "species": chosen.species(mech.species_names),
                    "chemkin": {k: str(p) for k, p in chemkin.items()}},
        "threshold": outcome.threshold,
        "verification": {"passed": verified.passed, "max_error_percent": 100 * verified.max_error,
                         "mean_error_percent": 100 * verified.mean_error,
                         "max_eq_error_k": verified.eq_error_k,
                         "max_eq_error_percent": 100 * verified.target_errors[EQUILIBRIUM],
                         "targets": targets,
                         "in_memory_max_error_percent": 100 * chosen.max_error},
        "binding": bound,
        "conditions": rows,
        "simulation": config.simulation.to_dict(),
        "reference": {"key": reference.key, "cached": reference.cached, "seconds": reference.seconds},
        "simulated_candidates": n_simulated, "wall_s": wall_s, "executor": executor,
        "cantera_version": ct.__version__,
        "method_details": outcome.details,
    }


def write_outputs(out_dir: Path, summary: dict[str, Any], scored: list[CandidateScore],
                  bounds: dict[str, float]) -> None:
    """Write ``NAME-ignition.png``, ``NAME-candidates.png``, ``NAME-report.md`` and
    ``NAME-summary.json`` of ``summary`` in ``out_dir``; ``scored`` are every candidate simulated,
    ``bounds`` the targets' bounds (fractions). Records the paths in ``summary["report"]`` first."""
    name = summary["method"]
    title = (f"{summary['source']}: {summary['detailed']['n_species']} → "
             f"{summary['reduced']['n_species']} species ({name.upper()})")
    png = plot_ignition(out_dir / f"{name}-ignition.png", summary["conditions"], title)
    answer = summary["reduced"]["species"]
    cloud = plot_candidates(out_dir / f"{name}-candidates.png", scored, bounds, len(answer), title)
    summary["report"] = {"markdown": str(out_dir / f"{name}-report.md"),
                         "png": str(png) if png else None, "candidates_png": str(cloud),
                         "json": str(out_dir / f"{name}-summary.json")}
    write_report(out_dir / f"{name}-report.md", summary, png.name if png else None, cloud.name)
    write_summary_json(out_dir / f"{name}-summary.json", summary)


def write_summary_json(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` (plain data) as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(summary, indent=1, default=float) + "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    _pyplot().close(fig)
    return Path(path)


def plot_ignition(path: str | Path, rows: list[dict[str, Any]], title: str) -> Path | None:
    """PNG of ignition delay (ms, log axis) against 1000/T0 (1/K), one colour per (kind, P, mixture).

    ``rows`` are the summary's per-condition dicts; flame and PSR rows are skipped. Returns None
    when there is no ignition condition.
    """
    plt = _pyplot()
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["target"] != "ignition-delay":
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
    return _save(fig, path)


def plot_candidates(path: str | Path, scored: list[CandidateScore], bounds: dict[str, float],
                    answer_size: int, title: str) -> Path:
    """PNG of max relative error (%, log axis) against species count for every candidate simulated,
    one panel per target with its bound (dashed); candidates within every bound filled, the others
    grey, the answer's size marked. A target a candidate was not run for (it had already failed a
    cheaper one) is left out of that panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(bounds), figsize=(4.2 * len(bounds), 4.0), squeeze=False)
    for ax, (target, bound) in zip(axes[0], bounds.items()):
        for passed, style in ((False, {"marker": "x", "color": "0.6", "s": 10, "lw": 0.6}),
                              (True, {"marker": "o", "color": "C0", "s": 12})):
            pts = [(s.n_species, 100 * max(s.target_errors[target], 1e-6)) for s in scored
                   if s.passed == passed and np.isfinite(s.target_errors[target])]
            if pts:
                ax.scatter(*zip(*pts), label="within every bound" if passed else "over a bound",
                           **style)
        ax.axhline(100 * bound, color="C3", ls="--", lw=1, label=f"bound {100 * bound:g} %")
        ax.axvline(answer_size, color="k", ls=":", lw=1, label=f"answer: {answer_size} species")
        ax.set_yscale("log")
        ax.set_xlabel("species")
        ax.set_ylabel(f"{TARGET_LABELS[target]} error (%)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: {len(scored)} candidates simulated", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _binding_line(s: dict[str, Any]) -> str:
    b = s["binding"]
    use = ", ".join(f"{TARGET_LABELS[t]} {100 * u:.0f} %" for t, u in b["utilisation"].items())
    broken = ", ".join(f"{TARGET_LABELS[t]} {n}" for t, n in b["smaller_failed_on"].items() if n)
    tried = (f"; of the {b['smaller_tried']} smaller candidates tried inside this one, these many broke "
             f"each bound: {broken}" if b["smaller_tried"] else "; no smaller candidate inside it was tried")
    return (f"- bound by: **{TARGET_LABELS[b['bound_by']]}** (the answer uses {use} of the bounds"
            f"{tried})")


def write_report(path: str | Path, summary: dict[str, Any], png_name: str | None,
                 candidates_png: str) -> Path:
    """Markdown report of a reduction ``summary`` (see :func:`build_summary`)."""
    s = summary
    red, det = s["reduced"], s["detailed"]
    ver = s["verification"]
    files = ", ".join(f"`{Path(p).name}`" for p in red["chemkin"].values())
    lines = [
        f"# Reduction of {s['source']} by {s['method'].upper()}",
        "",
        f"- detailed: **{det['n_species']} species, {det['n_reactions']} reactions** "
        f"(sha256 `{s['source_sha256'][:16]}…`)",
        f"- reduced: **{red['n_species']} species, {red['n_reactions']} reactions** → `{red['path']}`; "
        f"Chemkin: {files}",
        f"- independent re-run of the written file: "
        f"{'**verified** within every bound' if ver['passed'] else '**NOT within the bounds**'}; "
        f"max |ΔT_eq| {ver['max_eq_error_k']:.1f} K",
        _binding_line(s),
        f"- wall time {s['wall_s']:.0f} s on {s['executor']}; {s['simulated_candidates']} candidate "
        f"models simulated; detailed targets {'from the cache' if s['reference']['cached'] else 'computed'}"
        f" (key `{s['reference']['key'][:16]}…`)",
        "",
        "| target | max error % | mean % | bound % | weight | within |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for t, v in ver["targets"].items():
        lines.append(f"| {TARGET_LABELS[t]} | {v['max_error_percent']:.2f} | {v['mean_error_percent']:.2f} | "
                     f"{v['bound_percent']:g} | {v['weight']:g} | {'yes' if v['passed'] else '**no**'} |")
    lines.append("")
    if s.get("threshold") is not None:
        lines += [f"Threshold {s['threshold']:.4g} (any value in the interval that gives this model).", ""]
    if png_name:
        lines += [f"![ignition delay, detailed vs reduced]({png_name})", ""]
    lines += [f"![error against species count, every candidate simulated]({candidates_png})", ""]
    lines += ["## Per condition (independent re-run)", "",
              "| condition | detailed | reduced | error % | T_eq detailed (K) | T_eq reduced (K) "
              "| ΔT_eq (K) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in s["conditions"]:
        unit = UNITS[row["target"]]
        reduced = f"{row['reduced']:.4e} {unit}" if row["reduced"] else row["status"]
        teq_r = f"{row['t_eq_reduced_k']:.1f}" if row["t_eq_reduced_k"] is not None else "—"
        dteq = f"{row['delta_t_eq_k']:+.1f}" if row["delta_t_eq_k"] is not None else "—"
        lines.append(f"| {row['label']} | {row['detailed']:.4e} {unit} | {reduced} | "
                     f"{100 * row['error']:.2f} | {row['t_eq_detailed_k']:.1f} | {teq_r} | {dteq} |")
    lines += ["", "## Species kept", "", ", ".join(red["species"]), ""]
    lines += _method_sections(s.get("method_details") or {})
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _method_sections(details: dict[str, Any]) -> list[str]:
    """The threshold search, sensitivity analysis and DeePMR iterations, as Markdown lines."""
    lines: list[str] = []
    if details.get("steps"):
        lines += ["## Threshold search", "",
                  "| phase | level | threshold interval | species | max error % | of the bound | pass |",
                  "|---|---:|---|---:|---:|---:|---|"]
        for st in details["steps"]:
            lines.append(f"| {st['phase']} | {st['level']} | ({st['threshold_low']:.3g}, "
                         f"{st['threshold_high']:.3g}] | {st['n_species']} | "
                         f"{100 * st['max_error']:.2f} | {st['violation']:.2f} | "
                         f"{'yes' if st['passed'] else 'no'} |")
        lines.append("")
    sa = details.get("sensitivity")
    if sa:
        lines += ["## Sensitivity analysis", "",
                  f"{sa['kind']}, upper threshold {sa['upper_threshold']:g}; from "
                  f"{sa['graph_species']} species.", ""]
        if sa["steps"]:
            lines += ["| without | species | max error % | of the bound | pass |", "|---|---:|---:|---:|---|"]
            lines += [f"| {st['species']} | {st['n_species']} | {100 * st['max_error']:.2f} | "
                      f"{st['violation']:.2f} | {'yes' if st['passed'] else 'no'} |" for st in sa["steps"]]
        else:
            lines.append("No species in limbo: nothing to try.")
        lines.append("")
    if details.get("history"):
        lines += ["## DeePMR iterations", "", "| iteration | simulated | passed | screened in | "
                  "smallest passing | screen (bounds) | s |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for h in details["history"]:
            bound = "—" if h.get("screen_bound") is None else f"{h['screen_bound']:.2f}"
            screened = "—" if h.get("screened") is None else f"{h['screened']} / {h.get('children', 0)}"
            lines.append(f"| {h['iteration']} | {h['simulated']} | {h['passed']} | {screened} | "
                         f"{h['best_size']} | {bound} | {h['seconds']:.1f} |")
        lines += ["", f"Stopped: {details.get('stop_reason', '')}.", ""]
    return lines
