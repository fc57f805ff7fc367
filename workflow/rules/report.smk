# What people look at: attention figures, the demo's grounding score, Table 1 beside the paper's.


rule figures:
    """The paper's Fig. 2/3 for a split's first images: one panel per word, attention upsampled and overlaid."""
    input:
        attention=f"{RESULTS}/{{dataset}}/{{model}}/attention_{{split}}.h5",
        images=f"{RESULTS}/{{dataset}}/images.csv",
    output:
        report(
            directory(f"{RESULTS}/{{dataset}}/{{model}}/figures_{{split}}"),
            patterns=["{image_id}.png"],
            caption="../report/figures.rst",
            category="Attention",
            subcategory="{dataset} {model}",
        ),
    log:
        f"{RESULTS}/logs/{{dataset}}/figures_{{model}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/figures_{{model}}_{{split}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        figures=config["report"]["figures"],
    shell:
        "sat figures {input.attention:q} {input.images:q} {output:q} --count {params.figures} > {log:q} 2>&1"


rule grounding:
    """Demo set: does the caption name shapes that are there, and does attention point at them?"""
    input:
        attention=f"{RESULTS}/demo/{{model}}/attention_{{split}}.h5",
        objects=f"{DATA}/demo",
    output:
        report(
            f"{RESULTS}/demo/{{model}}/grounding_{{split}}.csv",
            caption="../report/grounding.rst",
            category="Grounding",
        ),
    log:
        f"{RESULTS}/logs/demo/grounding_{{model}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/demo/grounding_{{model}}_{{split}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "sat grounding {input.attention:q} {input.objects:q}/objects.json {output:q} > {log:q} 2>&1"


rule table1:
    """Every trained dataset x model beside the paper's Table 1 (on config report.split: test)."""
    input:
        unpack(table1_inputs),
    output:
        csv=report(f"{RESULTS}/table1.csv", caption="../report/table1.rst", category="Table 1"),
        md=f"{RESULTS}/table1.md",
    log:
        f"{RESULTS}/logs/table1.log",
    benchmark:
        f"{RESULTS}/benchmarks/table1.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        rows=table1_rows,
    shell:
        "sat table1 {output.csv:q} {output.md:q} {params.rows:q} > {log:q} 2>&1"
