"""Benchmarks and the load generator: scripts that print figures, never timed tests.

    semrec bench foundation|personal|rerank     python -m bench.<name> --help
    semrec loadtest                              python -m bench.loadtest --help

``kit`` holds what they share (machine facts, timers, memory, latency summaries).
"""
