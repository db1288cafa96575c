"""What a run checks before Snakemake builds a job, and what ``sparsealign check`` reports.

The config (schema and cross-field rules), every data-mirror file the enabled experiments
read (against ``SHA256SUMS``), and the user's own input files. One message per problem.
"""

from __future__ import annotations

from pathlib import Path

from sparsealign.errors import SparsealignError, fail


def mirror_problems(config: dict) -> list[str]:
    """One message per mirror file the config needs that is missing or fails its checksum."""
    from sparsealign.plan import mirror_files
    from sparsealign.stimuli.mirror import CHECKSUM_FILE, default_mirror_dir, verify_files

    mirror = default_mirror_dir(config.get("data_mirror"))
    no_sums = [str(fail(mirror / CHECKSUM_FILE, "no such file",
                        "the data mirror's checksum list (data_mirror / SPARSEALIGN_DATA_MIRROR)"))]
    try:
        needed = mirror_files(config)
    except SparsealignError as exc:  # listing a dataset's files reads the checksum list
        return no_sums if not (mirror / CHECKSUM_FILE).is_file() else [str(exc)]
    if needed and not (mirror / CHECKSUM_FILE).is_file():
        return no_sums
    problems = []
    for relative in needed:
        try:
            verify_files(mirror, [relative])
        except SparsealignError as exc:
            problems.append(str(exc))
    return problems


def input_problems(config: dict) -> list[str]:
    """One message per input file named by the config (images, recordings, id lists) that is missing."""
    from sparsealign.config import PATH_KEYS, SECTIONS

    problems = []
    for section in SECTIONS:
        for name, entry in config[section].items():
            for key in PATH_KEYS:
                if key in entry and not Path(entry[key]).exists():
                    problems.append(str(fail(entry[key], "no such file or folder",
                                             f"the {key} of {section}.{name}")))
    return problems


def config_problems(path) -> list[str]:
    """Every problem of the config at ``path`` and of the files it needs; empty when none."""
    from sparsealign.config import config_problems as schema_problems, load_config

    problems = schema_problems(path)
    if problems:
        return problems
    config = load_config(path)
    return input_problems(config) + mirror_problems(config)
