"""Scoring trained models: metrics and predictions, gradient flow through time, the linear baseline,
and classifying new text with a checkpoint (inference)."""
