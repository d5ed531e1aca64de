"""Subcommands of `qroute` beyond serve/sim/demo: one module per command group. Flags and
JSON-lines formats are contracts that other tools drive."""
