"""Named real datasets of the data mirror → recording stores, after checking every file.

``cowley2023_v4`` (Cowley et al. 2023, macaque V4 spike counts to natural images): one
store ``<session>.zarr`` per session, (stimulus, unit) repeat-averaged counts in 100 ms
bins; where the mirror holds the raw trials (session 210325) also ``<session>_repeats.zarr``
with a ``repeat`` dim whose NaN padding (images shown fewer times) is kept. Stimulus ids
are content hashes of the JPEGs (:func:`sparsealign.stimuli.content_id`), shared with
the image stimuli. A session that shows one image at several indices (190925: 300
images twice; 210621: 2 images) gets one stimulus for it, the mean of those columns
(``n_presentations`` says how many); ``image_index`` is the 1-based index of its first
presentation. Animal, split, repeats and image types come from the authors' readme table.

``nh2015_natsounds`` (Norman-Haignere et al. 2015, human auditory cortex fMRI): one
store ``components.zarr``, 165 sounds × 6 component response profiles (``R`` of
``components.mat``). Stimulus ids are content hashes of the WAV files (``snd-…``), the
same rule as for images, so a sound loader that hashes the same files matches them;
the original name (``stim28_big_band_music``) and category are coords on ``stimulus``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sparsealign import schema
from sparsealign.errors import fail
from sparsealign.recordings.common import merge_duplicate_stimuli, recording_store
from sparsealign.stimuli import content_id
from sparsealign.stimuli.images import COWLEY_V4_SESSIONS, cowley_v4_image_zip, indexed_jpeg_ids
from sparsealign.stimuli.mirror import default_mirror_dir, read_checksums, verify_files

COWLEY_README = "cowley2023_v4/readme_original.txt"
COWLEY_CITATION = ("Cowley, Stan, Pillow & Smith (2023), Compact deep neural network models "
                   "of visual cortex; github.com/cowleygroup/V4_compact_models @ f4552ad")
NH2015_CITATION = ("Norman-Haignere, Kanwisher & McDermott (2015), Neuron; "
                   "github.com/snormanhaignere/natsound165-neuron2015 @ b41b99f")
SESSION_ROW = re.compile(r"^(\d{6})\s+(\w+)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.+?)\s*$")


def cowley_v4_files(session: str) -> dict[str, str]:
    """Relative mirror paths of one session: ``images``, ``responses`` and ``raw``."""
    return {"images": cowley_v4_image_zip(session),
            "responses": f"cowley2023_v4/responses_repeat_averaged/responses_{session}.npy",
            "raw": f"cowley2023_v4/responses_raw/responses_{session}.npy"}


def parse_cowley_session_table(text: str) -> dict[str, dict]:
    """Rows of the session table in the authors' ``readme_original.txt``, by session id."""
    table = {}
    for line in text.splitlines():
        match = SESSION_ROW.match(line.strip())
        if match:
            session, animal, split, neurons, repeats, images, types = match.groups()
            table[session] = {"animal": animal, "split": split, "n_neurons": int(neurons),
                              "repeats_per_image": int(repeats), "n_images": int(images),
                              "image_types": types}
    return table


def _load_matrix(path, ndim):
    values = np.load(path, allow_pickle=False)
    if values.ndim != ndim:
        raise fail(path, f"array of shape {values.shape}", f"{ndim} dims (neurons, images, …)")
    return values


def cowley_v4_session_stores(mirror_dir, session: str, paths: dict, table: dict,
                             config: dict | str = "") -> dict:
    """Stores of one verified V4 session: ``{session: 2-D[, f"{session}_repeats": 3-D]}``."""
    row = table.get(session)
    if row is None:
        raise fail(Path(mirror_dir) / COWLEY_README, f"no row for session {session}",
                   "the authors' session table")
    ids = indexed_jpeg_ids(paths["images"])
    stores = {}
    for key, name in (("responses", session), ("raw", f"{session}_repeats")):
        if key not in paths:
            continue
        values = _load_matrix(paths[key], 2 if key == "responses" else 3)
        if values.shape[:2] != (row["n_neurons"], ids.size):
            raise fail(paths[key], f"shape {values.shape}",
                       f"({row['n_neurons']} neurons, {ids.size} images of "
                       f"{paths['images'].name}{', repeats' if key == 'raw' else ''})")
        merged, stimulus_ids, first, n_rows = merge_duplicate_stimuli(
            np.moveaxis(values, 0, 1), ids)
        attrs = {"dataset": "cowley2023_v4", "session": session, "animal": row["animal"],
                 "split": row["split"], "repeats_per_image": row["repeats_per_image"],
                 "image_types": row["image_types"],
                 "units": "spike counts per 100 ms bin" + ("" if key == "raw"
                                                         else ", mean over repeats"),
                 "responses_file": str(paths[key].relative_to(mirror_dir)),
                 "citation": COWLEY_CITATION}
        coords = {"image_index": ("stimulus", first + 1),
                  "n_presentations": ("stimulus", n_rows),
                  "session": ("unit", np.full(values.shape[0], session))}
        unit_ids = [f"{session}/{i:05d}" for i in range(values.shape[0])]
        stores[name] = recording_store(merged, stimulus_ids, unit_ids, path=paths[key],
                                       source="cowley2023_v4", layer=session, config=config,
                                       attrs=attrs, coords=coords)
    return stores


