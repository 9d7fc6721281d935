"""Benchmarks behind `arqond bench <suite>`. Each module exposes run(quick: bool) -> dict."""
