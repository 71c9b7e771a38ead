"""Putting the twin beside something else and measuring the gap: the user's training
simulator's golden traces (``golden``), and later real recordings (compare-sim)."""
