"""Ranking: the one pipeline per use (personal, session, similar, search) over the retriever's
candidates, the fine-tuned cross-encoder, score fusion, MMR diversity and evidence-based reasons.

Serving imports nothing from the training modules (``train``, ``pairs``, ``card``).
"""
