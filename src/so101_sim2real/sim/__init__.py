"""The MuJoCo sim twin of the user's lift-cube task."""
