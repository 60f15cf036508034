"""``python -m recbole_moe.benchmark [run|report] ...``, quiet as ``recbole-moe benchmark``:
RecBole's internal warnings go to each run's log file."""

import sys

from recbole_moe.benchmark import main
from recbole_moe.quiet import internal_warnings_to_log

with internal_warnings_to_log():
    status = main()
sys.exit(status)
