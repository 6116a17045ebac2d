"""Running a training job: inputs resolved before Ray starts, launch, restarts, failure reports, console, mlflow."""

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)
