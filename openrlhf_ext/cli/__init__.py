"""The command lines: ``train_ppo_ray`` (OpenRLHF's flags, extended), ``evaluate`` and ``sweep``."""

import warnings

from openrlhf_ext.reaches import Where, apply
from openrlhf_ext.reporting.console import configure_logging

# torch imports `pynvml`, which nvidia-ml-py provides; OpenRLHF 0.11.2 also requires the deprecated
# `pynvml` distribution, whose import hook (a .pth file) warns on that import. Depending on
# nvidia-ml-py cannot remove the hook, so this one warning, about our dependencies' packaging, is dropped.
warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)
apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)
configure_logging()  # every command: where our messages go is decided once
