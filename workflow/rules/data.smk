# Where the images and captions come from: the generated demo set, or downloaded/local archives.


rule demo_dataset:
    """The offline demo set: seeded scenes of coloured shapes, Karpathy JSON, object boxes."""
    output:
        directory(f"{DATA}/demo"),
    log:
        f"{RESULTS}/logs/demo_dataset.log",
    benchmark:
        f"{RESULTS}/benchmarks/demo_dataset.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        size=config["demo"],
        seed=config["seed"],
    shell:
        "sat demo {output:q} --train {params.size[train]} --val {params.size[val]} --test {params.size[test]}"
        " --image-size {params.size[image_size]} --seed {params.seed} > {log:q} 2>&1"


rule fetch:
    """Download an archive (resumable, md5-checked), or link a local copy."""
    output:
        f"{DATA}/archives/{{archive}}",
    log:
        f"{RESULTS}/logs/fetch/{{archive}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch/{{archive}}.tsv"
    retries: 2
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=600,
    params:
        url=lookup(dpath="archives/{archive}/url", within=config),
        md5=lookup(dpath="archives/{archive}/md5", within=config),
    shell:
        "sat fetch {params.url:q} {output:q} --md5 {params.md5:q} > {log:q} 2>&1"


rule extract:
    """Unpack an archive into its own folder, atomically."""
    input:
        archive_file,
    output:
        directory(f"{DATA}/extracted/{{stem}}"),
    log:
        f"{RESULTS}/logs/extract/{{stem}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract/{{stem}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    shell:
        "sat extract {input:q} {output:q} > {log:q} 2>&1"
