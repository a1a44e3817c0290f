"""``python -m lake``: see :mod:`lake.cli`."""

from lake.cli import main
from lake.entry import run_main

if __name__ == "__main__":
    run_main(main)
