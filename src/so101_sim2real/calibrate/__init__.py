"""The calibrations (``so101 calibrate``): intrinsics from board pictures (camera_fit, capture,
report), the camera mount and joint offsets from board views (hand_eye, rig_poses, rig_capture,
rig_report, rig_rehearsal), and the mount from segmentation masks (align)."""
