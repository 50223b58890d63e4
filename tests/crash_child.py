"""Runs `python -m inas_jax.main FLAGS...` and SIGKILLs itself at one chosen moment (test harness).

  python tests/crash_child.py SITE N DELAY FLAGS...
SITE: step  - inside the N-th training step (mid-epoch)
      query - inside the N-th query function call, after it computed its picks
      save  - DELAY seconds into the N-th Orbax checkpoint save (a kill during the write)
      time  - DELAY seconds after start, wherever the run is
      none  - no kill
"""
import os
import signal
import sys
import threading


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    site, n, delay, flags_ = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
    import orbax.checkpoint as ocp
    from absl import app

    from inas_jax import main as cli
    from inas_jax import queries
    from inas_jax.queries import coreset, uncertainty
    from inas_jax.loop import train

    calls = [0]

    def nth() -> bool:
        calls[0] += 1
        return calls[0] == n

    def wrap(owner, name, before=None, after=None):
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if before and nth():
                before()
            out = real(*args, **kwargs)
            if after and nth():
                after()
            return out

        setattr(owner, name, wrapped)

    if site == "time":
        threading.Timer(delay, die).start()
    elif site == "step":
        wrap(train, "train_step", after=die)
    elif site == "query":
        for owner, name in ((uncertainty, "softmax_response"), (uncertainty, "mc_dropout"), (coreset, "coreset"),
                            (queries, "random_query")):
            wrap(owner, name, after=die)
    elif site == "save":
        wrap(ocp.CheckpointManager, "save", before=lambda: threading.Timer(delay, die).start())
    app.run(lambda argv: sys.exit(cli.main(argv)), argv=[sys.argv[0], *flags_])


if __name__ == "__main__":
    main()
