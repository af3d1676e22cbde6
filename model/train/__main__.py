"""``python -m model.train`` (and ``torchrun -m model.train``): the training loop's command line."""

import sys

from model.train.loop import main

if __name__ == "__main__":
    sys.exit(main())
