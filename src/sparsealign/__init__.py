"""sparsealign: does superposition hide the alignment between neural representations?

Activations, sparse autoencoders, latents and recordings share one on-disk contract
(:mod:`sparsealign.schema`); alignment metrics live in :mod:`sparsealign.align`.
Heavy dependencies are imported inside the functions that need them so that
``import sparsealign`` stays fast.
"""

__version__ = "0.1.0"
