"""Reward classification: labels on recorded episodes (labels.py), the classifier that says
success from a frame (classifier.py), and how well it does (evaluate.py)."""
