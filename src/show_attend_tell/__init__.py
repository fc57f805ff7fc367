"""Show, Attend and Tell (Xu et al., 2015), reproduced as a Snakemake workflow over this package."""

__version__ = "0.1.0"
