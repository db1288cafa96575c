# sparsealign: does superposition hide the alignment between neural representations?
# Snakemake owns the DAG; every rule body is one `python -m sparsealign <stage>` call.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/report.smk"


onstart:
    start_tracking()


onsuccess:
    stop_tracking("FINISHED")


onerror:
    stop_tracking("FAILED")


rule all:
    input:
        REPORT,
    default_target: True
