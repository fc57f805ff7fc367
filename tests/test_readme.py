"""Every snakemake and sat command line the README shows runs as written (snakemake in dry-run: real runs are long)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow

# What a dry-run cannot stand in for: a placeholder, files of the reader's own, conda, a report of
# results that do not exist yet (sat caption has tests of its own in test_caption.py).
SKIP = ("<", "...", " N", "my.yaml", "photo.jpg", "--sdm conda", "--report")


def readme_commands() -> list[str]:
    """Inline spans and code-block lines that start with snakemake or sat, or with a --config option for snakemake."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    spans = [re.sub(r"\s*\n\s*", " ", span) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text)]
    commands = set()
    for command in lines + spans:
        command = command.removeprefix(".venv/bin/")
        if command.startswith("--config"):
            command = f"snakemake {command}"
        if re.match(r"(snakemake|sat)( |$)", command) and not any(s in command for s in SKIP):
            commands.add(command)
    return sorted(commands)


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert "snakemake --config run='[coco]'" in commands
    assert any("shards: 8" in c for c in commands) and any("profiles/slurm" in c for c in commands)
    assert "sat --help" in commands


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_as_written(command, tmp_path):
    program, *args = shlex.split(command)
    if program == "sat":  # in an empty folder: it runs, or says in one line which input is missing
        sat = Path(sys.executable).parent / "sat"
        result = subprocess.run([str(sat), *args], cwd=tmp_path, capture_output=True, text=True)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0 or result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
        return
    cores = [] if "--cores" in args or "--workflow-profile" in args else ["--cores", "2"]
    dry = [] if "--lint" in args else ["--dry-run", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), *cores, *args, *dry],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
