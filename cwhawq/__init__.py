"""cwhawq: channel-wise Hessian-aware mixed-precision quantization search."""

__version__ = "0.1.0"
