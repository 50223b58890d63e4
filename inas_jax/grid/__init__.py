"""Grids of runs on Ray: datasets x queries x strategies x seeds, each `python -m inas_jax.main` in its own
workdir, as many at once as the cluster holds, restarted from its workdir when its node fails.

  from inas_jax.grid import parse_strategies, product_grid, run_grid
  grid = product_grid("runs/grid", ["digits"], ["random", "sr"], parse_strategies("inas,fixed:1,2"), [0, 1],
              ["--width=8", "--budget=300"])
  result = run_grid(grid)                 # a local Ray cluster; address="auto" joins this node's
  result.exit_status                      # 0 when every run finished

`plan` (what a grid is, the order of its runs) and `progress` need neither jax nor Ray; `runner`
imports Ray when it runs, and `task` runs inside each Ray task, starting the driver through `pinned`.
The command line is `inas-jax-grid` (cli.py).
"""
from inas_jax.grid.plan import Grid, Run, parse_strategies, product_grid
from inas_jax.grid.runner import GridResult, Outcome, run_grid

__all__ = ["Grid", "GridResult", "Outcome", "Run", "parse_strategies", "product_grid", "run_grid"]
