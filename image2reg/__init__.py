"""image2reg: link chromatin images of perturbation screens to gene regulation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("image2reg")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0.0.0+source"
