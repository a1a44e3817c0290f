"""``python -m dataflows.bench``: end-to-end throughput against the bare River loop (see :mod:`.throughput`)."""

from dataflows.bench.throughput import main
from lake.entry import run_main

if __name__ == "__main__":
    run_main(main)
