import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CIFAR10_NPZ, tiny_config
from inas_jax.config import ModelConfig, TrainConfig
from inas_jax.data import load_npz
from inas_jax.model.network import build_model
from inas_jax.model.search_space import Arch
from inas_jax.loop.train import TrainingDiverged, epoch_batches, evaluate, train

TINY = tiny_config().train.replace(epoch_size=256)  # the tiny run's training (digits augmentation), 8 steps an epoch


def _model(arch, data, width=4, **model_settings):
    return build_model(arch, data.num_classes, ModelConfig(width=width, **model_settings), data.channel_stats)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]


def test_learns_digits_above_90_percent(digits):
    cfg = TrainConfig(epochs=8, epoch_size=2048, batch_size=64, flip=False, max_shift=1, max_rotation=10.0)
    result = train(_model(Arch(1, 2), digits, width=8), digits.x_train, digits.y_train, cfg, jax.random.key(0))
    metrics = evaluate(result.model, result.state, digits.x_test, digits.y_test)
    assert metrics["accuracy"] > 0.90, metrics
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_key_same_parameters_and_other_key_differs(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    model = _model(Arch(1, 1), digits)
    a = train(model, x, y, TINY, jax.random.key(3))
    b = train(model, x, y, TINY, jax.random.key(3))
    c = train(model, x, y, TINY, jax.random.key(4))
    for la, lb in zip(_leaves(a.state), _leaves(b.state)):
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(la, lc) for la, lc in zip(_leaves(a.state), _leaves(c.state)))


