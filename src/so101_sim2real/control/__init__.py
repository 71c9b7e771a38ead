"""Kinematics, the controller and the control loop shared by sim and real."""
