"""Compiling and timing under each backend's jit, the only backend-specific code.

Every benchmark times functions of arrays: `jit()` compiles one the way the
backend does by default in Keras (`jax.jit`, `tf.function(jit_compile=True)`,
eager PyTorch), `jit_gradient()` compiles the gradient of its sum with respect
to every argument, and `median_times()` runs candidates in turn (interleaved,
so that a slow spell of the machine hits all of them) after warm-up.
"""

import random
import statistics
import time

import keras


def jit(function):
    """`function(*arrays)` compiled by the backend; PyTorch runs it eagerly."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True)
    import torch

    def run(*args):
        with torch.no_grad():
            return function(*args)

    return run


def jit_gradient(function):
    """Compiled gradients of `sum(function(*arrays))` for every argument."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        def loss(*args):
            return jax.numpy.sum(function(*args))

        return jax.jit(lambda *args: jax.grad(loss, argnums=range(len(args)))(*args))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradient(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                loss = tf.reduce_sum(function(*args))
            return tape.gradient(loss, args)

        return gradient
    import torch

    def gradient(*args):
        args = [arg.detach().requires_grad_(True) for arg in args]
        return torch.autograd.grad(function(*args).sum(), args)

    return gradient


def wait(outputs):
    """Blocks until `outputs` are computed (JAX dispatches asynchronously)."""
    if keras.config.backend() == "jax":
        import jax

        jax.block_until_ready(outputs)
    return outputs


def median_times(candidates, warmup=2, repeats=7, inner=1):
    """Median seconds per call of each `name: (function, args)`.

    Each candidate is called `warmup` times (compiling it), then the
    candidates run one after another, in a new shuffled order each time,
    `repeats` times, each `inner` calls in a row (their mean is one sample:
    for calls of a few milliseconds, where one page fault or cache refill
    would otherwise decide the sample).
    """
    for function, args in candidates.values():
        for _ in range(warmup):
            wait(function(*args))
    times = {name: [] for name in candidates}
    # A new order every round: a candidate's cost must not depend on which
    # one ran before it (freed buffers, caches).
    order = random.Random(0)
    for _ in range(repeats):
        names = list(candidates)
        order.shuffle(names)
        for name in names:
            function, args = candidates[name]
            start = time.perf_counter()
            for _ in range(inner):
                wait(function(*args))
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in times.items()}


def xla_temp_bytes(function, *args):
    """XLA's count of temporary bytes for `function` (JAX only, no run)."""
    import jax

    compiled = jax.jit(function).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def xla_gradient_temp_bytes(function, *args):
    """`xla_temp_bytes` of the gradient of `sum(function(*args))`."""
    import jax

    def loss(*arrays):
        return jax.numpy.sum(function(*arrays))

    return xla_temp_bytes(jax.grad(loss, argnums=tuple(range(len(args)))), *args)
