"""Candidate retrieval over the item index and the event log: similar items, search (``search/``),
shopper profiles, collaborative signals and the candidate sources of personal recommendations.
The event log itself lives in ``eventstore/``."""
