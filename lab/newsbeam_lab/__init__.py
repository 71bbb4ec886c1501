"""newsbeam's lab: training, fine-tuning, evaluation and calibration of the
label heads. Not shipped to workers; ``newsbeam eval`` and ``newsbeam
train-heads`` use it when it is installed (``pip install -e ./lab``)."""
import os
from typing import Optional

# The public datasets live outside the repository (a user's clone has none),
# so nothing here guesses a path: --data_root, or this variable, names them.
DATA_ROOT_ENV = "NEWSBEAM_DATA_ROOT"


def default_data_root() -> Optional[str]:
    return os.environ.get(DATA_ROOT_ENV) or None
