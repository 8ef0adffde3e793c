"""``python -m retrolog.propagation``: the same as ``retrolog propagate``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
