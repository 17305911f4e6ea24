"""`python -m gsdf_eval` is the `gsdf-eval` command."""

from gsdf_eval.cli import main

main(prog_name="gsdf-eval")
