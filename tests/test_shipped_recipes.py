"""Every recipe shipped beside the models parses and passes its own checks: a typo in one would
only show hours into a rebuild."""

from __future__ import annotations

import pytest

from kinetics.model.registry import SHIPPED_DIR
from kinetics.training.train import TrainConfig
from sampling.config import SamplingConfig

SAMPLE_RECIPES = sorted(p for p in SHIPPED_DIR.glob("*.yaml")
                        if p.stem.endswith((".sample", ".relax")))
REFINE_CONFIGS = sorted(SHIPPED_DIR.glob("*.refine.yaml"))
TRAIN_RECIPES = sorted(p for p in SHIPPED_DIR.glob("*.yaml")
                       if p not in SAMPLE_RECIPES and p not in REFINE_CONFIGS)


def test_recipes_are_found():
    assert any(p.name == "ch4-air.relax.yaml" for p in SAMPLE_RECIPES)
    assert any(p.name == "ch4-air.induction.yaml" for p in TRAIN_RECIPES)


@pytest.mark.parametrize("path", SAMPLE_RECIPES, ids=lambda p: p.name)
def test_sampling_recipe_parses_and_validates(path):
    config = SamplingConfig.from_yaml(path)
    config.validate()
    assert sum(config.rows.values()) > 0


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.name)
def test_training_recipe_parses(path):
    config = TrainConfig.from_yaml(path)
    assert config.epochs > 0 and config.name


@pytest.mark.parametrize("path", REFINE_CONFIGS, ids=lambda p: p.name)
def test_refine_config_parses(path):
    from refinement.config import load_refine_config

    config = load_refine_config(path)
    assert config.rounds >= 1 and config.name
