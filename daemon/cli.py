"""The `arqond` command line. Each command is a thin shell over a module that does the work;
imports are lazy so `arqond status` stays fast."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="arqond: safe, machine-speed self-tuning for a native service.")


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@app.command()
def bench(suite: str = typer.Argument(..., help="dataplane | tier2 | judge | decision"),
          quick: bool = typer.Option(False, "--quick", help="short run (CI-sized)"),
          as_json: bool = typer.Option(False, "--json", help="print the figures as JSON")):
    """Measure a suite and print its figures."""
    try:
        mod = importlib.import_module(f"daemon.bench.{suite}")
    except ModuleNotFoundError as e:
        if e.name == f"daemon.bench.{suite}":
            typer.echo(f"bench: unknown suite {suite!r}; expected one of dataplane, tier2, judge, decision", err=True)
            raise typer.Exit(2)
        raise
    result = mod.run(quick=quick)
    if as_json:
        _print_json(result)
    else:
        for k, v in sorted(result.items()):
            typer.echo(f"{k:32s} {v}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