def test_a_training_resumed_at_an_epoch_equals_the_uninterrupted_one(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    cfg = TINY.replace(epochs=3)
    model = _model(Arch(1, 1), digits)
    full = train(model, x, y, cfg, jax.random.key(5))
    saved = {}

    class Keep:
        resume = None

        def save(self, epoch, state, history):
            saved.setdefault(epoch, (jax.device_get(state), list(history)))

    train(model, x, y, cfg.replace(epochs=3), jax.random.key(5), checkpoint=Keep())
    state1, hist1 = saved[1]
    resume = Keep()
    resume.resume = (1, state1, hist1)
    resumed = train(model, x, y, cfg, jax.random.key(5), checkpoint=resume)
    for la, lb in zip(_leaves(full.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(la, lb)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_validation_mode_scores_every_epoch_on_the_validation_set_and_returns_the_best(digits):
    """Each epoch's val_accuracy is that epoch's network scored on `val` (computed here from the states
    it saved), and best_val_accuracy the best of them: with validation labels equal to the first
    epoch's predictions, the first epoch scores 1.0 and the last less (training never reads `val`)."""
    x, y, x_val = digits.x_train[:300], digits.y_train[:300], digits.x_test[:100]
    model, cfg = _model(Arch(1, 1), digits), TINY.replace(epochs=3)

    class Keep:
        resume = None

        def __init__(self):
            self.states = {}

        def save(self, epoch, state, history):
            self.states[epoch] = jax.tree.map(np.array, jax.device_get(state))

    forward = jax.jit(lambda variables, images: model.apply(variables, images)[0])

    def predictions(state):
        return np.argmax(np.asarray(forward({"params": state.params, "batch_stats": state.batch_stats}, x_val)), -1)

    first = Keep()
    train(model, x, y, cfg, jax.random.key(0), val=(x_val, digits.y_test[:100]), checkpoint=first)
    y_val = predictions(first.states[1]).astype(np.int32)
    kept = Keep()
    result = train(model, x, y, cfg, jax.random.key(0), val=(x_val, y_val), checkpoint=kept)
    by_hand = [float(np.mean(predictions(kept.states[e]) == y_val)) for e in (1, 2, 3)]
    assert by_hand[0] == 1.0 and by_hand[-1] < 1.0  # the last epoch is not the best
    assert [h["val_accuracy"] for h in result.history] == pytest.approx(by_hand, abs=1e-12)
    assert result.best_val_accuracy == 1.0
    assert train(model, x, y, cfg, jax.random.key(0)).best_val_accuracy is None  # no val, no score


def test_epoch_batches_oversample_evenly():
    cfg = TrainConfig(epoch_size=1000, batch_size=10)
    idx = epoch_batches(jax.random.key(0), 30, cfg)
    assert idx.shape == (100, 10)
    counts = np.bincount(idx.ravel(), minlength=30)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1000


@pytest.mark.parametrize("n", [1, 7, 30, 128, 1000])
def test_epoch_batches_are_the_op_by_op_permutations_in_one_compiled_call(n):
    """The jitted permutations equal jax.random.permutation of each split key run op by op (runs keep
    their batches), and a second epoch of the same size compiles nothing."""
    from inas_jax.runtime.compilation import snapshot
    cfg = TrainConfig(epoch_size=1280, batch_size=128)
    key = jax.random.key(n)
    keys = jax.random.split(key, -(-1280 // n))
    # jax.random.permutation of one key at a time, each call one compiled program: integer bits and a
    # sort, the values of its op-by-op run, without dispatching each of its operations per key (1,280 keys)
    permutation = jax.jit(jax.random.permutation, static_argnums=1)
    want = np.concatenate([np.asarray(permutation(k, n)) for k in keys])[:1280].reshape(10, 128)
    np.testing.assert_array_equal(epoch_batches(key, n, cfg), want)
    before = snapshot()
    epoch_batches(jax.random.key(n + 1), n, cfg)
    assert snapshot().since(before).compiled == 0


def test_a_warm_up_leaves_nothing_for_the_training_to_compile(digits):
    """warm_up compiles a network's init, step and inference for train's shapes (width 5: shapes no
    other test compiles); the training then compiles nothing."""
    from inas_jax.runtime.compilation import snapshot
    from inas_jax.loop.train import warm_up
    x, y, val = digits.x_train[:100], digits.y_train[:100], (digits.x_test[:20], digits.y_test[:20])
    train(_model(Arch(1, 1), digits, width=5), x, y, TINY, jax.random.key(0), val=val, capacity=120)  # shared parts
    before = snapshot()
    warm_up(_model(Arch(2, 1), digits, width=5), TINY, digits.image_shape, rows=120, validate=True)
    assert snapshot().since(before).compiled > 0
    before = snapshot()
    train(_model(Arch(2, 1), digits, width=5), x, y, TINY, jax.random.key(1), val=val, capacity=120)
    assert snapshot().since(before).compiled == 0


def test_lr_schedule_decays_at_half_and_three_quarters():
    from inas_jax.loop.train import make_optimizer
    cfg = TrainConfig(epochs=4, epoch_size=40, batch_size=10, weight_decay=0.0, momentum=0.0, nesterov=False)
    tx = make_optimizer(cfg)
    params = {"w": jnp.ones(())}
    state = tx.init(params)
    steps = []
    for _ in range(16):
        update, state = tx.update({"w": jnp.ones(())}, state, params)
        steps.append(-float(update["w"]))
    np.testing.assert_allclose(steps, [0.1] * 8 + [0.01] * 4 + [0.001] * 4, rtol=1e-6)


def test_weight_decay_only_on_conv_kernels():
    from inas_jax.loop.train import _conv_kernel_mask, init_state
    model = build_model(Arch(1, 2), 10, ModelConfig(width=4), (np.zeros(1), np.ones(1)))
    state = init_state(model, TINY, jax.random.key(0), (8, 8, 1))
    mask = _conv_kernel_mask(state.params)
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["stem_conv/kernel"] and flat["stack2_block1/proj_conv/kernel"]
    assert not flat["stem_conv/bias"] and not flat["head/kernel"] and not flat["stem_bn/scale"]


@pytest.mark.parametrize("cfg", [TINY, TrainConfig(momentum=0.0, nesterov=False, weight_decay=0.0)])
def test_initial_optimizer_state_is_optaxs_built_on_the_host(cfg):
    """init_state's optimizer state equals optax's own init (structure, dtypes, values) and compiles
    nothing (optax's eager zeros compiled one executable per parameter shape)."""
    from inas_jax.runtime.compilation import snapshot
    from inas_jax.loop.train import initial_opt_state, make_optimizer
    model = build_model(Arch(1, 2), 10, ModelConfig(width=4), (np.zeros(1), np.ones(1)))
    params = model.init(jax.random.key(0), (8, 8, 1))["params"]
    tx = make_optimizer(cfg)
    expected = tx.init(params)
    before = snapshot()
    got = initial_opt_state(tx, params)
    assert snapshot().since(before).compiled == 0
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, np.asarray(b))


def test_weight_decay_adds_twice_its_coefficient_times_the_conv_kernels_to_their_gradient():
    """Keras's convention: wd * sum(w**2) over conv kernels is added to the loss, so the update of plain
    SGD (lr 1 at the first of 4 steps, no momentum) with zero loss gradients is -2 * wd * w on conv kernels
    and 0 elsewhere."""
    from inas_jax.loop.train import make_optimizer
    wd = 0.25
    cfg = TrainConfig(epochs=4, epoch_size=10, batch_size=10, lr=1.0, momentum=0.0, nesterov=False, weight_decay=wd)
    rng = np.random.default_rng(0)
    params = {"stem_conv": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.float32),
                            "bias": jnp.asarray(rng.standard_normal(4), jnp.float32)},
              "head": {"kernel": jnp.asarray(rng.standard_normal((4, 10)), jnp.float32)}}
    tx = make_optimizer(cfg)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    keras_grad = jax.grad(lambda w: wd * jnp.sum(w ** 2))(params["stem_conv"]["kernel"])  # = 2 * wd * w
    np.testing.assert_allclose(updates["stem_conv"]["kernel"], -keras_grad, rtol=1e-6)
    np.testing.assert_allclose(updates["stem_conv"]["kernel"], -2 * wd * params["stem_conv"]["kernel"], rtol=1e-6)
    assert not np.any(updates["stem_conv"]["bias"]) and not np.any(updates["head"]["kernel"])


def test_divergence_is_detected(digits):
    with pytest.raises(TrainingDiverged, match="loss is"):
        train(_model(Arch(1, 1), digits), digits.x_train[:64], digits.y_train[:64], TINY.replace(lr=1e30),
              jax.random.key(0))


def test_a_parameter_that_is_not_finite_after_training_is_divergence(digits, monkeypatch):
    """Finite losses but a NaN weight at the end (here planted in the last epoch's state) is caught too."""
    from inas_jax.loop import train as train_mod
    real = train_mod.train_epoch

    def poisoned(*args, **kwargs):
        state, losses, accs = real(*args, **kwargs)
        params = jax.tree.map(lambda p: p, state.params)
        params["head"]["bias"] = params["head"]["bias"].at[0].set(jnp.nan)
        return state.replace(params=params), losses, accs

    monkeypatch.setattr(train_mod, "train_epoch", poisoned)
    with pytest.raises(TrainingDiverged, match="a parameter is not finite"):
        train(_model(Arch(1, 1), digits), digits.x_train[:64], digits.y_train[:64], TINY.replace(epochs=1),
              jax.random.key(0))


@pytest.mark.skipif(not CIFAR10_NPZ.exists(), reason=f"real CIFAR-10 not present at {CIFAR10_NPZ}")
def test_real_cifar10_learns_above_chance():
    ds = load_npz(str(CIFAR10_NPZ))
    order = np.random.default_rng(0).permutation(len(ds.y_train))[:3000]
    cfg = TrainConfig(epochs=2, epoch_size=3072, batch_size=128)
    result = train(_model(Arch(1, 1), ds, width=8), ds.x_train[order], ds.y_train[order], cfg, jax.random.key(0))
    metrics = evaluate(result.model, result.state, ds.x_test[:1000], ds.y_test[:1000])
    assert metrics["accuracy"] > 0.25, metrics
