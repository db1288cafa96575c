"""Sound stimuli: WAV files → (content ids, float waveforms), ids shared with recordings."""

import numpy as np
import pytest
from scipy.io import wavfile

from sparsealign.errors import SparsealignError
from sparsealign.recordings.datasets import nh2015_stores
from sparsealign.stimuli import content_id
from sparsealign.stimuli.mirror import default_mirror_dir
from sparsealign.stimuli.sounds import load_nh2015_sounds, load_wav_files, read_wav

MIRROR = default_mirror_dir()


def test_int16_wavs_become_float_waveforms_with_content_ids(tmp_path):
    for name, value in (("a.wav", 16384), ("b.wav", -32768)):
        wavfile.write(tmp_path / name, 8000, np.full(10, value, dtype=np.int16))
    ids, waves, rate = load_wav_files([tmp_path / "a.wav", tmp_path / "b.wav"])
    assert rate == 8000 and waves.shape == (2, 10) and waves.dtype == np.float32
    np.testing.assert_allclose(waves[:, 0], [0.5, -1.0])
    assert ids[0] == content_id((tmp_path / "a.wav").read_bytes(), "snd")


def test_stereo_unreadable_and_unequal_sounds_are_errors(tmp_path):
    wavfile.write(tmp_path / "st.wav", 8000, np.zeros((10, 2), dtype=np.int16))
    with pytest.raises(SparsealignError, match=r"st\.wav: 2 channels"):
        read_wav(tmp_path / "st.wav")
    (tmp_path / "x.wav").write_bytes(b"junk")
    with pytest.raises(SparsealignError, match=r"x\.wav: not a readable WAV"):
        read_wav(tmp_path / "x.wav")
    wavfile.write(tmp_path / "a.wav", 8000, np.zeros(10, dtype=np.int16))
    wavfile.write(tmp_path / "b.wav", 8000, np.zeros(12, dtype=np.int16))
    with pytest.raises(SparsealignError, match="one sample rate and one length"):
        load_wav_files([tmp_path / "a.wav", tmp_path / "b.wav"])


@pytest.mark.skipif(not (MIRROR / "SHA256SUMS").is_file(), reason=f"no data mirror at {MIRROR}")
def test_natural_sounds_share_ids_with_the_fmri_components():
    ids, waves, rate = load_nh2015_sounds(MIRROR)
    assert waves.shape == (165, 88200) and rate == 44100
    recorded = nh2015_stores(MIRROR)["components"]["stimulus"].values
    assert set(ids) == set(recorded)
