"""Apply a saved policy to a model, zero-shot or fine-tuned: the same as `cwhawq apply` (see `--help`)."""

import sys

from cwhawq.cli import main

if __name__ == "__main__":
    sys.exit(main(["apply", *sys.argv[1:]]))
