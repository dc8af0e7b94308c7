"""Transforms on the way out: coercion, de-identification, character-set normalisation."""
from neuropetrix.engine.transforms.errors import TransformError
from neuropetrix.engine.transforms.steps import Transform, build, check_steps

__all__ = ["Transform", "TransformError", "build", "check_steps"]
