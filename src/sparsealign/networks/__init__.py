"""The torch code of the built-in networks, imported only when a network is built.

:mod:`sparsealign.models` registers each network by name with its constants and layers
and imports its module here lazily, so that listing models (every Snakefile parse does)
never imports torch.
"""
