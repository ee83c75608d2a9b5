"""Per-step latency of the HiLo engines against the full-token engine, per mask category.

The latency half of ``hilo-export bench`` (flux-shaped at 1024x1024 by default):

    python scripts/validate_latency.py --out reports/latency [--repeats 3]
"""

import sys

from hilo_export.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--skip-fidelity", *sys.argv[1:]]))
