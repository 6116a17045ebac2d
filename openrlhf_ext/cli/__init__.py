"""The command lines: ``train_ppo_ray`` (OpenRLHF's flags, extended), ``evaluate`` and ``sweep``."""

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)
