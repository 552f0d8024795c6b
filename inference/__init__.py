"""Inference: the ``Predictor`` (checkpoint -> masks), decoding of uploads, metrics, the API."""

from inference.predictor import Predictor, SlicePrediction, SliceSummary, VolumePrediction

__all__ = ["Predictor", "SlicePrediction", "SliceSummary", "VolumePrediction"]
