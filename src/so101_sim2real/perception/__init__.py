"""Perception: segmentation and depth into exactly the observation the policy was trained on."""

# The public disparity model: Depth Anything V2 Small in transformers' layout (Apache-2.0).
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Example weights (random, from 'so101 models example', see perception/examples.py) carry this: a key
# in the segmentation checkpoint, an attribute in the depth config. The loaders read it.
EXAMPLE_MARK = "so101_example"
# Networks fitted to a stand-in world's renders ('so101 seg train', 'so101 depth fit') carry this
# the same way: they know the stand-in's picture, not a camera's, and a real arm refuses them.
STANDIN_MARK = "so101_standin"
