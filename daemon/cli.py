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


def _load_config(file: Path):
    """Load a guardrails file or exit 1 with every problem (file:line, key path, found, expected)."""
    from daemon.tier1.config import ConfigError, load_guardrails
    try:
        return load_guardrails(file)
    except ConfigError as e:
        for m in e.errors:
            typer.echo(m, err=True)
        raise typer.Exit(1)
    except OSError as e:
        typer.echo(f"{file}: cannot read: {e.strerror}", err=True)
        raise typer.Exit(1)


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
    from daemon.tier1.config import check_against
    g = _load_config(file)
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


@app.command()
def run(config: Path = typer.Option(Path("guardrails.yaml"), "--config", "-c", help="guardrails file"),
        audit_path: Optional[str] = typer.Option(None, help="override audit.path"),
        metrics_address: Optional[str] = typer.Option(None, help="override metrics.address (host:port)"),
        control_socket: Optional[str] = typer.Option(None, help="control socket path"),
        no_tuning: bool = typer.Option(False, "--no-tuning", help="Tier 1 only: guard and hold the baseline"),
        log_level: str = typer.Option("info")):
    """Run the daemon for the guardrails file's target (what systemd's arqond@.service starts)."""
    import logging
    from daemon.runtime.loop import run_daemon
    from daemon.tier1.config import ConfigError
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s arqond %(levelname)s %(message)s")
    try:
        run_daemon(str(config), audit_path=audit_path, metrics_address=metrics_address,
                   control_path=control_socket, tuning=False if no_tuning else None)
    except ConfigError as e:
        for m in e.errors:
            typer.echo(m, err=True)
        typer.echo("arqond: not started (fix the file above)", err=True)
        raise typer.Exit(1)


def _control(target: str, cmd: str, socket: Optional[str], timeout: float = 5.0):
    from daemon.runtime.control import ControlError, DaemonNotRunning, call, call_target
    try:
        return call(socket, cmd, timeout=timeout) if socket else call_target(target, cmd, timeout=timeout)
    except DaemonNotRunning as e:
        typer.echo(f"{cmd}: no arqond is running for {target!r} ({e})", err=True)
        raise typer.Exit(3)
    except ControlError as e:
        typer.echo(f"{cmd}: {e}", err=True)
        raise typer.Exit(1)


_SOCK = typer.Option(None, "--socket", help="control socket path (default: the target's)")


