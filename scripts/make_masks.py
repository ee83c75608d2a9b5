"""Write the seeded mask suite (same as ``hilo-export masks``).

    python scripts/make_masks.py --out masks --resolution 1024x1024 --per-category 32
"""

import sys

from hilo_export.cli import main

if __name__ == "__main__":
    sys.exit(main(["masks", *sys.argv[1:]]))
