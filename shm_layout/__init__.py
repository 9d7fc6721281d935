"""The shared-memory contract between libarqon (the data plane) and the daemon.

`spec` is the single source of truth for every offset and size; the C header
`native/include/arqon_layout.h` is generated from it (`make header`) and a test
fails if the two drift. `segment` attaches to a live segment defensively.
"""
