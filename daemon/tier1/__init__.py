"""Tier 1: the safety and rollout executor. A pure, deterministic core: time, telemetry
summaries and proposals come in as arguments; decisions and audit events go out.

  config.py    guardrails.yaml schema, loader (file:line + key path errors), check_against
  model.py     inputs/outputs: FieldStats, SlotTelemetry, CycleInput, Proposal, Command, Verdict
  events.py    audit events (tagged msgspec Structs); ExecState is a fold over them
  rollout.py   named states and the transition table
  judge.py     paired block test (promote/hold/abort), worst-of, Kayenta peer for benchmarks
  executor.py  Executor (propose/step/command/reload), ExecState, rebuild
  sim.py       telemetry simulator for tests and the judge benchmark
  ledger.py    audit ledger writer (separate owner)
"""
