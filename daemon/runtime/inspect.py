"""`arqond inspect NAME`: everything a live segment says about itself, for people and scripts."""
from __future__ import annotations

import time

from shm_layout import spec
from shm_layout.segment import Segment

_LEASE = {spec.LEASE_NONE: "none", spec.LEASE_ACTIVE: "active", spec.LEASE_LAPSED: "lapsed"}
_STATE = {spec.STATE_INIT: "init", spec.STATE_READY: "ready", spec.STATE_CLOSED: "closed"}


def _age_s(now_ns: int, t_ns: int) -> float | None:
    return None if t_ns == 0 else round((now_ns - t_ns) / 1e9, 6)


def inspect_segment(name: str, *, allow_foreign_owner: bool = False) -> dict:
    """A JSON-able description of segment /arqon.<name>. Raises AttachError if it is refused."""
    with Segment.attach(name, allow_foreign_owner=allow_foreign_owner) as seg:
        now = time.monotonic_ns()
        h = seg.header
        st = seg.plane_state()
        seq, snap = seg.read_snapshot()
        d = seg.declaration
        return {
            "segment": f"/arqon.{name}",
            "header": {
                "version": f"{int(h['version_major'])}.{int(h['version_minor'])}",
                "layout_hash": f"{int(h['layout_hash']):016x}",
                "state": _STATE.get(st.state, str(st.state)),
                "creator_pid": int(h["creator_pid"]), "creator_uid": int(h["creator_uid"]),
                "epoch": f"{int(h['epoch']):016x}",
                "created_unix_s": int(h["created_realtime_ns"]) / 1e9,
                "total_size_bytes": int(h["total_size"]), "mode": f"{int(h['mode']):04o}",
            },
            "declaration": {
                "knobs": [{"name": k.name, "min": k.min, "max": k.max, "initial": k.initial,
                           "integer": k.integer, "global": k.is_global} for k in d.knobs],
                "fields": [{"name": f.name, "unit": f.unit} for f in d.fields],
                "variants": list(d.variants),
            },
            "snapshot": {
                "seq": seq, "generation": snap.generation, "salt": snap.salt,
                "slots": [{"slot": i, "weight": round(s.weight, 6),
                           "variant": d.variants[s.variant] if s.variant < len(d.variants) else s.variant,
                           "knobs": dict(zip((k.name for k in d.knobs), s.knobs))} for i, s in enumerate(snap.slots)],
                "global": {k.name: v for k, v in zip(d.knobs, snap.global_knobs) if k.is_global},
                "ack_generation": st.ack_generation,
            },
            "lease": {
                "state": _LEASE.get(st.lease_state, str(st.lease_state)),
                "deadline_in_s": None if st.lease_deadline_ns == 0 else round((st.lease_deadline_ns - now) / 1e9, 6),
                "lapses": st.lease_lapses,
            },
            "heartbeats_age_s": {
                "data_plane": _age_s(now, st.plane_heartbeat_ns),
                "daemon": _age_s(now, seg.load_u64(seg._ctl_off("daemon_heartbeat_ns"))),
            },
            "rings": [{"ring": r.ring, "head": r.head, "tail": r.tail, "fill_ratio": round(r.fill_ratio, 6),
                       "drops": r.drops, "seq_errors": r.seq_errors,
                       "producer_heartbeat_age_s": _age_s(now, r.producer_heartbeat_ns)}
                      for r in (seg.ring_stats(i) for i in range(seg.n_rings))],
        }


def _s(v) -> str:
    return "-" if v is None else f"{v}s"


def render(info: dict) -> str:
    h, s, le = info["header"], info["snapshot"], info["lease"]
    lines = [f"{info['segment']}  v{h['version']}  state={h['state']}  pid={h['creator_pid']}  epoch={h['epoch']}  "
             f"size={h['total_size_bytes']}B  mode={h['mode']}",
             f"lease: {le['state']}  deadline_in={_s(le['deadline_in_s'])}  lapses={le['lapses']}   "
             f"heartbeat age: plane={_s(info['heartbeats_age_s']['data_plane'])} daemon={_s(info['heartbeats_age_s']['daemon'])}",
             f"snapshot: generation={s['generation']} (acked {s['ack_generation']})  seq={s['seq']}"]
    knobs = info["declaration"]["knobs"]
    lines.append("  " + f"{'knob':16s} {'min':>10s} {'max':>10s} " + " ".join(f"{'slot' + str(x['slot']):>12s}" for x in s["slots"]))
    for k in knobs:
        flags = ("I" if k["integer"] else "") + ("G" if k["global"] else "")
        vals = " ".join(f"{x['knobs'][k['name']]:12.6g}" for x in s["slots"])
        lines.append(f"  {k['name'] + (' [' + flags + ']' if flags else ''):16s} {k['min']:10.4g} {k['max']:10.4g} {vals}")
    lines.append("  " + f"{'weight':38s}" + " ".join(f"{x['weight']:12.4f}" for x in s["slots"]))
    lines.append("  " + f"{'variant':38s}" + " ".join(f"{str(x['variant']):>12s}" for x in s["slots"]))
    lines.append("fields: " + ", ".join(f"{f['name']}[{f['unit']}]" if f["unit"] else f["name"] for f in info["declaration"]["fields"]))
    for r in info["rings"]:
        lines.append(f"ring {r['ring']}: fill={r['fill_ratio']:.3f} head={r['head']} tail={r['tail']} drops={r['drops']} "
                     f"seq_errors={r['seq_errors']} producer_age={_s(r['producer_heartbeat_age_s'])}")
    return "\n".join(lines)
