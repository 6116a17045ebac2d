"""Our subclasses of OpenRLHF's Ray classes: controller, experience maker, policy actor and loss, checkpoints."""

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)
