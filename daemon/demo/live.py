"""The demo's live terminal view (rich): per arm the phase, objective, SLO statistics, knobs,
rollout state, canary weights and variant choice, plus the latest events. An edge: it only
renders what the orchestrator hands it; disabled, every method is a no-op."""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Optional

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
            return f"{x:.2e}"
        return f"{x:.{nd}g}"
    return str(x)


def _field(group: dict, field: str, stat: str) -> Optional[float]:
    return ((group or {}).get("fields") or {}).get(field, {}).get(stat)


class LiveView:
    """`with LiveView(enabled) as v:` then `v.start_app(kind, s)`, `v.update(kind, arms)`,
    `v.event(kind, msg)`, `v.finish_app(kind, analysis)`."""

    def __init__(self, enabled: bool = True, console: Optional[Console] = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.live: Optional[Live] = None
        self.events: deque[str] = deque(maxlen=8)
        self.rows: dict[str, list] = {}
        self.kind = ""
        self.seconds = 0.0
        self.done: dict[str, dict] = {}
        self.t_start = time.monotonic()

    def __enter__(self) -> "LiveView":
        if self.enabled:
            self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)
            self.live = None

    # ---- inputs ------------------------------------------------------------------------------

    def start_app(self, kind: str, seconds: float) -> None:
        self.kind, self.seconds = kind, seconds
        self.event(kind, f"starting {kind}: static, arqond and unguarded arms, {seconds:g} s each")

    def event(self, kind: str, msg: str) -> None:
        self.events.append(f"[{time.monotonic() - self.t_start:6.1f}s] {kind}: {msg}")
        self._refresh()

    def finish_app(self, kind: str, analysis: dict) -> None:
        self.done[kind] = analysis
        fl = analysis.get("floors", {})
        self.event(kind, "done; floors " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in fl.items()))

    def update(self, kind: str, arms: list) -> None:
        if not self.enabled:
            return
        rows = self.rows.setdefault(kind, [])
        rows.clear()
        for a in arms:
            st = a.app.latest_status() if a.app is not None else None
            rows.append(self._row(kind, a, st))
        for a in arms:   # new ledger-worthy facts from arqond's status: rollbacks
            p = a.latest_poll() if hasattr(a, "latest_poll") else None
            if p and p.get("rollbacks"):
                n = sum(p["rollbacks"].values())
                if n != getattr(a, "_seen_rb", 0):
                    a._seen_rb = n
                    self.event(kind, f"arqond rollbacks so far: {p['rollbacks']}")
        self._refresh()

    # ---- rendering -----------------------------------------------------------------------------

    def _row(self, kind: str, a, st: Optional[dict]) -> list[str]:
        if st is None:
            return [a.arm, "starting", "", "", "", "", "", ""]
        allg = st.get("all") or st.get("baseline") or {}
        t = f"{st.get('t', 0):5.1f}s {st.get('phase_name', '')}"
        if kind == "universe":
            obj = f"err {_fmt(_field(allg, 'error', 'mean'), 3)}"
            slo = (f"p99 {_fmt((_field(allg, 'step_time_s', 'p99') or math.nan) * 1e6, 3)}us "
                   f"inst {_fmt(_field(allg, 'instability', 'mean'), 2)}")
        else:
            obj = f"q {_fmt(_field(allg, 'quality', 'mean'), 3)}"
            slo = (f"p99 {_fmt((_field(allg, 'latency_s', 'p99') or math.nan) * 1e3, 3)}ms "
                   f"load {_fmt(st.get('load_rps'), 4)}/s")
        knobs, state, weights, variant = "initial values", "-", "1.0", ""
        if a.arm == "arqond":
            p = a.latest_poll()
            if p and p.get("knobs"):
                knobs = " ".join(f"{k['name']}={_fmt(k['baseline'], 3)}" for k in p["knobs"])
                state = p.get("rollout_state", "")
                weights = "/".join(f"{s['weight']:.2f}" for s in p.get("slots", []))
                variant = "/".join(s.get("variant", "") for s in p.get("slots", []))
        elif a.arm == "unguarded" and a.trace:
            last = next((x for x in reversed(a.trace) if x.get("event") in ("apply", "inject")), None)
            if last:
                knobs = " ".join(f"{k}={_fmt(v, 3)}" for k, v in last["knobs"].items())
                variant = last.get("variant", "")
                state = "raw (no Tier 1)"
        if kind == "serve" and not variant and st.get("variants"):
            variant = max(st["variants"], key=lambda v: st["variants"][v]["count"])
        return [a.arm, t, obj, slo, knobs, state, weights, variant]

    def _render(self):
        parts = []
        for kind, rows in self.rows.items():
            tab = Table(title=f"{kind}", expand=True, show_lines=False)
            for col in ("arm", "time / phase", "objective", "SLO stats", "knobs (baseline)", "rollout", "slot weights",
                        "variant"):
                tab.add_column(col, overflow="fold")
            for r in rows:
                tab.add_row(*r)
            parts.append(tab)
        for kind, an in self.done.items():
            arms = an.get("arms", {})
            line = "  ".join(f"{n}: obj {_fmt(v.get('objective'), 3)}, SLO viol {v['slo_violations']['count']} "
                             f"({v['slo_violations']['seconds']:.1f}s)" for n, v in arms.items())
            parts.append(Text(f"{kind} result  {line}"))
        parts.append(Panel("\n".join(self.events) or "-", title="events"))
        return Group(*parts)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())
