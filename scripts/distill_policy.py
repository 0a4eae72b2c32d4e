"""Distil the results of several finished runs into one policy: the same as `cwhawq distill` (see `--help`)."""

import sys

from cwhawq.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
