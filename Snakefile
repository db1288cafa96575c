# sparsealign: does superposition hide the alignment between neural representations?
# Snakemake owns the DAG; every rule body is one `python -m sparsealign <stage>` call.
# The rules are generic over stimuli, systems and experiments: config/*.yaml names them.
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/systems.smk"
include: "workflow/rules/sae.smk"
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
        PLAN.report,
    default_target: True
