"""Sound stimuli: WAV files → ``(stimulus_ids, float32 waveforms N×samples, sample_rate)``.

A stimulus id is the hash of the WAV file's bytes (``snd-…``), the rule that
:mod:`sparsealign.recordings.datasets` uses for the natural-sounds fMRI components, so
network activations and recordings of the same sound share an id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsealign.errors import fail
from sparsealign.stimuli import content_id
from sparsealign.stimuli.mirror import default_mirror_dir, read_checksums, verify_files

NH2015_WAV_DIR = "nh2015_natsounds/wav/"


def read_wav(path) -> tuple[np.ndarray, int]:
    """Mono waveform of a PCM WAV file as float32 in [-1, 1], and its sample rate."""
    from scipy.io import wavfile

    try:
        rate, samples = wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise fail(path, f"not a readable WAV file ({exc})", "a PCM WAV file") from None
    if samples.ndim != 1:
        raise fail(path, f"{samples.shape[1]} channels", "a mono recording")
    if np.issubdtype(samples.dtype, np.integer):
        return (samples / -float(np.iinfo(samples.dtype).min)).astype(np.float32), rate
    return samples.astype(np.float32), rate


def load_wav_files(paths) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids, stacked waveforms and the common sample rate of equally long mono WAV files."""
    paths = [Path(p) for p in paths]
    ids = np.array([content_id(p.read_bytes(), "snd") for p in paths])
    waves, rates = zip(*(read_wav(p) for p in paths))
    if len(set(rates)) != 1 or len({w.size for w in waves}) != 1:
        raise fail(paths[0].parent, f"sample rates {sorted(set(rates))} and lengths "
                                    f"{sorted({w.size for w in waves})}",
                   "one sample rate and one length for all sounds")
    return ids, np.stack(waves), rates[0]


def load_nh2015_sounds(mirror_dir=None) -> tuple[np.ndarray, np.ndarray, int]:
    """The 165 natural sounds (2 s, 44.1 kHz), checksum-verified, in file-name order."""
    mirror_dir = Path(mirror_dir) if mirror_dir is not None else default_mirror_dir()
    wavs = sorted(rel for rel in read_checksums(mirror_dir) if rel.startswith(NH2015_WAV_DIR))
    return load_wav_files(verify_files(mirror_dir, wavs).values())
