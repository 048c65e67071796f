"""``python -m ebyd_bench``: the ``ebyd-bench`` command line."""

import sys

from ebyd_bench.cli import main

sys.exit(main())
