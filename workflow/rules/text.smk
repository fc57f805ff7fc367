# From captions JSON to tables, vocabulary, token ids and the paper's length dictionary.


rule prepare:
    """Karpathy JSON + images -> captions.csv (one row per caption) and images.csv (one per usable image)."""
    input:
        captions=lookup(dpath="{dataset}/captions_source", within=SOURCES),
        images=lookup(dpath="{dataset}/image_sources", within=SOURCES),
    output:
        captions=f"{RESULTS}/{{dataset}}/captions.csv",
        images=f"{RESULTS}/{{dataset}}/images.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/prepare.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/prepare.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        json=lookup(dpath="{dataset}/captions_json", within=SOURCES),
        dirs=lookup(dpath="{dataset}/image_dirs", within=SOURCES),
        tokenizer=lookup(dpath="{dataset}/tokenizer", within=DATASETS),
        restval=lookup(dpath="{dataset}/restval", within=DATASETS),
        bad_images=lookup(dpath="{dataset}/bad_images", within=DATASETS),
    shell:
        "sat prepare {params.json:q} {output.captions:q} {output.images:q} --image-dirs {params.dirs:q}"
        " --tokenizer {params.tokenizer:q} --restval {params.restval:q} --bad-images {params.bad_images:q}"
        " --threads {threads} > {log:q} 2>&1"


rule vocab:
    """The most frequent train words (the paper: 10,000) plus <pad>, <start>, <end>, <unk>."""
    input:
        f"{RESULTS}/{{dataset}}/captions.csv",
    output:
        f"{RESULTS}/{{dataset}}/vocab.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/vocab.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/vocab.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        size=lookup(dpath="{dataset}/vocab_size", within=DATASETS),
    shell:
        "sat vocab {input:q} {output:q} --size {params.size:q} > {log:q} 2>&1"


rule encode:
    """Token ids per caption, with lengths, image indices and splits."""
    input:
        captions=f"{RESULTS}/{{dataset}}/captions.csv",
        vocab=f"{RESULTS}/{{dataset}}/vocab.csv",
    output:
        f"{RESULTS}/{{dataset}}/captions.h5",
    log:
        f"{RESULTS}/logs/{{dataset}}/encode.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/encode.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        max_length=lookup(dpath="{dataset}/max_length", within=DATASETS),
    shell:
        "sat encode {input.captions:q} {input.vocab:q} {output:q} --max-length {params.max_length} > {log:q} 2>&1"


rule lengths:
    """The paper's length dictionary: train caption length -> caption indices."""
    input:
        f"{RESULTS}/{{dataset}}/captions.h5",
    output:
        f"{RESULTS}/{{dataset}}/lengths.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/lengths.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/lengths.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "sat lengths {input:q} {output:q} > {log:q} 2>&1"
