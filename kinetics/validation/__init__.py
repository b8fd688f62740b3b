"""Judging a model against Cantera: ``validate`` (0D autoignition rollouts, the report and its
plots), ``inputs`` (the grid and output folder refused before a run starts) and
``flame_coverage`` (how much of a standard flame's cells the model serves)."""