def cowley_v4_stores(mirror_dir, sessions=COWLEY_V4_SESSIONS, config: dict | str = "") -> dict:
    """All stores of the given V4 sessions; every file is verified before any is read."""
    mirror_dir = Path(mirror_dir)
    unknown = sorted(set(sessions) - set(COWLEY_V4_SESSIONS))
    if unknown:
        raise fail("cowley2023_v4", f"unknown sessions {unknown}",
                   f"sessions among {list(COWLEY_V4_SESSIONS)}")
    listed = read_checksums(mirror_dir)
    wanted = {s: {k: rel for k, rel in cowley_v4_files(s).items()
                  if k != "raw" or rel in listed} for s in sessions}
    verified = verify_files(mirror_dir, [COWLEY_README] + [rel for files in wanted.values()
                                                           for rel in files.values()])
    table = parse_cowley_session_table(verified[COWLEY_README].read_text())
    stores = {}
    for session, files in wanted.items():
        paths = {key: verified[rel] for key, rel in files.items()}
        stores |= cowley_v4_session_stores(mirror_dir, session, paths, table, config)
    return stores


def nh2015_stores(mirror_dir, config: dict | str = "") -> dict:
    """``{"components": store}``: 165 sounds × 6 fMRI components, files verified first."""
    import scipy.io

    mirror_dir = Path(mirror_dir)
    wav_files = sorted(rel for rel in read_checksums(mirror_dir)
                       if rel.startswith("nh2015_natsounds/wav/"))
    mat_rel, labels_rel = "nh2015_natsounds/components.mat", "nh2015_natsounds/category_labels.csv"
    verified = verify_files(mirror_dir, [mat_rel, labels_rel] + wav_files)
    mat = scipy.io.loadmat(verified[mat_rel])
    for key in ("R", "stim_names", "component_names"):
        if key not in mat:
            raise fail(verified[mat_rel], f"no variable {key!r}", "R, stim_names, component_names")
    names = [str(np.ravel(cell)[0]) for cell in np.ravel(mat["stim_names"])]
    components = [str(np.ravel(cell)[0]) for cell in np.ravel(mat["component_names"])]
    categories = dict(line.split(",", 1) for line in
                      verified[labels_rel].read_text().splitlines() if line.strip())
    ids = []
    for name in names:
        relative = f"nh2015_natsounds/wav/{name}.wav"
        if relative not in verified:
            raise fail(verified[mat_rel], f"sound {name!r} has no verified file {relative}",
                       "one WAV per sound")
        if name not in categories:
            raise fail(verified[labels_rel], f"no category for {name!r}", "a label per sound")
        ids.append(content_id(verified[relative].read_bytes(), "snd"))
    attrs = {"dataset": "nh2015_natsounds",
             "units": "fMRI component response profiles (R of components.mat)",
             "responses_file": mat_rel, "citation": NH2015_CITATION}
    coords = {"stim_name": ("stimulus", names),
              "category": ("stimulus", [categories[n].strip() for n in names])}
    store = recording_store(np.asarray(mat["R"], dtype=np.float64), ids,
                            [f"component/{c}" for c in components], path=verified[mat_rel],
                            source="nh2015_natsounds", layer="components", config=config,
                            attrs=attrs, coords=coords)
    return {"components": store}


DATASETS = {"cowley2023_v4": cowley_v4_stores, "nh2015_natsounds": nh2015_stores}


def dataset_files(name: str, members=None) -> list[str]:
    """Relative mirror paths that the stores ``members`` (default: all) of dataset ``name``
    are made from."""
    if name == "cowley2023_v4":
        members = COWLEY_V4_SESSIONS if members is None else members
        listed = read_checksums(default_mirror_dir())
        return [COWLEY_README] + [rel for s in members for k, rel in cowley_v4_files(s).items()
                                  if k != "raw" or rel in listed]
    if name == "nh2015_natsounds":
        return ["nh2015_natsounds/components.mat", "nh2015_natsounds/category_labels.csv"]
    raise fail(f"dataset {name!r}", "unknown", f"one of {sorted(DATASETS)}")


def import_dataset(name: str, mirror_dir, out_dir, config: dict | str = "",
                   **options) -> list[Path]:
    """Verify, convert and write a named dataset; returns the written store paths.

    Parameters
    ----------
    name : {"cowley2023_v4", "nh2015_natsounds"}
    mirror_dir : path
        Root of the data mirror (holds ``SHA256SUMS``).
    out_dir : path
        Stores are written as ``<out_dir>/<store>.zarr``, each atomically, and only after
        every input file has been verified and converted.
    config : dict or str
        Config slice of the job, hashed into each store's ``config_sha``.
    **options
        ``sessions=[...]`` restricts ``cowley2023_v4`` to some sessions.
    """
    if name not in DATASETS:
        raise fail(f"dataset {name!r}", "unknown", f"one of {sorted(DATASETS)}")
    stores = DATASETS[name](Path(mirror_dir), config=config, **options)
    return [schema.save_store(ds, Path(out_dir) / f"{store}.zarr") for store, ds in stores.items()]
