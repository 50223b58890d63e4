"""`python -m inas_jax.report`: the report of a set of results.json files."""
from inas_jax.report.cli import run

run()
