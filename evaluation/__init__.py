"""Offline evaluation harness: split protocol, metrics, harness runner and report.

    from evaluation.harness import run_eval
    run_eval("beauty", "../shared/data", "runs/beauty-quick", quick=True)
"""
