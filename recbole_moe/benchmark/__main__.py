"""``python -m recbole_moe.benchmark [run|report] ...``."""

import sys

from recbole_moe.benchmark import main

sys.exit(main())
