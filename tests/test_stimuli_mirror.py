"""The data mirror's checksum check: listed, present and unchanged, or a named error."""

import hashlib

import pytest

from sparsealign.errors import SparsealignError
from sparsealign.stimuli.mirror import MIRROR_ENV, default_mirror_dir, verify_files


@pytest.fixture
def mirror(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.bin").write_bytes(b"alpha")
    digest = hashlib.sha256(b"alpha").hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  ./set/a.bin\n{digest}  ./set/gone.bin\n")
    return tmp_path


def test_verified_files_are_returned_by_relative_path(mirror):
    assert verify_files(mirror, ["set/a.bin"]) == {"set/a.bin": mirror / "set" / "a.bin"}


def test_a_changed_file_is_named(mirror):
    (mirror / "set" / "a.bin").write_bytes(b"alphA")
    with pytest.raises(SparsealignError, match=r"set/a\.bin: SHA-256 .* differs from SHA256SUMS"):
        verify_files(mirror, ["set/a.bin"])


def test_a_missing_file_is_named(mirror):
    with pytest.raises(SparsealignError, match=r"set/gone\.bin: missing from the data mirror"):
        verify_files(mirror, ["set/gone.bin"])


def test_an_unlisted_file_is_an_error(mirror):
    with pytest.raises(SparsealignError, match=r"SHA256SUMS: no checksum for set/new\.bin"):
        verify_files(mirror, ["set/new.bin"])


def test_a_mirror_without_checksums_is_an_error(tmp_path):
    with pytest.raises(SparsealignError, match="SHA256SUMS: no such file"):
        verify_files(tmp_path, ["x"])


def test_the_mirror_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    assert default_mirror_dir() == tmp_path
    monkeypatch.delenv(MIRROR_ENV)
    assert default_mirror_dir().parts[-2:] == ("shared", "data")


@pytest.mark.parametrize("line", ["just-one-field", "abc123  ./set/a.bin", f"{'g' * 64}  ./set/a.bin"])
def test_a_malformed_checksum_line_names_the_file_and_line(mirror, line):
    sums = mirror / "SHA256SUMS"
    sums.write_text(sums.read_text() + f"\n{line}\n")
    with pytest.raises(SparsealignError) as error:
        verify_files(mirror, ["set/a.bin"])
    assert str(error.value) == (f"{sums}:4: malformed line {line!r}; expected "
                                "'<64 hex digits>  <relative path>' (sha256sum format)")
