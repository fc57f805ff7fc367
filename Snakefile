# Show, Attend and Tell (Xu et al., 2015): the whole pipeline, from dataset archives to Table 1.
# `snakemake --cores 2` builds the datasets listed in config `run` (default: the offline demo), trains every
# model of config `models` on each, and writes results/table1.{csv,md}; `snakemake flickr8k_soft` builds one row.
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
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        dataset_targets(config["run"]),
        f"{RESULTS}/table1.md",


# One target per row of Table 1: `snakemake flickr8k_soft`, `snakemake coco_hard`, ...
for _dataset in DATASETS:
    for _model in config["models"]:

        rule:
            name:
                f"{_dataset}_{_model}"
            input:
                row_targets(_dataset, _model),
            localrule: True
