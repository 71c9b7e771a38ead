"""Datasets in the formats the field uses: LeRobotDataset v3 out (recordings, runs) and in (demos)."""
