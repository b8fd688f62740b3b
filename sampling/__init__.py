"""Offline dataset generation: manifold cases, multi-scale/perturbed/EMCS sampling, labelling."""

from sampling.config import SamplingConfig
from sampling.dataset import SOURCE_NAMES, read_dataset, summarise_dataset
from sampling.pipeline import SamplingSummary, run_sampling

__all__ = ["SOURCE_NAMES", "SamplingConfig", "SamplingSummary", "read_dataset", "run_sampling",
           "summarise_dataset"]
