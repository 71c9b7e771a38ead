"""The rig's geometry as files: the printed board (board.py), the camera model and its camera.yaml
(camera_model.py), the rig file with the camera's mount and the joint offsets (rig_file.py).
The twin and the real side both read them; the fits that write them are in ``calibrate``."""
