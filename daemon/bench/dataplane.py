"""`arqond bench dataplane`: the memory contract's costs, measured across real processes.

Figures (all on this machine, same run):
- emit_ns_* / read_ns_*: per call, from tool_plane timing batches of 64 calls with CLOCK_MONOTONIC
  while this process drains the ring concurrently (read: unchanged snapshot, cached path).
- read_changed_ns_p50: a read right after a publish (cache refresh), measured in C as
  (publish + read) - (publish) over batches.
- drain_records_per_s: Python draining a full 65,536-record backlog (one cffi call per ring).
- pipeline_records_per_s: C producer -> Python consumer, lossless, end to end.
- publish_us_*: Segment.publish of a ready SnapshotSpec (encode + one C call) from Python.
- ack_us_*: publish -> the data plane's ack_generation reaches it, with readers running.
- peers: records/s a Python consumer gets from a Python producer sending one 64-byte record
  per message through iceoryx2, pyzmq (ipc), a posix_ipc message queue, multiprocessing.Queue.
"""
from __future__ import annotations

import os
import platform
import select
import subprocess
import sys
import time

import numpy as np

from shm_layout.decl import SlotSpec, SnapshotSpec
from shm_layout.segment import Segment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "native", "build", "tool_plane")
REC = 64


class _Plane:
    def __init__(self, *args: str):
        self.p = subprocess.Popen([TOOL, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"tool_plane {args} failed to start: {line!r}")

    def send(self, s: str) -> None:
        self.p.stdin.write(s)
        self.p.stdin.flush()

    def ready(self) -> bool:
        return bool(select.select([self.p.stdout], [], [], 0)[0])

    def result(self) -> dict:
        import json
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()


def _name(tag: str) -> str:
    return f"bench-{tag}-{os.getpid()}"


def _pcts(xs, scale=1.0) -> dict:
    a = np.asarray(xs, dtype=float) * scale
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def _emit_read(seconds: float) -> dict:
    pl = _Plane("bench", _name("er"), str(seconds))
    try:
        with Segment.attach(pl.p.args[2]) as seg:
            pl.send("go\n")
            while not pl.ready():
                seg.drain(0)
                time.sleep(0.0002)
            res = pl.result()
    finally:
        pl.close()
    return res


def _drain_and_pipeline(n: int) -> dict:
    # Backlog drain: the producer fills the 65,536-record ring, then we time one drain.
    rates = []
    for _ in range(5):
        pl = _Plane("produce", _name("dr"), "1", str(1 << 16))
        try:
            with Segment.attach(pl.p.args[2]) as seg:
                pl.send("go\n")
                pl.result()
                t0 = time.perf_counter()
                rows = seg.drain(0)
                dt = time.perf_counter() - t0
                rates.append(len(rows) / dt)
        finally:
            pl.close()
    # Pipeline: lossless C producer -> Python consumer.
    pl = _Plane("produce", _name("pp"), "1", str(n), "--lossless")
    try:
        with Segment.attach(pl.p.args[2]) as seg:
            got = 0
            pl.send("go\n")
            t0 = time.perf_counter()
            while got < n:
                got += len(seg.drain(0))
            dt = time.perf_counter() - t0
            pl.result()
    finally:
        pl.close()
    return {"drain_records_per_s": float(np.median(rates)), "drain_records_per_s_all": rates,
            "pipeline_records_per_s": n / dt}


def _snap(gen: int) -> SnapshotSpec:
    slots = tuple(SlotSpec(0.5, (gen + s) % 4, tuple(float(gen * 1000 + s * 100 + i) for i in range(8))) for s in range(2))
    return SnapshotSpec(gen, slots, slots[0].knobs, salt=gen)


def _publish_ack(n: int) -> dict:
    pl = _Plane("read", _name("pa"), "3600", "1")
    pub, ack = [], []
    try:
        with Segment.attach(pl.p.args[2]) as seg:
            seg.acquire_writer()
            ack_off = seg._ctl_off("ack_generation")
            for g in range(1, n + 1):
                snap = _snap(g)
                t0 = time.perf_counter_ns()
                seg.publish(snap, time.monotonic_ns() + 10**10)
                t1 = time.perf_counter_ns()
                while seg.load_u64(ack_off) < g:
                    pass
                t2 = time.perf_counter_ns()
                pub.append(t1 - t0)
                ack.append(t2 - t1)
                if g % 64 == 0:
                    time.sleep(0.0005)  # do not starve the readers on 2 cores
    finally:
        pl.p.kill()
        pl.close()
    p, a = _pcts(pub, 1e-3), _pcts(ack, 1e-3)
    return {"publish_us_p50": p["p50"], "publish_us_p99": p["p99"], "publish_us_max": p["max"],
            "ack_us_p50": a["p50"], "ack_us_p99": a["p99"], "ack_us_max": a["max"]}


# ---- peers ------------------------------------------------------------------------------

_PEER_PRODUCER = r"""
import sys, time, os
kind, addr, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
rec = b"x" * 64
end = time.monotonic() + seconds
if kind == "mp":
    raise SystemExit("mp runs in-process")
if kind == "zmq":
    import zmq
    s = zmq.Context().socket(zmq.PUSH); s.setsockopt(zmq.SNDHWM, 100000); s.connect(addr)
    send = s.send
elif kind == "mq":
    import posix_ipc
    q = posix_ipc.MessageQueue(addr)
    send = lambda b: q.send(b)
elif kind == "iox":
    import ctypes, iceoryx2 as iox2
    class Rec(ctypes.Structure):
        _fields_ = [("w", ctypes.c_uint64 * 8)]
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = node.service_builder(iox2.ServiceName.new(addr)).publish_subscribe(Rec).subscriber_max_buffer_size(1024).history_size(0).open_or_create()
    pub = svc.publisher_builder().create()
    r = Rec()
    def send(_):
        pub.send_copy(r)
print("ready", flush=True)
sys.stdin.readline()
n = 0
while time.monotonic() < end:
    for _ in range(64):
        try:
            send(rec)
        except Exception:
            pass
    n += 64
print(n, flush=True)
"""


def _peer_run(kind: str, seconds: float) -> dict:
    import multiprocessing as mp
    if kind == "mp":
        q = mp.Queue(100000)
        def prod(q, seconds):
            end = time.monotonic() + seconds
            rec = b"x" * 64
            while time.monotonic() < end:
                q.put(rec)
            q.put(None)
        p = mp.get_context("fork").Process(target=prod, args=(q, seconds))
        t0 = time.perf_counter()
        p.start()
        got = 0
        while True:
            item = q.get(timeout=seconds + 10)
            if item is None:
                break
            got += 1
        dt = time.perf_counter() - t0
        p.join()
        return {"records_per_s": got / dt}
    addr = {"zmq": f"ipc:///tmp/arqond-bench-{os.getpid()}.sock", "mq": f"/arqond-bench-{os.getpid()}",
            "iox": f"arqond/bench/{os.getpid()}"}[kind]
    cleanup = []
    if kind == "zmq":
        import zmq
        sock = zmq.Context().socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.bind(addr)
        recv = lambda: sock.recv(zmq.NOBLOCK)
        again = zmq.Again
    elif kind == "mq":
        import posix_ipc
        q = posix_ipc.MessageQueue(addr, posix_ipc.O_CREX, max_messages=10, max_message_size=64)
        cleanup.append(q.unlink)
        def recv():
            return q.receive(0)[0]
        again = posix_ipc.BusyError
    elif kind == "iox":
        import ctypes
        import iceoryx2 as iox2

        class Rec(ctypes.Structure):
            _fields_ = [("w", ctypes.c_uint64 * 8)]
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        svc = (node.service_builder(iox2.ServiceName.new(addr)).publish_subscribe(Rec)
               .subscriber_max_buffer_size(1024).history_size(0).open_or_create())
        sub = svc.subscriber_builder().create()

        class _Again(Exception):
            pass

        def recv():
            s = sub.receive()
            if s is None:
                raise _Again
            return s
        again = _Again
    prod = subprocess.Popen([sys.executable, "-c", _PEER_PRODUCER, kind, addr, str(seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if prod.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} producer failed")
        prod.stdin.write("go\n")
        prod.stdin.flush()
        got = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            try:
                recv()
                got += 1
            except again:
                pass
        dt = time.perf_counter() - t0
        sent = int(prod.stdout.readline() or 0)
        return {"records_per_s": got / dt, "sent": sent}
    finally:
        prod.kill()
        prod.wait()
        for c in cleanup:
            try:
                c()
            except Exception:
                pass


class _PeerTimeout(Exception):
    pass


def _peers(seconds: float) -> dict:
    import signal

    def on_alarm(*_):
        raise _PeerTimeout(f"no result within {seconds + 20:.0f} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    out = {}
    try:
        for kind, label in (("iox", "iceoryx2"), ("zmq", "pyzmq_ipc"), ("mq", "posix_ipc_mq"), ("mp", "multiprocessing_queue")):
            signal.alarm(int(seconds + 20))  # a wedged peer is reported, never hangs the suite
            try:
                out[label] = _peer_run(kind, seconds)
            except Exception as e:  # a missing or failing optional peer is reported, not fatal
                out[label] = {"error": f"{type(e).__name__}: {e}"}
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return out


def run(quick: bool = False) -> dict:
    if not os.path.exists(TOOL):
        raise SystemExit(f"{TOOL} missing: run `make native`")
    er = _emit_read(1.0 if quick else 4.0)
    # read after a change: tool_plane measures it in C only in the unit test; here the cache
    # refresh cost is derived from the same-run ack path instead (see ack_us) and from C below.
    dr = _drain_and_pipeline(2_000_000 if quick else 20_000_000)
    pa = _publish_ack(2000 if quick else 20000)
    peers = _peers(1.5 if quick else 5.0)
    best_peer = max((v["records_per_s"] for v in peers.values() if "records_per_s" in v), default=0.0)
    changed = _read_changed()
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "emit_ns_p50": er["emit_ns_p50"], "emit_ns_p99": er["emit_ns_p99"],
        "read_ns_p50": er["read_ns_p50"], "read_ns_p99": er["read_ns_p99"],
        "read_changed_ns_p50": changed["read_changed_ns_p50"],
        "emit_bench_drops": er["drops"],
        **dr, **pa,
        "peers": peers,
        "best_peer_records_per_s": best_peer,
        "ratio_vs_best_peer": dr["pipeline_records_per_s"] / best_peer if best_peer else None,
    }
    res["floors"] = {
        "emit_p50_le_25ns": res["emit_ns_p50"] <= 25,
        "read_unchanged_p50_le_10ns": res["read_ns_p50"] <= 10,
        "read_changed_p50_le_40ns": res["read_changed_ns_p50"] <= 40,
        "drain_ge_20M_per_s": res["drain_records_per_s"] >= 20e6,
        "publish_p99_le_50us": res["publish_us_p99"] <= 50,
        "ge_10x_best_peer": bool(best_peer) and res["pipeline_records_per_s"] >= 10 * best_peer,
    }
    return res


def _read_changed() -> dict:
    exe = os.path.join(ROOT, "native", "build", "tool_read_changed")
    if not os.path.exists(exe):
        raise SystemExit(f"{exe} missing: run `make native`")
    import json
    out = subprocess.run([exe, _name("rc")], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
