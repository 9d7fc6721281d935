"""The demo's real data planes: `native/apps/universe.c` and `native/apps/serve.c`.

`apps` starts them as separate processes and parses their output; `sweep` finds the best
static setting per scenario phase offline (the yardstick the live tuner is measured against).
"""
