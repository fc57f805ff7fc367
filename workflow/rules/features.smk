# CNN annotation vectors: one (L, D) float16 matrix per image, in images.csv order.


rule features:
    """Encode every image with a frozen CNN (GPU when present) into results/{dataset}/features/{encoder}.h5."""
    input:
        images=f"{RESULTS}/{{dataset}}/images.csv",
        sources=image_sources,
    output:
        f"{RESULTS}/{{dataset}}/features/{{encoder}}.h5",
    params:
        f=features_settings,
        random=lambda wc: "" if DATASETS[wc.dataset]["features"]["pretrained"] else "--random-weights",
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{dataset}}/features_{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/features_{{encoder}}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=config["gpus"],
    conda:
        ENV
    shell:
        "sat features {input.images} {output} --encoder {wildcards.encoder} --layer {params.f[layer]}"
        " --image-size {params.f[image_size]} --batch-size {params.f[batch_size]} --workers {params.f[workers]}"
        " --threads {threads} --device {params.device} {params.random} > {log} 2>&1"
