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


@app.command()
def inspect(name: str = typer.Argument(..., help="segment name (the data plane's arq_open name)"),
            as_json: bool = typer.Option(False, "--json"),
            allow_foreign_owner: bool = typer.Option(False, help="accept a segment owned by another uid")):
    """Print a live segment's header, declaration, snapshot, lease, heartbeats and rings."""
    from shm_layout.segment import AttachError
    from daemon.runtime.inspect import inspect_segment, render
    try:
        info = inspect_segment(name, allow_foreign_owner=allow_foreign_owner)
    except AttachError as e:
        typer.echo(f"inspect: {e}", err=True)
        raise typer.Exit(1)
    _print_json(info) if as_json else typer.echo(render(info))


@app.command()
def check(file: Path = typer.Argument(Path("guardrails.yaml"), help="guardrails file"),
          against: Optional[str] = typer.Option(None, "--against", help="also check against a live segment's declaration")):
    """Validate a guardrails file (and optionally against a live data plane). Exit 1 on any problem."""
    from daemon.tier1.config import ConfigError, check_against, load_guardrails
    try:
        g = load_guardrails(file)
    except ConfigError as e:
        for m in e.errors:
            typer.echo(m, err=True)
        raise typer.Exit(1)
    except OSError as e:
        typer.echo(f"{file}: cannot read: {e.strerror}", err=True)
        raise typer.Exit(1)
    if against:
        from shm_layout.segment import AttachError, Segment
        try:
            with Segment.attach(against, allow_foreign_owner=True) as seg:
                problems = check_against(g, seg.declaration)
        except AttachError as e:
            typer.echo(f"check: {e}", err=True)
            raise typer.Exit(1)
        for m in problems:
            typer.echo(m, err=True)
        if problems:
            raise typer.Exit(1)
    typer.echo(f"{file}: ok" + (f" (against /arqon.{against})" if against else ""))


@app.command()
def schema():
    """Print the guardrails.yaml JSON Schema (for editors)."""
    from daemon.tier1.config import json_schema
    _print_json(json_schema())


audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit ledger.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(path: Path = typer.Argument(..., help="ledger file (JSON Lines)")):
    """Check the hash chain; report the first bad record. Exit 1 if broken."""
    from daemon.tier1.ledger import verify
    try:
        rep = verify(path)
    except FileNotFoundError:
        typer.echo(f"{path}: no such ledger", err=True)
        raise typer.Exit(2)
    if rep.ok:
        typer.echo(f"{path}: ok, {rep.n_records} records")
        return
    typer.echo(f"{path}: BROKEN at seq {rep.first_bad_seq} (line {rep.first_bad_line}): {rep.reason}", err=True)
    raise typer.Exit(1)


@audit_app.command("tail")
def audit_tail(path: Path, n: int = typer.Option(20, "-n", help="records")):
    """The last N records, one per line."""
    from daemon.tier1.ledger import tail
    for line in tail(path, n):
        typer.echo(line)


@audit_app.command("show")
def audit_show(path: Path, seq: int):
    """One record in full."""
    from daemon.tier1.ledger import show
    try:
        typer.echo(show(path, seq))
    except LookupError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
