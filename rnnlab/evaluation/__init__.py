"""Scoring trained models: metrics, predictions, gradient flow through time, the linear baseline, inference."""
