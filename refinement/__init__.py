"""The refinement loop (``deepkin refine``): run a surrogate on flow-solver and 0D cases, harvest
the states its own runs visit, label them with Cantera, fine-tune its networks on the old rows
plus the new, and repeat until the validation cases meet the targets or the rounds run out;
every stage checkpointed in a work folder, the best round (chosen without the validation cases)
copied to ``best.safetensors``.

- ``refinement.config``: :class:`RefineConfig` from YAML (:func:`load_refine_config`);
- ``refinement.workdir``: the work folder, the committed recipe, stage markers, progress.log,
  the run's lock (one run per folder);
- ``refinement.references``: the ODE references (OpenFOAM ODE runs, Cantera 0D), cached;
- ``refinement.serving``: ``deepkin serve`` for a round's model;
- ``refinement.cases``: a case run and its figures against its reference;
- ``refinement.stages``: replay, harvest, training and evaluation stages;
- ``refinement.report``: rounds.json, rounds.md, rounds.png;
- ``refinement.loop``: :func:`run_refinement`;
- ``refinement.status``: where a (background) run stands, from its files (``deepkin refine-status``).

Names are imported on first use.
"""

from __future__ import annotations

from mechanisms.lazy_exports import lazy_exports

_HOMES = {
    "RefineConfig": "refinement.config", "load_refine_config": "refinement.config",
    "default_work_dir": "refinement.config",
    "RefineSummary": "refinement.loop", "run_refinement": "refinement.loop",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
