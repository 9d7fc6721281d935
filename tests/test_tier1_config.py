"""guardrails.yaml: the repo's file loads; each broken file names the right line and key path;
check_against catches every mismatch with the data plane's declaration."""
from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from daemon.tier1.config import ConfigError, Guardrails, check_against, json_schema, load_guardrails, resolve_knob
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "guardrails"
BROKEN = sorted(CORPUS.glob("*.yaml"))

DEMO_DECL = Declaration(
    knobs=(KnobDecl("diffusion", 0.0, 1.0, 0.3), KnobDecl("decay", 0.0, 1.0, 0.1),
           KnobDecl("noise", 0.0, 0.5, 0.05), KnobDecl("substeps", 1, 16, 4, integer=True)),
    fields=(FieldDecl("latency_us", "us"), FieldDecl("error"), FieldDecl("quality"), FieldDecl("cost")),
    variants=("ref", "fast"))


def _universe_decl() -> Declaration:
    from daemon.demo.apps import declared_fields, declared_knobs, declared_variants
    return Declaration(declared_knobs("universe"), declared_fields("universe"), declared_variants("universe"))


def test_repo_guardrails_loads_and_matches_the_universe_data_plane():
    g = load_guardrails(ROOT / "guardrails.yaml")
    assert g.target == "universe"
    assert set(g.knobs) == {"diffusion", "decay", "noise", "substeps"}
    assert check_against(g, _universe_decl()) == []
    steps = g.rollout.canary_steps   # the profile's ramp is the demo's to tune; its shape is the rule
    assert steps[-1] == 1.0 and all(a < b for a, b in zip(steps, steps[1:]))
    assert g.metrics.address == "127.0.0.1:9464" and g.cycle.period_s == 0.010
    assert g.bus.enabled is False and g.bus.url == "ws://127.0.0.1:9100"
    # precedence: knob > limits > preset
    assert resolve_knob(g, "decay", 0.0, 1.0).max_delta == 0.1
    assert resolve_knob(g, "diffusion", 0.0, 1.0).max_delta == 0.2
    sub = resolve_knob(g, "substeps", 1, 16)
    assert (sub.delta_mode, sub.max_delta, sub.rate_limit_hz, sub.min_interval_s) == ("absolute", 3, 5, 0.2)
    noise = resolve_knob(g, "noise", 0.0, 2.0)
    assert (noise.lo, noise.hi) == (0.0, 1.0)


def test_every_default_key_is_documented_in_the_repo_file():
    text = (ROOT / "guardrails.yaml").read_text()
    for f in msgspec.structs.fields(Guardrails):
        assert f"\n{f.name}:" in "\n" + text, f"top-level key {f.name} missing from guardrails.yaml"


def test_corpus_is_large_enough():
    assert len(BROKEN) >= 15
    assert load_guardrails(CORPUS / "base.yml").target == "demo"


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_names_line_and_key_path(path: Path):
    lines = path.read_text().splitlines()
    want_path = lines[0].split("expect-path:", 1)[1].strip()
    want_text = lines[1].split("expect-text:", 1)[1].strip()
    want_line = next(i + 1 for i, ln in enumerate(lines) if "# <- error" in ln)
    with pytest.raises(ConfigError) as ei:
        load_guardrails(path)
    errs = ei.value.errors
    hit = [e for e in errs if f"{path}:{want_line}: {want_path}:" in e]
    assert hit, f"no error names {path.name}:{want_line} {want_path}; got {errs}"
    assert any(want_text in e for e in hit), f"{want_text!r} not in {hit}"
    assert "not loaded" in str(ei.value)


def test_all_errors_reported_at_once():
    text = (CORPUS / "base.yml").read_text()
    text = text.replace("  confidence: 0.99", "  confidence: 2").replace("  probe_weight: 0.1", "  probe_weight: 0.9")
    text = text.replace("    max_delta: 0.05", "    max_delta: 0.05\n    colour: red")
    with pytest.raises(ConfigError) as ei:
        load_guardrails(text)
    # the unknown key is structural: reported without running the semantic checks
    assert len(ei.value.errors) == 1 and "knobs.decay.colour" in ei.value.errors[0]
    text = text.replace("    colour: red\n", "")
    with pytest.raises(ConfigError) as ei:
        load_guardrails(text)
    msgs = "\n".join(ei.value.errors)
    assert "rollout.confidence: found 2" in msgs and "rollout.probe_weight: found 0.9" in msgs


def test_text_input_and_missing_file():
    g = load_guardrails("target: t1\nknobs: {decay: {}}\nobjective: {terms: [{field: x}]}\n")
    assert g.target == "t1" and g.preset == "balanced"
    with pytest.raises(ConfigError) as ei:
        load_guardrails("/nonexistent/guardrails.yaml")
    assert "could not be read" in ei.value.errors[0]


def test_json_schema_describes_the_struct():
    s = json_schema()
    json.dumps(s)
    defs = s["$defs"]
    assert "Guardrails" in defs and "target" in defs["Guardrails"]["required"]
    assert defs["Guardrails"]["additionalProperties"] is False


def _g(extra: str = "") -> Guardrails:
    return load_guardrails("target: demo\nknobs:\n  decay: {min: 0.01, max: 0.5}\n  ghost: {}\n"
                           "objective: {terms: [{field: latency_us}, {field: nope}]}\n"
                           "slos: [{name: s, field: missing_field, max: 1}]\n"
                           "catalog:\n  variants: [{id: x, variant: turbo, state: Approved, max_p99: 5}]\n" + extra)


def test_check_against_names_every_mismatch():
    msgs = check_against(_g(), DEMO_DECL)
    joined = "\n".join(msgs)
    assert "knobs.ghost: the data plane declares no knob 'ghost'" in joined
    assert "objective.terms[1].field: 'nope' is not a declared telemetry field" in joined
    assert "slos[0].field: 'missing_field'" in joined
    assert "catalog.variants[0].variant: 'turbo' (x) is not a declared variant" in joined
    assert len(msgs) == 4


def test_check_against_bounds_may_only_narrow():
    g = load_guardrails("target: demo\nknobs:\n  noise: {min: -0.1, max: 0.9}\n"
                        "  decay: {min: 0.2, max: 0.4}\nobjective: {terms: [{field: latency_us}]}\n")
    msgs = check_against(g, DEMO_DECL)
    assert any("knobs.noise.min: -0.1 is below the declared hard minimum 0.0" in m for m in msgs)
    assert any("knobs.noise.max: 0.9 is above the declared hard maximum 0.5" in m for m in msgs)
    # the declared initial (0.1) would sit outside the narrowed [0.2, 0.4]
    assert any("knobs.decay: the declared initial value 0.1 lies outside" in m for m in msgs)


def test_validate_file_collects_load_and_declaration_problems():
    from daemon.tier1.config import validate_file
    assert validate_file(ROOT / "guardrails.yaml", _universe_decl()) == []
    assert validate_file(ROOT / "guardrails.yaml") == []
    msgs = validate_file(CORPUS / "bad_port.yaml")
    assert len(msgs) == 1 and "metrics.address" in msgs[0]
    other = Declaration(knobs=(KnobDecl("decay", 0.0, 1.0, 0.1),), fields=(FieldDecl("latency_us"),))
    msgs = validate_file(ROOT / "guardrails.yaml", other)
    assert any(m.startswith("knobs.diffusion: the data plane declares no knob") for m in msgs)
