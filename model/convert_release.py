"""``python -m model.convert_release SRC_DIR OUT_DIR``: the command users know; the converter is
``model/weights/release.py``."""

import sys

from model.weights.release import main

if __name__ == "__main__":
    sys.exit(main())