@app.command()
def status(target: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json"), socket: Optional[str] = _SOCK):
    """The running daemon's state: knobs per slot, SLOs, rollout, lease, audit, cycle times."""
    res = _control(target, "status", socket)
    if as_json:
        _print_json(res)
        return
    from daemon.runtime.status import from_builtins, render_table
    typer.echo(render_table(from_builtins(res)))


def _simple(cmd: str, doc: str):
    def f(target: str = typer.Argument(...), socket: Optional[str] = _SOCK):
        _print_json(_control(target, cmd, socket, timeout=35.0))
    f.__doc__ = doc
    f.__name__ = cmd
    app.command(name=cmd)(f)


_simple("freeze", "Kill switch on: baseline only, no experiments, persists across restarts.")
_simple("thaw", "Kill switch off.")
_simple("rollback", "Abort the active experiment now (baseline only).")
_simple("reload", "Re-read the guardrails file; an invalid file keeps the running config (exit 1).")


@app.command()
def propose(target: str = typer.Argument(...),
            set_: list[str] = typer.Option([], "--set", help="knob=value (repeatable)"),
            variant: Optional[str] = typer.Option(None, help="catalog variant name"),
            kind: str = typer.Option("rollout", help="rollout | probe"),
            note: str = typer.Option(""), socket: Optional[str] = _SOCK):
    """Hand Tier 1 a proposal of your own (it passes the same rules as Tier 2's). Exit 1 if rejected."""
    knobs = {}
    for item in set_:
        name, sep, val = item.partition("=")
        try:
            knobs[name] = float(val)
        except ValueError:
            sep = ""
        if not sep or not name:
            typer.echo(f"propose: --set {item!r}: expected knob=number", err=True)
            raise typer.Exit(2)
    from daemon.runtime.control import ControlError, DaemonNotRunning, call, call_target
    args = {"knobs": knobs, "variant": variant, "kind": kind, "note": note}
    try:
        res = call(socket, "propose", args, timeout=10.0) if socket else call_target(target, "propose", args, timeout=10.0)
    except DaemonNotRunning as e:
        typer.echo(f"propose: no arqond is running for {target!r} ({e})", err=True)
        raise typer.Exit(3)
    except ControlError as e:
        typer.echo(f"propose: {e}", err=True)
        raise typer.Exit(1)
    _print_json(res)
    if not res.get("accepted"):
        raise typer.Exit(1)


@app.command()
def snapback(target: str = typer.Argument(...), socket: Optional[str] = _SOCK):
    """Publish the known-good baseline only. Works with no daemon running: writes slot 0 alone
    under a new generation and releases the lease, so the data plane serves the baseline by itself."""
    from daemon.runtime.control import ControlError, DaemonNotRunning, call, call_target
    try:
        res = call(socket, "snapback", timeout=35.0) if socket else call_target(target, "snapback", timeout=35.0)
        _print_json(res)
        return
    except DaemonNotRunning:
        pass
    except ControlError as e:
        typer.echo(f"snapback: daemon refused ({e}); writing the segment directly", err=True)
    from daemon.runtime.snapback import snapback_segment
    from shm_layout.segment import AttachError
    try:
        _print_json(snapback_segment(target))
    except AttachError as e:
        if e.check == "exists":
            typer.echo(f"snapback: no segment /arqon.{target}: nothing is running, nothing to do")
            return
        typer.echo(f"snapback: {e}", err=True)
        raise typer.Exit(1)


catalog_app = typer.Typer(no_args_is_help=True, help="The approved variant catalog.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("list")
def catalog_list(config: Path = typer.Option(Path("guardrails.yaml"), "--config", "-c"),
                 as_json: bool = typer.Option(False, "--json")):
    """Catalog entries and their lifecycle state (only Approved/Promoted are eligible online)."""
    import msgspec
    from daemon.tier1.config import ELIGIBLE_STATES
    g = _load_config(config)
    rows = [msgspec.to_builtins(c) for c in g.catalog.variants]
    if as_json:
        _print_json(rows)
        return
    for c in g.catalog.variants:
        bundle = " ".join(f"{k}={v:g}" for k, v in c.knobs.items())
        ctx = " ".join(f"{k}={v:g}" for k, v in c.context.items())
        typer.echo(f"{c.id:16s} variant={c.variant or '-':14s} {c.state:10s} {'eligible' if c.state in ELIGIBLE_STATES else '-':8s}"
                   + (f" knobs: {bundle}" if bundle else "") + (f" context: {ctx}" if ctx else ""))


@app.command()
def demo(which: str = typer.Argument("all", help="universe | serve | all | discover"),
         target: Optional[str] = typer.Argument(None, help="discover only: universe | serve (default universe)"),
         duration: Optional[float] = typer.Option(None, help="seconds per arm (default: the scenario's)"),
         seed: Optional[int] = typer.Option(None, help="scenario seed (default 1; discover: training seed, default 2)"),
         out: Path = typer.Option(Path("demo-out"), help="report folder"),
         live: bool = typer.Option(True, "--live/--no-live", help="live terminal view"),
         as_json: bool = typer.Option(False, "--json", help="print the JSON summary on stdout at the end")):
    """Run the demo: real data planes tuned by arqond vs a static baseline and an unguarded optimizer;
    ends with an HTML report (plots) and a JSON summary.

    `arqond demo discover universe --seed 2` (or serve): offline discovery. Sweeps every scenario
    phase on a training seed and prints catalog entries (knobs bundle, context, state Evaluated)
    to approve by pasting them into the profile's catalog."""
    if which == "discover":
        kind = target or "universe"
        if kind not in ("universe", "serve"):
            typer.echo(f"demo discover: unknown app {kind!r}; expected universe or serve", err=True)
            raise typer.Exit(2)
        from daemon.demo.discover import DEFAULT_SEED, discover, to_yaml
        res = discover(kind, seed=DEFAULT_SEED if seed is None else seed)
        if as_json:
            _print_json(res)
        else:
            typer.echo(to_yaml(res), nl=False)
        return
    if which not in ("universe", "serve", "all") or target is not None:
        typer.echo(f"demo: unknown demo {' '.join(filter(None, (which, target)))!r}; expected universe, serve, all "
                   "or discover [universe|serve]", err=True)
        raise typer.Exit(2)
    from daemon.demo.run import run_demo
    summary = run_demo(which, duration=duration, seed=1 if seed is None else seed, out_dir=out,
                       live=live and not as_json)
    if as_json:
        _print_json(summary)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
