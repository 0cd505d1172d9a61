"""Analyses of trained models: numbers and arrays first, plots as a thin layer on top."""

from replknet.analysis.shape_bias import (
    CUE_CONFLICT_CATEGORIES,
    CueConflictDataset,
    ShapeBiasCounts,
    ShapeBiasResult,
    Stimulus,
    StimulusLayoutError,
    evaluate_shape_bias,
    find_stimuli,
    imagenet_16class_indices,
    logits_to_decisions,
    parse_stimulus_name,
    probabilities_to_decisions,
    shape_bias_from_decisions,
    transform_for_model,
)

__all__ = [
    "CUE_CONFLICT_CATEGORIES",
    "CueConflictDataset",
    "ShapeBiasCounts",
    "ShapeBiasResult",
    "Stimulus",
    "StimulusLayoutError",
    "evaluate_shape_bias",
    "find_stimuli",
    "imagenet_16class_indices",
    "logits_to_decisions",
    "parse_stimulus_name",
    "probabilities_to_decisions",
    "shape_bias_from_decisions",
    "transform_for_model",
]
