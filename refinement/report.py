"""The loop's report: ``rounds.json`` (every round's figures), ``rounds.md`` (a table per round
and per case) and ``rounds.png`` (each judged error against the round, harvest and validation
cases, with the targets), written atomically into the work folder after every run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechanisms.atomic_io import atomic_write, atomic_write_text
from refinement.config import RefineConfig

if TYPE_CHECKING:
    from refinement.loop import RefineSummary, RoundOutcome

SETS = ("harvest", "validation")


def set_summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The worst errors of one case set: flame speed (relative, signed as measured), peak T and
    burnt-gas T (K), 0D end T (K), 0D ignition delay (relative, max and mean), each tracked
    species' mass fraction after ignition (relative, ``after_ignition_max_rel``: ``{species:
    worst}``; ``after_ignition_rel``: the worst of them), and the failed runs."""
    flames = [f for f in figures.get("flames", []) if "failed" not in f]
    out: dict[str, Any] = {"failed": [f["case"] for f in figures.get("flames", []) if "failed" in f]}
    for key, name in (("speed_rel", "flame_speed_rel"), ("peak_error_k", "peak_error_k"),
                      ("burnt_error_k", "burnt_error_k")):
        values = [f[key] for f in flames if key in f]
        out[name] = max(values, key=abs) if values else None
    zero_d = figures.get("zero_d")
    if zero_d:
        worst = max(zero_d["conditions"], key=lambda r: abs(r["equilibrium_error_k"]))
        out["end_t_error_k"] = worst["equilibrium_error_k"]
        out["idt_max_rel"] = zero_d["idt_max_rel"]
        idts = [r["idt_rel"] for r in zero_d["conditions"] if r["idt_rel"] is not None]
        out["idt_mean_rel"] = sum(idts) / len(idts) if idts else None
    else:
        out["end_t_error_k"] = out["idt_max_rel"] = out["idt_mean_rel"] = None
    # figures of rounds evaluated before the loop tracked species hold none
    species = dict((zero_d or {}).get("after_ignition_max_rel") or {})
    out["after_ignition_max_rel"] = species
    out["after_ignition_rel"] = max(species.values()) if species else None
    return out


def round_entry(outcome: RoundOutcome, root: Path) -> dict[str, Any]:
    """One round of ``rounds.json``."""
    records = outcome.records
    figures = records["evaluate"].figures
    return {
        "round": outcome.round,
        "model": str(outcome.model.relative_to(root)),
        "score": None if math.isinf(outcome.score) else outcome.score,
        "worst": outcome.worst,
        "targets_met": outcome.targets_met,
        "seconds": {stage: round(r.seconds, 2) for stage, r in records.items()},
        "harvest": records["harvest"].figures if "harvest" in records else None,
        "train": {stage[len("train-"):]: r.figures for stage, r in records.items()
                  if stage.startswith("train-")},
        "summary": {name: set_summary(figures[name]) for name in SETS},
        "evaluation": figures,
    }


