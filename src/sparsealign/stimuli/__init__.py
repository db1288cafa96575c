"""Stimulus sets as ``(stimulus_ids, array)`` pairs.

A stimulus id is a hash of the stimulus file's bytes (:func:`content_id`), so the same
image shown in two recording sessions, or fed to two networks, is one stimulus.
"""

import hashlib


def content_id(data: bytes, prefix: str) -> str:
    """Stable stimulus id ``<prefix>-<first 16 hex digits of SHA-256(data)>``.

    Parameters
    ----------
    data : bytes
        The stimulus file as stored (JPEG, WAV …), not its decoded pixels or samples.
    prefix : str
        Short kind tag, ``"img"`` for images and ``"snd"`` for sounds.
    """
    return f"{prefix}-{hashlib.sha256(data).hexdigest()[:16]}"
