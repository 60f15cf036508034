"""Train and evaluate a recbole-moe or RecBole model, like RecBole's ``run_recbole.py``.

Example:
    python run_recbole_moe.py --model HyMoERec --dataset ml-100k --hidden_size=128 --epochs=50
"""

import sys

from recbole_moe.cli import main

if __name__ == "__main__":
    sys.exit(main())
