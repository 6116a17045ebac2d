"""openrlhf-ext: the advantage modes of four RLVR papers and verifiable math rewards on OpenRLHF 0.11.2."""

from openrlhf_ext.platform import install_import_shims

install_import_shims()

__version__ = "0.1.0"
