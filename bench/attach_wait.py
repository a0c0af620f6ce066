"""How long requests wait while a new model version's split reranker attaches to a running index.

    python -m bench.attach_wait --index SERVE/index --ranker runs/ranker/v0004

A reader thread takes the index lock every 10 ms, as a request's critical sections do, while
``Reranker.attach`` computes every live item's lower-layer states (what ``api.deps.install_models``
does at a model swap). Prints the attach time and the reader's longest wait for the lock.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from indexer.store import ItemIndex
from ranker.model import Reranker


def attach_wait(index: ItemIndex, reranker: Reranker, every_s: float = 0.01) -> tuple[float, list[float]]:
    """``(attach seconds, the reader's lock waits in seconds)``."""
    waits: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            with index.lock:
                pass
            waits.append(time.perf_counter() - started)
            time.sleep(every_s)

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.perf_counter()
    try:
        reranker.attach(index)
    finally:
        took = time.perf_counter() - started
        stop.set()
        thread.join()
    return took, waits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.attach_wait", description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, help="an index folder (semrec index)")
    p.add_argument("--ranker", required=True, help="a split reranker version folder")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    index = ItemIndex.load(a.index)
    took, waits = attach_wait(index, Reranker(a.ranker))
    print(f"{len(index)} items: attach {took:.1f} s; longest lock wait {max(waits, default=0) * 1000:.0f} ms "
          f"over {len(waits)} reader entries")


if __name__ == "__main__":
    main()
