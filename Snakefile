# Show, Attend and Tell (Xu et al., 2015): the whole pipeline, from dataset archives to features.
# `snakemake --cores 2` builds the datasets listed in config `run` (default: the offline demo).
# The map of stages is in workflow/rules/; the logic is in the show_attend_tell package (src/).

import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/decode.smk"


rule all:
    input:
        dataset_targets(config["run"]),
    default_target: True
