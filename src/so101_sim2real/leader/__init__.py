"""The leader arm: a person's takeover turned into the policy's actions (takeover.py), the leader
on a serial port or emulated (arm.py, emulator.py), and the scripted hand that rehearses a person
(hand.py, hand_script.py)."""
