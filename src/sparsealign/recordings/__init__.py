"""Neural recordings → the store contract of :mod:`sparsealign.schema` (``kind="recording"``).

``datasets`` imports the named real datasets of the data mirror (checksum-verified);
``nwb``, ``xarray_files`` and ``npz`` read a user's own recordings.
"""
