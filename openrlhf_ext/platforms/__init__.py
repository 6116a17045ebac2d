"""The platform of a run, CUDA or CPU: chosen once from the Ray cluster it runs on (:mod:`.choice`),
owning everything that differs between the two (:mod:`.kinds`)."""

from openrlhf_ext.platforms.choice import choose_platform, platform_of_cluster, platform_of_machine, this_machine
from openrlhf_ext.platforms.kinds import CpuPlatform, Platform, PlatformError

__all__ = [
    "CpuPlatform",
    "Platform",
    "PlatformError",
    "choose_platform",
    "platform_of_cluster",
    "platform_of_machine",
    "this_machine",
]
