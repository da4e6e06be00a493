"""Figures of the reports, one module per stage area. Computing lives elsewhere: these functions take
tables and arrays and only draw (none opens a file).

Every figure is importable from here (``plotting.screen_ranking``); new ones go into the module of their
stage area and its ``__all__``.
"""

from image2reg.plotting.cnn import *  # noqa: F403
from image2reg.plotting.cnn import __all__ as _cnn
from image2reg.plotting.data import *  # noqa: F403
from image2reg.plotting.data import EFFECT_COLORS
from image2reg.plotting.data import __all__ as _data
from image2reg.plotting.network import *  # noqa: F403
from image2reg.plotting.network import __all__ as _network
from image2reg.plotting.translation import *  # noqa: F403
from image2reg.plotting.translation import __all__ as _translation

__all__ = ["EFFECT_COLORS", *_data, *_cnn, *_network, *_translation]