def write_report(summary: RefineSummary, config: RefineConfig, criterion: str) -> None:
    """rounds.json, rounds.md and rounds.png in the work folder."""
    root = summary.work_dir
    entries = [round_entry(o, root) for o in summary.outcomes]
    data = {"name": config.name, "work_dir": str(root), "criterion": criterion,
            "targets": config.targets.__dict__, "best_round": summary.best_round,
            "best_model": str(summary.best_model), "stopped": summary.stopped, "rounds": entries}
    data = finite(data)
    atomic_write_text(root / "rounds.json", json.dumps(data, indent=1, allow_nan=False))
    atomic_write_text(root / "rounds.md", markdown(data))
    atomic_write(root / "rounds.png", lambda tmp: plot(data, tmp), suffix=".png")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (a failed run's error) replaced by None."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: float | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{scale * value:{spec}}{unit}"


def _species_after_ignition(data: dict[str, Any]) -> str:
    """``, 0D CO and NO 10 ms after ignition`` for the species and delays the rounds tracked
    (empty when none)."""
    grids = [r["evaluation"][name].get("zero_d") or {} for r in data["rounds"] for name in SETS]
    species = list(dict.fromkeys(s for g in grids for s in g.get("after_ignition_species") or []))
    delays = sorted({g["after_ignition_s"] for g in grids
                     if g.get("after_ignition_species") and g.get("after_ignition_s")})
    if not species:
        return ""
    names = " and ".join([", ".join(species[:-1]), species[-1]] if len(species) > 1 else species)
    when = " / ".join(f"{1e3 * d:g}" for d in delays)
    return f", 0D {names} {when} ms after ignition"


def _worst_species(summary: dict[str, Any]) -> str:
    """``CO 3.1 % / NO 12.0 %``: the worst error of each tracked species; — when none."""
    species = summary.get("after_ignition_max_rel") or {}
    return " / ".join(f"{name} {_fmt(v, '.1f', 100, ' %')}" for name, v in species.items()) \
        or "—"


def markdown(data: dict[str, Any]) -> str:
    """The report as markdown: one row per round, then every case of every round."""
    t = data["targets"]
    tracked = _species_after_ignition(data)
    lines = [f"# Refinement of `{data['name']}`", "",
             f"Targets (validation cases): flame speed within {100 * t['flame_speed_rel']:g} %, "
             f"peak T within {t['peak_temperature_k']:g} K, 0D end T within "
             f"{t['equilibrium_temperature_k']:g} K, 0D ignition delay within "
             f"{100 * t.get('ignition_delay_max_rel', 0.1):g} % (mean over a grid "
             f"{100 * t.get('ignition_delay_mean_rel', 0.03):g} %)"
             + (f"{tracked} within {100 * t.get('after_ignition_rel', 0.1):g} %" if tracked
                else "") + " of the ODE references.", "",
             f"Best round: **{data['best_round']}** (`{Path(data['best_model']).name}`), chosen by "
             f"{data['criterion']}. Stopped: {data['stopped']}.", "",
             "| round | rows added | best val. loss (per network) | harvest: worst error / target "
             "| validation: flame speed | peak T | 0D end T | IDT max / mean "
             "| species after ignition (worst) | targets | stage times (s) |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in data["rounds"]:
        added = sum((r["harvest"] or {}).get("rows_added", {}).values()) if r["harvest"] else 0
        losses = " / ".join(f"{n} {v['best_val_loss']:.4g}" for n, v in r["train"].items()) or "—"
        v = r["summary"]["validation"]
        met = {True: "met", False: "missed", None: "—"}[r["targets_met"]]
        failed = f" ({len(v['failed'])} failed)" if v["failed"] else ""
        times = ", ".join(f"{k} {s:.0f}" for k, s in r["seconds"].items())
        lines.append(f"| {r['round']} | {added} | {losses} | {_fmt(r['score'], '.3g')} "
                     f"({r['worst']}) | {_fmt(v['flame_speed_rel'], '+.2f', 100, ' %')}{failed} | "
                     f"{_fmt(v['peak_error_k'], '+.1f', unit=' K')} | "
                     f"{_fmt(v['end_t_error_k'], '+.1f', unit=' K')} | "
                     f"{_fmt(v['idt_max_rel'], '.1f', 100, ' %')} / "
                     f"{_fmt(v.get('idt_mean_rel'), '.2f', 100, ' %')} | {_worst_species(v)} | "
                     f"{met} | {times} |")
    flames = [(r["round"], name, f) for r in data["rounds"] for name in SETS
              for f in r["evaluation"][name].get("flames", [])]
    if flames:
        lines += ["", "## Flames", "",
                  "Each against the same OpenFOAM case on OpenFOAM's ODE chemistry. Heat release: "
                  "the deepkin run's over the ODE run's, per temperature band (lower edge in K).",
                  "", "| round | set | case | speed deepkin / ODE (m/s) | error | peak T error | "
                  "burnt T error | served | heat release by band |",
                  "|---:|---|---|---|---:|---:|---:|---:|---|"]
    for k, name, f in flames:
        if "failed" in f:
            lines.append(f"| {k} | {name} | {f['case']} | failed: {f['failed']} | | | | | |")
            continue
        speed = f"{f['speed_m_s']:.4f} / {f['ode_speed_m_s']:.4f}" if "speed_m_s" in f else "—"
        bands = ", ".join(f"{b}: {x:.2f}" for b, x in f["heat_release_ratio"].items())
        lines.append(f"| {k} | {name} | {f['case']} | {speed} | "
                     f"{_fmt(f.get('speed_rel'), '+.2f', 100, ' %')} | "
                     f"{_fmt(f['peak_error_k'], '+.1f', unit=' K')} | "
                     f"{_fmt(f.get('burnt_error_k'), '+.1f', unit=' K')} | "
                     f"{_fmt(f.get('served'), '.1f', 100, ' %')} | {bands or '—'} |")
    rollouts = [(r["round"], name, c) for r in data["rounds"] for name in SETS
                for c in (r["evaluation"][name].get("zero_d") or {}).get("conditions", [])]
    if rollouts:
        lines += ["", "## 0D rollouts", "",
                  "End temperature of the surrogate's rollout against Cantera's at the same time "
                  "(after twice the slowest ignition delay, at least the grid's steps); ignition "
                  "delay against Cantera's adaptive solution; each tracked species' mass "
                  "fraction a set time after each side's own ignition against Cantera's.", "",
                  "| round | set | condition | end T surrogate / Cantera (K) | error | IDT error | "
                  "served | after ignition: Y surrogate / Cantera (error) |",
                  "|---:|---|---|---|---:|---:|---:|---|"]
    for k, name, c in rollouts:
        lines.append(f"| {k} | {name} | {c['label']} | {c['t_end_k']:.1f} / "
                     f"{c['cantera_t_end_k']:.1f} | {c['equilibrium_error_k']:+.1f} K | "
                     f"{_fmt(c['idt_rel'], '.2f', 100, ' %')} | {_fmt(c['served'], '.1f', 100, ' %')} "
                     f"| {_after_ignition_cell(c.get('after_ignition') or {})} |")
    return "\n".join(lines) + "\n\n![errors against the round](rounds.png)\n"


def _after_ignition_cell(species: dict[str, dict[str, Any]]) -> str:
    """``CO 1.234e-03 / 1.250e-03 (1.28 %)`` per tracked species (``not reached`` when the
    surrogate had not got there); — when none."""
    cells = []
    for name, v in species.items():
        ours = "not reached" if v["y"] is None else f"{v['y']:.3e}"
        cells.append(f"{name} {ours} / {v['cantera_y']:.3e} ({_fmt(v['rel'], '.2f', 100, ' %')})")
    return "; ".join(cells) or "—"


def plot(data: dict[str, Any], path: Path) -> None:
    """rounds.png: |flame speed error| (%), |peak T error| (K), |0D end T error| (K), the worst
    0D ignition delay error (%) and the worst tracked species' error after ignition (%) against
    the round, harvest cases dashed and validation cases solid, targets dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = data["targets"]
    panels = (("flame_speed_rel", 100.0, "|flame speed error| (%)", 100 * t["flame_speed_rel"]),
              ("peak_error_k", 1.0, "|peak T error| (K)", t["peak_temperature_k"]),
              ("end_t_error_k", 1.0, "|0D end T error| (K)", t["equilibrium_temperature_k"]),
              ("idt_max_rel", 100.0, "worst 0D ignition delay error (%)",
               100 * t.get("ignition_delay_max_rel", 0.1)),
              ("after_ignition_rel", 100.0, "worst 0D species error after ignition (%)",
               100 * t.get("after_ignition_rel", 0.1)))
    rounds = [r["round"] for r in data["rounds"]]
    shown = [panel for panel in panels if any(r["summary"][name].get(panel[0]) is not None
                                              for r in data["rounds"] for name in SETS)]
    shown = shown or list(panels[2:3])  # an empty panel says there is nothing to show
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
    for ax, (key, scale, label, target) in zip(axes[0], shown):
        for name, style in (("validation", "o-"), ("harvest", "s--")):
            values = [r["summary"][name].get(key) for r in data["rounds"]]
            xs = [x for x, v in zip(rounds, values) if v is not None]
            ys = [scale * abs(v) for v in values if v is not None]
            if ys:
                ax.plot(xs, ys, style, label=f"{name} cases (worst)")
        ax.axhline(target, color="k", ls=":", lw=1, label="target")
        ax.axvline(data["best_round"], color="g", lw=0.8, alpha=0.5, label="best round")
        ax.legend(fontsize=7)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_xticks(rounds)
    fig.suptitle(f"refinement of {data['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
