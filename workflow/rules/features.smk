# CNN annotation vectors: one (L, D) float16 matrix per image, in images.csv order.
# A dataset with `features.shards: N` > 1 is encoded as N jobs over ranges of images, then merged.


rule features:
    """Encode every image with a frozen CNN (GPU when present) into results/{dataset}/features/{encoder}.h5.

    features_shard: the same for the k-th (from 0) of n ranges of images, split at batch boundaries; deleted once merged.
    """
    input:
        images=f"{RESULTS}/{{dataset}}/images.csv",
        sources=lookup(dpath="{dataset}/image_sources", within=SOURCES),
    output:
        f"{RESULTS}/{{dataset}}/features/{{encoder}}.h5",
    log:
        f"{RESULTS}/logs/{{dataset}}/features_{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/features_{{encoder}}.tsv"
    wildcard_constraints:
        dataset=datasets_pattern(sharded=False),
    conda:
        ENV
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=config["gpus"],
    params:
        f=features_settings,
        random=random_weights_option,
        device=config["device"],
        shard=[],  # features_shard: --shard K/N
    shell:
        "sat features {input.images:q} {output:q} --encoder {wildcards.encoder} --layer {params.f[layer]:q}"
        " --image-size {params.f[image_size]} --batch-size {params.f[batch_size]} --workers {params.f[workers]}"
        " --precision {params.f[precision]}"
        " --threads {threads} --device {params.device:q} --gpus {resources.gpu} {params.random:q} {params.shard:q}"
        " > {log:q} 2>&1"


use rule features as features_shard with:
    output:
        temp(f"{RESULTS}/{{dataset}}/features/shards/{{encoder}}.{{k}}-of-{{n}}.h5"),
    log:
        f"{RESULTS}/logs/{{dataset}}/features_{{encoder}}.{{k}}-of-{{n}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/features_{{encoder}}.{{k}}-of-{{n}}.tsv"
    wildcard_constraints:
        dataset=datasets_pattern(sharded=True),
        k=r"\d+",
        n=r"\d+",
    params:
        shard=shard_option,


rule merge_features:
    """One features file from complete shards; a partial or foreign shard stops the merge."""
    input:
        images=f"{RESULTS}/{{dataset}}/images.csv",
        shards=feature_shards,
    output:
        f"{RESULTS}/{{dataset}}/features/{{encoder}}.h5",
    log:
        f"{RESULTS}/logs/{{dataset}}/merge_features_{{encoder}}.log",
    wildcard_constraints:
        dataset=datasets_pattern(sharded=True),
    conda:
        ENV
    shell:
        "sat merge-features {input.images:q} {output:q} {input.shards:q} > {log:q} 2>&1"
