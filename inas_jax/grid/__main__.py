"""`python -m inas_jax.grid`: a grid of runs on Ray (inas-jax-grid)."""
from inas_jax.grid.cli import run

run()
