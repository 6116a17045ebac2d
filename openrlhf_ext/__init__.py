"""openrlhf-ext: the advantage modes of four RLVR papers and verifiable math rewards on OpenRLHF 0.11.2.

Importing the package, or its ground layer (``algorithms``, ``rewards``, ``data``, ``models``), has no
side effects. The layers that import OpenRLHF's Ray modules install the GPU-module stand-ins of
:mod:`openrlhf_ext.reaches` first (see docs/architecture.md).
"""

__version__ = "0.1.0"
