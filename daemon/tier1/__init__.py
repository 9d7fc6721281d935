"""Tier 1: the safety and rollout executor. A pure, deterministic core: time, telemetry
summaries and proposals come in as arguments; decisions and audit events go out."""
