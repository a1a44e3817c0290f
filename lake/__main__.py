"""``python -m lake``: see :mod:`lake.cli`."""

import sys

from lake.cli import main

if __name__ == "__main__":
    sys.exit(main())
