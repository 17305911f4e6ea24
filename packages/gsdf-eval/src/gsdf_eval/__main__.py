"""`python -m gsdf_eval` is the `gsdf-eval` command."""

from gsdf_eval.cli import main

if __name__ == "__main__":
    main(prog_name="gsdf-eval")
