# Captions of the evaluation splits by batched beam search, with the attention of every word.


rule decode:
    """The selected model captions every image of a split: COCO results JSON + attention HDF5."""
    input:
        model=f"{RESULTS}/{{dataset}}/{{model}}/model.pt",
        features=features_file,
        images=f"{RESULTS}/{{dataset}}/images.csv",
    output:
        captions=f"{RESULTS}/{{dataset}}/{{model}}/captions_{{split}}.json",
        attention=f"{RESULTS}/{{dataset}}/{{model}}/attention_{{split}}.h5",
    log:
        f"{RESULTS}/logs/{{dataset}}/decode_{{model}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/decode_{{model}}_{{split}}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpus"],
    params:
        d=lookup(dpath="{dataset}/decode", within=DATASETS),
        device=config["device"],
    shell:
        "sat decode {input.model:q} {input.features:q} {input.images:q} {output.captions:q} {output.attention:q}"
        " --split {wildcards.split} --beam-size {params.d[beam_size]} --max-length {params.d[max_length]}"
        " --length-penalty {params.d[length_penalty]} --no-repeat-ngram {params.d[no_repeat_ngram]}"
        " --batch-size {params.d[batch_size]} --threads {threads}"
        " --device {params.device:q} > {log:q} 2>&1"


rule evaluate:
    """coco-caption metrics (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr) and the paper's BLEU without brevity penalty."""
    input:
        captions=f"{RESULTS}/{{dataset}}/{{model}}/captions_{{split}}.json",
        references=f"{RESULTS}/{{dataset}}/captions.csv",
    output:
        f"{RESULTS}/{{dataset}}/{{model}}/metrics_{{split}}.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/evaluate_{{model}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/evaluate_{{model}}_{{split}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "sat evaluate {input.captions:q} {input.references:q} {output:q} --split {wildcards.split} > {log:q} 2>&1"
