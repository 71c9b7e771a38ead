"""Camera calibration: the board (board.py), the camera model and its camera.yaml (camera_model.py),
the fit of both lens models (camera_fit.py), gathering views (capture.py) and the report (report.py)."""
