"""The demo's report: summary.json, one PNG per figure (matplotlib, Agg) and report.html that
shows them with the figures' tables. An edge: it writes files from what run.py measured."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from daemon.tier1.config import load_guardrails  # noqa: E402

COLORS = {"static": "#7f7f7f", "arqond": "#1f77b4", "unguarded": "#d62728"}
DPI = 80


def _smooth(t: list[float], y: list[float], n: int = 5) -> tuple[list[float], list[float]]:
    out_t, out_y = [], []
    for i in range(len(y)):
        w = [v for v in y[max(0, i - n + 1): i + 1] if v is not None and math.isfinite(v)]
        if w:
            out_t.append(t[i])
            out_y.append(sum(w) / len(w))
    return out_t, out_y


def _phase_marks(ax, an: dict) -> None:
    for p in an["phases"][1:]:
        ax.axvline(p["start_s"], color="#bbbbbb", lw=0.8, ls=":")
    for p in an["phases"]:
        ax.text((p["start_s"] + p["end_s"]) / 2, 1.0, p["name"], transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8, color="#555555")
    inj = an.get("injected") or {}
    if inj.get("at_s") is not None:
        ax.axvline(inj["at_s"], color="#ff7f0e", lw=1.0, ls="--")


def _rollback_marks(ax, an: dict) -> None:
    for rb in an["arms"].get("arqond", {}).get("rollbacks", []):
        ax.axvline(rb["t_s"], color="#9467bd", lw=0.6, alpha=0.6)


def _fig_objective(kind: str, an: dict, series: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=DPI)
    for arm, pts in series.items():
        t, y = _smooth([p["t"] for p in pts], [p["objective"] for p in pts])
        if kind == "serve":
            y = [-v for v in y]
        ax.plot(t, y, color=COLORS.get(arm), lw=1.2, label=arm)
    for p in an["phases"]:
        b = p["best_static_objective"]
        ax.hlines(-b if kind == "serve" else b, p["start_s"], p["end_s"], colors="black", linestyles="--", lw=0.9,
                  label="best static (sweep)" if p is an["phases"][0] else None)
    _phase_marks(ax, an)
    _rollback_marks(ax, an)
    ax.set_xlabel("scenario time (s)")
    if kind == "universe":
        ax.set_ylabel("objective (lower is better)")
        ax.set_yscale("log")
    else:
        ax.set_ylabel("quality - p99 tie-break (higher is better)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{kind}: demo objective, all traffic (0.5 s rolling); orange: injected bad candidate", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_knobs(kind: str, raw: dict, path: Path) -> None:
    a = raw["arqond"]
    # the last poll that saw the segment (a poll racing the daemon's shutdown may have none)
    last = next((p["knobs"] for p in reversed(a["polls"]) if p.get("knobs")), [])
    names = [k["name"] for k in last]
    if not names:
        return
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.4 * len(names) + 0.6), dpi=DPI, sharex=True)
    axes = list(axes) if len(names) > 1 else [axes]
    t0 = raw["unguarded"]["t0_ns"]
    trace = [x for x in raw["unguarded"]["trace"] if x.get("event") in ("apply", "inject")]
    init = {}
    if raw["static"]["summary"]:
        from .apps import declared_knobs
        init = {k.name: k.initial for k in declared_knobs(kind)}
    for ax, n in zip(axes, names):
        pts = [(p["t"], next(k["baseline"] for k in p["knobs"] if k["name"] == n)) for p in a["polls"] if p.get("knobs")]
        if pts:
            ax.step([x for x, _ in pts], [y for _, y in pts], where="post", color=COLORS["arqond"], lw=1.2,
                    label="arqond baseline")
        cand = [(p["t"], v) for p in a["polls"] if p.get("knobs")
                for k in p["knobs"] if k["name"] == n for v in list(k.get("live") or ())[1:]]
        if cand:
            ax.scatter([x for x, _ in cand], [y for _, y in cand], s=2, color=COLORS["arqond"], alpha=0.3,
                       label="arqond candidates")
        if trace:
            ax.step([(x["t_ns"] - t0) / 1e9 for x in trace], [x["knobs"][n] for x in trace], where="post",
                    color=COLORS["unguarded"], lw=0.8, alpha=0.8, label="unguarded")
        if n in init:
            ax.axhline(init[n], color=COLORS["static"], lw=1.0, label="static")
        ax.set_ylabel(n, fontsize=8)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1].set_xlabel("scenario time (s)")
    fig.suptitle(f"{kind}: knobs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_slos(kind: str, an: dict, raw: dict, path: Path) -> None:
    from .run import PROFILES
    g = load_guardrails(PROFILES[kind])
    slos = [s for s in g.slos if s.enforce]
    fig, axes = plt.subplots(len(slos), 1, figsize=(9, 1.6 * len(slos) + 0.6), dpi=DPI, sharex=True)
    axes = list(axes) if len(slos) > 1 else [axes]
    for ax, s in zip(axes, slos):
        for arm, a in raw.items():
            t = [st["t"] for st in a["statuses"]]
            y = [((st.get("all") or {}).get("fields") or {}).get(s.field, {}).get(s.stat) for st in a["statuses"]]
            ax.plot(t, [v if v is not None else math.nan for v in y], color=COLORS.get(arm), lw=0.8, label=arm)
        lim = s.max if s.max is not None else s.min
        ax.axhline(lim, color="black", ls="--", lw=0.9, label="SLO")
        ax.set_ylabel(f"{s.field}.{s.stat}", fontsize=8)
        if s.field in ("step_time_s", "latency_s", "error"):
            ax.set_yscale("log")
        _phase_marks(ax, an)
        _rollback_marks(ax, an)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1].set_xlabel("scenario time (s)")
    fig.suptitle(f"{kind}: SLO statistics of all traffic per {an['status_interval_s']} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_canary(kind: str, an: dict, raw: dict, path: Path) -> None:
    polls = [p for p in raw["arqond"]["polls"] if p.get("slots")]
    if not polls:
        return
    fig, ax = plt.subplots(figsize=(9, 2.2), dpi=DPI)
    t = [p["t"] for p in polls]
    base = [p["slots"][0]["weight"] for p in polls]
    cand = [1.0 - b for b in base]
    ax.stackplot(t, base, cand, colors=["#aec7e8", "#ff9896"], labels=["slot 0 (baseline)", "candidate slots"],
                 step="post")
    ax.set_ylim(0, 1)
    ax.set_ylabel("traffic share")
    _phase_marks(ax, an)
    _rollback_marks(ax, an)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlabel("scenario time (s)")
    ax.set_title(f"{kind}: arqond canary / probe weights (purple lines: rollbacks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_variants(an: dict, raw: dict, path: Path) -> None:
    arms = [a for a in ("arqond", "unguarded", "static") if a in raw]
    fig, axes = plt.subplots(len(arms), 1, figsize=(9, 1.5 * len(arms) + 0.6), dpi=DPI, sharex=True)
    axes = list(axes) if len(arms) > 1 else [axes]
    from .apps import declared_variants
    names = declared_variants("serve")
    cmap = plt.get_cmap("tab10")
    for ax, arm in zip(axes, arms):
        st = raw[arm]["statuses"]
        t = [s["t"] for s in st]
        shares = []
        for v in names:
            shares.append([(s.get("variants", {}).get(v, {}).get("count", 0) / max(1, (s.get("all") or {}).get("count", 0)))
                           for s in st])
        ax.stackplot(t, *shares, labels=names, colors=[cmap(i) for i in range(len(names))], step="post")
        ax.set_ylim(0, 1)
        ax.set_ylabel(arm, fontsize=8)
        _phase_marks(ax, an)
    axes[0].legend(fontsize=7, ncol=5, loc="lower left")
    axes[-1].set_xlabel("scenario time (s)")
    fig.suptitle("serve: variant shares of traffic", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_overview(summary: dict, raw: dict, series: dict, path: Path) -> None:
    """One picture of the whole run (the README's): per app, the objective of each arm and the
    SLO statistic the injected candidate breaks, with phases, the injection and rollbacks."""
    kinds = list(summary["apps"])
    fig, axes = plt.subplots(2 * len(kinds), 1, figsize=(9, 3.0 * len(kinds) + 0.4), dpi=DPI)
    for i, kind in enumerate(kinds):
        an, r = summary["apps"][kind], raw[kind]
        ax = axes[2 * i]
        for arm, pts in series[kind].items():
            t, y = _smooth([p["t"] for p in pts], [p["objective"] for p in pts])
            ax.plot(t, [-v for v in y] if kind == "serve" else y, color=COLORS.get(arm), lw=1.2, label=arm)
        for p in an["phases"]:
            b = p["best_static_objective"]
            ax.hlines(-b if kind == "serve" else b, p["start_s"], p["end_s"], colors="black", linestyles="--", lw=0.9,
                      label="best static" if p is an["phases"][0] else None)
        if kind == "universe":
            ax.set_yscale("log")
            ax.set_ylabel("objective\n(lower better)", fontsize=8)
        else:
            ax.set_ylabel("quality\n(higher better)", fontsize=8)
        _phase_marks(ax, an)
        _rollback_marks(ax, an)
        ax.legend(fontsize=7, ncol=4, loc="best")
        ax = axes[2 * i + 1]
        from .run import PROFILES
        field, stat = ("instability", "mean") if kind == "universe" else ("latency_s", "p99")
        lim = next((sl.max for sl in load_guardrails(PROFILES[kind]).slos if sl.field == field and sl.max), None)
        for arm, a in r.items():
            t = [st["t"] for st in a["statuses"]]
            y = [((st.get("all") or {}).get("fields") or {}).get(field, {}).get(stat) for st in a["statuses"]]
            ax.plot(t, [v if v is not None else math.nan for v in y], color=COLORS.get(arm), lw=0.8)
        if lim is not None:
            ax.axhline(lim, color="black", ls="--", lw=0.9)
        if kind == "serve":
            ax.set_yscale("log")
        ax.set_ylabel(f"{field}.{stat}\n(SLO dashed)", fontsize=8)
        _phase_marks(ax, an)
        _rollback_marks(ax, an)
    axes[-1].set_xlabel("scenario time (s); orange: injected bad candidate; purple: arqond rollbacks")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.4g}"
    if isinstance(x, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in x.items())
    return str(x)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


PRESET_NOTE = {
    "universe": "<p>The universe presets in <code>guardrails.yaml</code> were discovered <b>offline</b> by "
                "<code>arqond demo discover universe --seed 2</code> on this machine: a sweep per phase on training "
                "seed 2, not on the evaluation seed 1 this demo runs, then approved by hand. Tier 2 proposes the one "
                "nearest to the observed conditions (tile side, source strength); Tier 1 canaries and judges it like "
                "any rollout; the continuous tuner refines from it.</p>",
    "serve": "<p>The serve catalog entries carry the load each variant was best at, from "
             "<code>arqond demo discover serve --seed 2</code> on this machine (training seed 2).</p>",
}


def _app_html(kind: str, an: dict, figs: list[str]) -> str:
    parts = [f"<h2>{kind}</h2>", f"<p>Profile <code>{html.escape(an['profile'])}</code>, {an['seconds_per_arm']:g} s per "
             f"arm, status every {an['status_interval_s']} s (the resolution of every duration below).</p>"]
    parts.append("<h3>Floors</h3>" + _table(["floor", "met"], [[k, v] for k, v in an["floors"].items()]))
    rows = []
    for arm, a in an["arms"].items():
        v = a["slo_violations"]
        rows.append([arm, a["objective"], a.get("quality"), a["feasible_phases"], v["count"], v["seconds"],
                     v["longest_s"], _fmt(v["by_slo"])])
    parts.append("<h3>Arms</h3>" + _table(["arm", "objective (demo, lower better)", "quality", "feasible phases",
                                           "SLO violations", "violation s", "longest s", "by SLO"], rows))
    parts.append("<h3>Scenario changes</h3>" + _table(
        ["at s", "from", "to", "best static", "best static objective (yardstick)", "offline sweep objective",
         "re-converged after s", "within 3 s", "arqond objective at phase end"],
        [[c["at_s"], c["from"], c["to"], c["best_static"], f"{_fmt(c['best_static_objective'])} ({c.get('yardstick', 'offline sweep')})",
          c.get("best_static_offline_objective"), c["reconverged_s"], c["within_limit"], c["objective_at_phase_end"]]
         for c in an["scenario_changes"]]))
    if kind == "universe":
        parts.append("<p>Yardstick <i>live</i>: the phase's best static setting (offline sweep, seed 1) run live beside "
                     "the arms during that phase, so pacing and contention are the same as arqond's; the sweep itself "
                     "scores points unpaced on a virtual clock.</p>")
    presets = an["arms"].get("arqond", {}).get("presets", [])
    parts.append("<h3>Catalog presets proposed when the conditions changed</h3>" + PRESET_NOTE.get(kind, "") + _table(
        ["t s", "entry", "why", "outcome", "promoted at s"],
        [[p["t_s"], p["entry"], p["note"], p["outcome"], p["promoted_at_s"]] for p in presets]))
    inj = an["injected"]
    parts.append("<h3>Injected bad candidate</h3>" + _table(["what", "value"], [[k, v] for k, v in inj.items()]))
    rbs = an["arms"].get("arqond", {}).get("rollbacks", [])
    parts.append("<h3>Every arqond rollback</h3>" + _table(
        ["t s", "proposal", "rule", "measured", "threshold", "reason"],
        [[r["t_s"], r["proposal_id"], r["rule"], r["measured"], r["threshold"], r["reason"]] for r in rbs]))
    parts += [f'<p><img src="{html.escape(f)}" alt="{html.escape(f)}"></p>' for f in figs]
    return "\n".join(parts)


def write(out_dir: Path, summary: dict, raw: dict, series: dict) -> dict[str, list[str]]:
    """Write summary.json, the PNGs and report.html into out_dir; returns {kind: [png names]}."""
    out_dir = Path(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    figs: dict[str, list[str]] = {}
    for kind, an in summary["apps"].items():
        r = raw[kind]
        names = []
        for fname, fn in ((f"{kind}-objective.png", lambda p: _fig_objective(kind, an, series[kind], p)),
                          (f"{kind}-knobs.png", lambda p: _fig_knobs(kind, r, p)),
                          (f"{kind}-slos.png", lambda p: _fig_slos(kind, an, r, p)),
                          (f"{kind}-canary.png", lambda p: _fig_canary(kind, an, r, p))):
            fn(out_dir / fname)
            if (out_dir / fname).exists():
                names.append(fname)
        if kind == "serve":
            _fig_variants(an, r, out_dir / "serve-variants.png")
            names.append("serve-variants.png")
        figs[kind] = names
    _fig_overview(summary, raw, series, out_dir / "overview.png")
    body = '<p><img src="overview.png" alt="overview"></p>\n' + "\n".join(
        _app_html(k, an, figs[k]) for k, an in summary["apps"].items())
    m = summary.get("machine", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>arqond demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} table{{border-collapse:collapse;margin:6px 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}} img{{max-width:100%}}</style></head><body>
<h1>arqond demo</h1>
<p>Three arms on the same scenario and seed: <b>static</b> (initial values, no tuning), <b>arqond</b> (Tier 2 proposes,
Tier 1 validates, canaries, judges, rolls back), <b>unguarded</b> (the same Tier-2 optimizer writing the live
parameters directly). Seed {summary['seed']}; {m.get('cpus')} CPUs ({html.escape(str(m.get('cpu_model')))});
wall {summary.get('wall_s')} s. All floors met: <b>{_fmt(summary.get('all_floors_met'))}</b>.</p>
{body}
<h2>Raw</h2><p><a href="summary.json">summary.json</a>, status lines and audit ledgers in <code>raw/</code>.</p>
</body></html>"""
    (out_dir / "report.html").write_text(page)
    return figs
