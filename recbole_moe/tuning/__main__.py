"""``python -m recbole_moe.tuning`` = ``recbole-moe tune``."""

import sys

from recbole_moe.tuning.cli import main

sys.exit(main())
