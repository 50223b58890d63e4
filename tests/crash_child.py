"""Runs `python -m inas_jax.main FLAGS...` and SIGKILLs itself at one chosen moment (test harness).

  python tests/crash_child.py SITE N DELAY FLAGS...
SITE: step       - inside the N-th training step (mid-epoch; compile-ahead warm-ups are not counted)
      query      - inside the N-th query function call, after it computed its picks
      save       - DELAY seconds into the N-th Orbax checkpoint save (a kill during the write)
      round_save - DELAY seconds into the N-th save of a round checkpoint (rounds/), the round's commit
      time       - DELAY seconds after start, wherever the run is
      none       - no kill
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

    def wrap(owner, name, before=None, after=None, counts=lambda *args: True):
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if before and counts(*args) and nth():
                before()
            out = real(*args, **kwargs)
            if after and counts(*args) and nth():
                after()
            return out

        setattr(owner, name, wrapped)

    def later():
        threading.Timer(delay, die).start()

    if site == "time":
        later()
    elif site == "step":
        wrap(train, "train_step", after=die, counts=lambda *_: threading.current_thread() is threading.main_thread())
    elif site == "query":
        for owner, name in ((uncertainty, "softmax_response"), (uncertainty, "mc_dropout"), (coreset, "coreset"),
                            (queries, "random_query")):
            wrap(owner, name, after=die)
    elif site == "save":
        wrap(ocp.CheckpointManager, "save", before=later)
    elif site == "round_save":
        wrap(ocp.CheckpointManager, "save", before=later, counts=lambda manager, *_: manager.directory.name == "rounds")
    app.run(lambda argv: sys.exit(cli.main(argv)), argv=[sys.argv[0], *flags_])


if __name__ == "__main__":
    main()
