"""Generate the broken-guardrails corpus: one mistake per file, marked with '# <- error'."""
import pathlib
BASE = """target: demo
knobs:
  decay:
    min: 0.05
    max: 0.5
    max_delta: 0.05
  noise:
    max: 0.3
objective:
  terms:
    - field: latency_us
      stat: mean
slos:
  - name: latency_p99
    field: latency_us
    stat: p99
    max: 5000
rollout:
  canary_steps: [0.05, 0.25, 0.5, 1.0]
  confidence: 0.99
  block_s: 0.5
  step_deadline_s: 30
  probe_weight: 0.1
catalog:
  variants:
    - id: ref-v1
      variant: ref
      state: Promoted
    - id: fast-v2
      variant: fast
      state: Approved
      rollback_target: ref-v1
lease:
  duration_s: 0.5
metrics:
  address: 127.0.0.1:9464
cycle:
  period_s: 0.01
bus:
  url: ws://127.0.0.1:9100
"""
M = "  # <- error"
cases = {
 "type_max_delta": ("knobs.decay.max_delta", "found 'fast'", lambda t: t.replace("    max_delta: 0.05", "    max_delta: fast" + M)),
 "unknown_top_key": ("rolout", "unknown key", lambda t: t.replace("rollout:\n", "rolout:" + M + "\n  min_blocks: 8\nrollout:\n")),
 "unknown_nested_key": ("rollout.canary_step", "unknown key", lambda t: t.replace("  canary_steps:", "  canary_step: [0.1, 1.0]" + M + "\n  canary_steps:")),
 "min_not_below_max": ("knobs.decay.max", "greater than knobs.decay.min", lambda t: t.replace("    max: 0.5\n", "    max: 0.01" + M + "\n")),
 "steps_not_increasing": ("rollout.canary_steps[2]", "steps must increase", lambda t: t.replace("  canary_steps: [0.05, 0.25, 0.5, 1.0]", "  canary_steps:\n    - 0.05\n    - 0.5\n    - 0.25" + M + "\n    - 1.0")),
 "steps_not_ending_at_one": ("rollout.canary_steps[2]", "1.0 as the last step", lambda t: t.replace("  canary_steps: [0.05, 0.25, 0.5, 1.0]", "  canary_steps:\n    - 0.05\n    - 0.25\n    - 0.5" + M)),
 "confidence_percent": ("rollout.confidence", "ratio in (0.5, 1)", lambda t: t.replace("  confidence: 0.99", "  confidence: 99" + M)),
 "duplicate_key": ("knobs.decay", "duplicate key", lambda t: t.replace("  noise:\n    max: 0.3\n", "  noise:\n    max: 0.3\n  decay:" + M + "\n    max: 0.4\n")),
 "missing_target": ("target", "required key `target`", lambda t: t.replace("target: demo\nknobs:", "knobs:" + M)),
 "slo_both_limits": ("slos[0]", "exactly one of", lambda t: t.replace("  - name: latency_p99", "  - name: latency_p99" + M).replace("    max: 5000", "    max: 5000\n    min: 10")),
 "bad_stat": ("objective.terms[0].stat", "'p90'", lambda t: t.replace("      stat: mean", "      stat: p90" + M)),
 "exponent_as_text": ("rollout.block_s", "YAML 1.1", lambda t: t.replace("  block_s: 0.5", "  block_s: 5e-1" + M)),
 "lifecycle_case": ("catalog.variants[1].state", "'Approved'", lambda t: t.replace("      state: Approved", "      state: approved" + M)),
 "bad_checksum": ("catalog.variants[0].checksum", "sha256:", lambda t: t.replace("      state: Promoted", "      state: Promoted\n      checksum: md5:1234" + M)),
 "unknown_rollback_target": ("catalog.variants[1].rollback_target", "'baseline' or a catalog id", lambda t: t.replace("      rollback_target: ref-v1", "      rollback_target: ref-v0" + M)),
 "bad_port": ("metrics.address", "port in 0..65535", lambda t: t.replace("  address: 127.0.0.1:9464", "  address: 127.0.0.1:99999" + M)),
 "cycle_too_fast": ("cycle.period_s", "1 ms", lambda t: t.replace("  period_s: 0.01", "  period_s: 0.0001" + M)),
 "deadline_too_short": ("rollout.step_deadline_s", "min_blocks x block_s", lambda t: t.replace("  step_deadline_s: 30", "  step_deadline_s: 2" + M)),
 "probe_weight_too_big": ("rollout.probe_weight", "arms fit beside the baseline", lambda t: t.replace("  probe_weight: 0.1", "  probe_weight: 0.5" + M)),
 "normalised_delta_over_one": ("knobs.noise.max_delta", "(0, 1]", lambda t: t.replace("    max: 0.3\n", "    max: 0.3\n    max_delta: 2" + M + "\n")),
 "float_for_int": ("rollout.min_blocks", "whole number", lambda t: t.replace("  block_s: 0.5", "  block_s: 0.5\n  min_blocks: 8.5" + M)),
 "slos_as_mapping": ("slos", "a list of", lambda t: t.replace("slos:\n  - name: latency_p99\n    field: latency_us\n    stat: p99\n    max: 5000\n", "slos:" + M + "\n  latency_p99:\n    field: latency_us\n")),
 "lease_shorter_than_cycles": ("lease.duration_s", "2 x cycle.period_s", lambda t: t.replace("  duration_s: 0.5", "  duration_s: 0.01" + M)),
 "bus_http_url": ("bus.url", "ws:// or wss://", lambda t: t.replace("  url: ws://127.0.0.1:9100", "  url: http://127.0.0.1:9100" + M)),
 "yes_is_a_bool": ("budget.max_change", "True (bool)", lambda t: t + "budget:\n  max_change: yes" + M + "\n"),
 "empty_allowlist": ("knobs", "at least one allowlisted knob", lambda t: t.replace("knobs:\n  decay:\n    min: 0.05\n    max: 0.5\n    max_delta: 0.05\n  noise:\n    max: 0.3\n", "knobs: {}" + M + "\n")),
 "hysteresis_ratio": ("anti_thrashing.hysteresis", "[0, 1)", lambda t: t + "anti_thrashing:\n  hysteresis: 1.5" + M + "\n"),
 "audit_batch_too_long": ("audit.batch_s", "seconds in [0, 1]", lambda t: t + "audit:\n  batch_s: 5" + M + "\n"),
 "syntax_error": ("(syntax)", "expected valid YAML", lambda t: t.replace("  confidence: 0.99", "  confidence: [0.99" + M)),
}
out = pathlib.Path(__file__).parent
out.mkdir(parents=True, exist_ok=True)
for name, (path, frag, f) in cases.items():
    txt = f(BASE)
    assert txt != BASE and M in txt, name
    (out / f"{name}.yaml").write_text(f"# expect-path: {path}\n# expect-text: {frag}\n" + txt)
(out / "base.yml").write_text(BASE)   # the unbroken file (not *.yaml: not part of the corpus)
print(len(cases))
