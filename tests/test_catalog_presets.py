"""Catalog presets: knob bundles approved as a whole (Arm.preset). Tier 1 lets an approved
bundle jump further than max_delta but checks that the arm is exactly the approved bundle;
guardrails.yaml refuses bundles outside bounds, unknown knobs and context fields the data
plane does not declare."""
from __future__ import annotations

import pytest

from daemon.tier1.config import check_against, load_guardrails, ConfigError
from daemon.tier1.executor import Executor
from daemon.tier1.model import Arm, Proposal
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

DECL = Declaration(
    knobs=(KnobDecl("a", 0.0, 1.0, 0.5), KnobDecl("b", 0.0, 1.0, 0.5), KnobDecl("n", 1, 8, 4, integer=True)),
    fields=(FieldDecl("lat", "us"), FieldDecl("load")), variants=())

CFG = """
target: t
limits: {max_delta: 0.1, rate_limit_hz: 10, min_interval_s: 0}
knobs: {a: {}, b: {}, n: {delta_mode: absolute, max_delta: 1}}
objective: {terms: [{field: lat, stat: mean}]}
rollout: {canary_steps: [0.1, 1.0], min_samples: 5, min_blocks: 3, block_s: 0.1}
tuning: {context: [load]}
catalog:
  variants:
    - {id: far, state: Approved, knobs: {a: 0.9, b: 0.1, n: 7}, context: {load: 3.0}}
    - {id: draft, state: Draft, knobs: {a: 0.1}}
"""


def ex(text: str = CFG) -> Executor:
    x = Executor(load_guardrails(text), DECL, run_id="test")
    x.start(0)
    return x


def test_preset_may_jump_beyond_max_delta_but_a_plain_arm_may_not():
    x = ex()
    plain = Proposal("p1", "rollout", (Arm({"a": 0.9, "b": 0.1, "n": 7.0}),))
    v = x.propose(1_000_000_000, plain)
    assert not v.accepted and v.rule == "max_delta"
    v = x.propose(1_000_000_000, Proposal("p2", "rollout", (Arm({"a": 0.9, "b": 0.1, "n": 7.0}, preset="far"),)))
    assert v.accepted, v.message
    # the canary slot carries the whole bundle
    cand = v.snapshot.slots[1]
    assert cand.knobs[:3] == (0.9, 0.1, 7.0)


@pytest.mark.parametrize("arm, rule", [
    (Arm({"a": 0.9, "b": 0.1}, preset="far"), "preset_mismatch"),            # a knob missing
    (Arm({"a": 0.9, "b": 0.2, "n": 7.0}, preset="far"), "preset_mismatch"),  # a value changed
    (Arm({"a": 0.1}, preset="draft"), "catalog"),                            # not approved
    (Arm({"a": 0.5}, preset="ghost"), "catalog"),                            # no such entry
])
def test_preset_arm_must_be_the_approved_bundle(arm, rule):
    v = ex().propose(1_000_000_000, Proposal("p", "rollout", (arm,)))
    assert not v.accepted and v.rule == rule, v.message


def test_preset_still_obeys_bounds():
    text = CFG.replace("knobs: {a: {}, b: {}", "knobs: {a: {max: 0.8}, b: {}")
    g = load_guardrails(text)
    problems = check_against(g, DECL)
    assert any("catalog.variants[0].knobs.a" in p and "outside the guardrail bounds" in p for p in problems), problems


def test_config_names_bad_presets_and_context():
    bad = CFG.replace("context: [load]", "context: [nope]").replace("n: 7}", "n: 6.5}")
    problems = check_against(load_guardrails(bad), DECL)
    assert any(p.startswith("tuning.context[0]: 'nope' is not a declared telemetry field") for p in problems), problems
    assert any("catalog.variants[0].knobs.n" in p and "whole number" in p for p in problems), problems
    assert any("catalog.variants[0].context.load" in p for p in problems), problems
    assert check_against(load_guardrails(CFG), DECL) == []


def test_entry_needs_a_variant_or_a_bundle():
    with pytest.raises(ConfigError) as e:
        load_guardrails(CFG.replace("- {id: draft, state: Draft, knobs: {a: 0.1}}", "- {id: empty, state: Draft}"))
    assert "catalog.variants[1]" in str(e.value) and "a variant, a knobs bundle, or both" in str(e.value)


def test_catalog_list_shows_presets_and_their_conditions(tmp_path):
    from typer.testing import CliRunner

    from daemon.cli import app
    f = tmp_path / "g.yaml"
    f.write_text(CFG)
    r = CliRunner().invoke(app, ["catalog", "list", "-c", str(f)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("far"))
    assert "variant=-" in line and "eligible" in line and "knobs: a=0.9 b=0.1 n=7" in line and "context: load=3" in line
    assert "draft" in r.output and "Draft" in r.output


def _preset_run(cls=Executor):
    """A preset rollout through the canary to promotion, then a plain probe around the new baseline."""
    from daemon.tier1 import events as ev
    from daemon.tier1.sim import TelemetrySim
    x = cls(load_guardrails(CFG), DECL, run_id="replay")
    sim = TelemetrySim(lambda sl, i, t: {"lat": 1000.0 - 100.0 * sl.knobs[0], "load": 3.0}, seed=7,
                       ar_sd=0.01, white_sd=0.05)
    t, log = 0, list(x.start(0).events)
    v = x.propose(t, Proposal("pre", "rollout", (Arm({"a": 0.9, "b": 0.1, "n": 7.0}, preset="far"),)))
    assert v.accepted, v.message
    log += v.events
    while x.exp is not None or x.mstate.value != "idle":
        t += 10_000_000
        assert t < 30_000_000_000, x.mstate
        log += x.step(t, sim.cycle(t, x.snapshot)).events
    t += 1_000_000_000
    log += x.propose(t, Proposal("probe", "probe", (Arm({"a": 0.95}), Arm({"a": 0.85})))).events
    return x, log, ev


def test_preset_rollout_replays_byte_for_byte_and_through_the_scans():
    from daemon.tier1.executor import rebuild
    from .test_tier1_fastpaths import ScanExecutor
    x, log, ev = _preset_run()
    assert [e.new_baseline for e in log if isinstance(e, ev.Promotion)] == [(0.9, 0.1, 7.0)]
    x2, log2, _ = _preset_run()
    assert ev.encode(log) == ev.encode(log2)                       # same inputs, same bytes
    x3, log3, _ = _preset_run(ScanExecutor)
    assert ev.encode(log) == ev.encode(log3)                       # shortcuts decide as the scans
    assert rebuild(ev.decode(ev.encode(log)), DECL) == x.state     # the state is the fold of the log
    assert rebuild(log, DECL).baseline == (0.9, 0.1, 7.0)
