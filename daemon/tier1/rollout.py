"""The rollout state machine: named states and the one table of allowed transitions.

The executor never assigns a state directly: it fires a trigger, the table says where that
leads from the current state, and a `Transition` event records the trigger with the measured
value, the condition and the threshold that caused it. A trigger that the table does not allow
from the current state is a bug and raises.

States
  idle        baseline only; proposals accepted
  probing     arms of a probe run beside the baseline (or in switchback segments) for one window
  shadow      a rollout candidate at a tiny traffic share, SLO guardrails only
  canary      a rollout candidate at canary_steps[i] < 1, judged against the simultaneous baseline
  switchback  a rollout touching a global knob: candidate and baseline alternate in time
  baking      the candidate serves all traffic for bake_s, SLO guardrails only
  promoted    the candidate became the known-good baseline; waiting for the data plane's ack
  aborting    baseline-only published after a failure or a command; waiting for the ack
  cooldown    after a rollback, no proposals until cooldown_after_rollback_s has passed
  safe_mode   too many regressions (or a full audit queue): baseline only, proposals refused
  frozen      kill switch engaged: baseline only, proposals refused, persists across restarts
"""
from __future__ import annotations

from enum import Enum


class State(str, Enum):
    IDLE = "idle"
    PROBING = "probing"
    SHADOW = "shadow"
    CANARY = "canary"
    SWITCHBACK = "switchback"
    BAKING = "baking"
    PROMOTED = "promoted"
    ABORTING = "aborting"
    COOLDOWN = "cooldown"
    SAFE_MODE = "safe_mode"
    FROZEN = "frozen"


S = State
EXPERIMENT = (S.PROBING, S.SHADOW, S.CANARY, S.SWITCHBACK, S.BAKING)   # a candidate is live
ALL = tuple(State)

_T: dict[tuple[State, str], State] = {
    (S.IDLE, "accept_probe"): S.PROBING,
    (S.IDLE, "accept_rollout_shadow"): S.SHADOW,
    (S.IDLE, "accept_rollout"): S.CANARY,
    (S.IDLE, "accept_switchback"): S.SWITCHBACK,
    (S.IDLE, "accept_relief"): S.BAKING,     # rollout.relief: the baseline breaches, an approved preset goes to 100%
    (S.COOLDOWN, "accept_relief"): S.BAKING, # ... even while cooling down after a rollback
    (S.ABORTING, "accept_relief"): S.BAKING, # ... or before the data plane acked the abort (e.g. Tier 2 cancelled
                                             # a probe because conditions changed: the preset goes in that cycle)
    (S.PROBING, "probe_done"): S.IDLE,
    (S.SHADOW, "shadow_passed"): S.CANARY,
    (S.CANARY, "step_passed"): S.CANARY,
    (S.CANARY, "last_step_passed"): S.BAKING,
    (S.CANARY, "relief"): S.BAKING,          # rollout.relief: the baseline started breaching mid-canary
    (S.SWITCHBACK, "switchback_passed"): S.BAKING,
    (S.BAKING, "bake_done"): S.PROMOTED,
    (S.PROMOTED, "ack"): S.IDLE,
    (S.PROMOTED, "ack_timeout"): S.IDLE,
    (S.ABORTING, "ack"): S.COOLDOWN,
    (S.ABORTING, "ack_timeout"): S.COOLDOWN,
    (S.COOLDOWN, "cooldown_done"): S.IDLE,
    (S.SAFE_MODE, "reset_safe_mode"): S.IDLE,
    (S.SAFE_MODE, "safe_mode_timer"): S.IDLE,
    (S.FROZEN, "thaw"): S.IDLE,
    (S.FROZEN, "thaw_to_safe_mode"): S.SAFE_MODE,
    (S.IDLE, "snapback"): S.IDLE,
    (S.PROMOTED, "snapback"): S.IDLE,
    (S.COOLDOWN, "snapback"): S.COOLDOWN,
    (S.ABORTING, "snapback"): S.ABORTING,
    (S.SAFE_MODE, "snapback"): S.SAFE_MODE,
    (S.FROZEN, "snapback"): S.FROZEN,
    (S.FROZEN, "kill"): S.FROZEN,
}
# Failures and stops of a live candidate: all roll back to the baseline at once.
for _s in EXPERIMENT:
    for _trig in ("slo_breach", "lease_lost", "rollback", "snapback", "config_reload", "cancel"):
        _T[(_s, _trig)] = S.ABORTING
    if _s is not S.PROBING:   # a probe never fails for lack of data: it reports insufficient_data
        _T[(_s, "deadline")] = S.ABORTING
    _T[(_s, "regressions_limit")] = S.SAFE_MODE
for _s in (S.CANARY, S.SWITCHBACK):   # the phases the comparative judge rules on
    _T[(_s, "judge_abort")] = S.ABORTING
# Kill switch from every state; safe mode from every state but frozen (the kill switch wins).
for _s in ALL:
    if _s is not S.FROZEN:
        _T[(_s, "kill")] = S.FROZEN
        _T[(_s, "enter_safe_mode")] = S.SAFE_MODE
_T[(S.SAFE_MODE, "enter_safe_mode")] = S.SAFE_MODE

TRANSITIONS: dict[tuple[State, str], State] = dict(sorted(_T.items(), key=lambda kv: (kv[0][0].value, kv[0][1])))


def next_state(state: State, trigger: str) -> State:
    """Where `trigger` leads from `state`; KeyError (a bug in the caller) if not allowed."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise KeyError(f"rollout: trigger {trigger!r} is not allowed in state {state.value!r}") from None
