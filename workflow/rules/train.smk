# The captioners: soft and hard attention (and any variant under `models`), one job per dataset and model.


rule train:
    """Train with length batches, keep the epoch best by `select_on` on val; resumes from its checkpoint.

    With several GPUs (resource gpu > 1) it runs one DDP process per GPU under torchrun."""
    input:
        captions=f"{RESULTS}/{{dataset}}/captions.h5",
        vocab=f"{RESULTS}/{{dataset}}/vocab.csv",
        table=f"{RESULTS}/{{dataset}}/captions.csv",
        lengths=f"{RESULTS}/{{dataset}}/lengths.json",
        features=features_file,
    output:
        model=f"{RESULTS}/{{dataset}}/{{model}}/model.pt",
        log_csv=f"{RESULTS}/{{dataset}}/{{model}}/train_log.csv",
        curves=report(
            f"{RESULTS}/{{dataset}}/{{model}}/curves.png",
            category="Training",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
    log:
        f"{RESULTS}/logs/{{dataset}}/train_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/train_{{model}}.tsv"
    conda:
        ENV
    threads: training_threads
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"],
    params:
        settings=model_settings,
        # Outside the declared outputs, which Snakemake deletes before a job starts.
        checkpoint=f"{RESULTS}/checkpoints/{{dataset}}/{{model}}.pt",
        seed=config["seed"],
        device=config["device"],
        processes=training_processes,
    shell:
        "sat train {input.captions:q} {input.vocab:q} {input.table:q} {input.lengths:q} {input.features:q}"
        " --settings {params.settings:q} --model {output.model:q} --log-csv {output.log_csv:q} --curves {output.curves:q}"
        " --checkpoint {params.checkpoint:q} --seed {params.seed} --threads {threads} --device {params.device:q}"
        " --gpus {resources.gpu} --processes {params.processes} > {log:q} 2>&1"
