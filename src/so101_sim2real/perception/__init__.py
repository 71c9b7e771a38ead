"""Perception: segmentation and depth into exactly the observation the policy was trained on."""
