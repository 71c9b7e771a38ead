"""Putting the twin beside something else and measuring the gap: the user's training
simulator's golden traces (``golden``), a recording replayed through the twin and the causes of
the gap named (``replay``, ``findings``, ``html``: ``so101 compare-sim``), and which gaps cost the
policy success (``sensitivity``)."""
