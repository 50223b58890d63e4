"""The report of a set of results.json files: checking, statistics, tables, quoted numbers, plots and
the command line (cli). Loads no jax."""
