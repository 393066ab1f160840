"""Models; importing registers the ResNeSt backbones."""

from .backbone import *  # noqa: F401,F403
