"""Train the DDPG agent on a model: the same as `cwhawq search` (see `--help`)."""

import sys

from cwhawq.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
