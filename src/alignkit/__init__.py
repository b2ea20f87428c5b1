"""alignkit: alignment fine-tuning of causal language models.

The pipeline is the package layout: ``stages/`` holds one file per stage (SFT, ...), ``losses/`` the
pure loss functions, ``data/`` the formats and tokenisation, ``models/`` loading and PEFT, and
``training/`` the plain helpers the stages share.
"""

__version__ = "0.1.0"
