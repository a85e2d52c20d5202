"""The version of layermap (LM_VERSION in include/layermap.h)."""
__version__ = "0.1.0"
