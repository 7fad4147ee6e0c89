"""Speed (and, on JAX, memory) of every position scheme on the current backend.

Each part returns rows of plain numbers; `benchmarks/__main__.py` runs this
module once per backend, each in its own process:

    KERAS_BACKEND=jax python -m benchmarks.speed --parts attention --quick
    KERAS_BACKEND=jax python -m benchmarks.speed --parts attention \
        --schemes t5 --lengths 512          # T5 vs plain attention alone

Every ratio divides two medians measured in this process, after warm-up,
under the backend's jit (see `benchmarks/timing.py`).
"""

import argparse
import json
import math
import sys

import keras
import numpy as np
from keras import ops

import keras_posenc
from benchmarks import timing
from keras_posenc.layers import PositionalMultiHeadAttention

ATTENTION_SCHEMES = (
    "rotary",
    "xpos",
    "mrope",
    "alibi",
    "t5",
    "shaw",
    "kerple",
    "fire",
    "cope",
    "forgetting",
)
# keras-hub's own layers for the schemes it has, timed in the same process:
# its `RotaryEmbedding` before fused attention, and its `AlibiBias` on the
# einsum attention scores (the way keras-hub's Falcon and Bloom attend).
KERAS_HUB_SCHEMES = ("keras_hub_rotary", "keras_hub_alibi")
# Schemes timed only up to a length, and why. CoPE's gradient keeps many
# `(batch, heads, L, L)` buffers (its cumulative gate sums and the gathers
# that interpolate them): at batch 8, 8 heads and L=2048 XLA asks for
# 25.3 GiB (TensorFlow) and 26.3 GiB (JAX), and eager PyTorch runs out too, on
# a 23.5 GiB machine.
LENGTH_CAPS = {
    "cope": (1024, "its gradient needs over 25 GiB at L=2048 (batch 8, 8 heads)"),
}


def settings(quick):
    """Sizes of every part: the issue's sizes, or small ones for `--quick`."""
    if quick:
        return {
            "absolute": {"batch": 4, "lengths": [128], "width": 128},
            "attention": {"batch": 2, "heads": 4, "head_dim": 32, "lengths": [128]},
            "shaw_memory": {"lengths": [128, 256]},
            "encoder_block": {"batch": 4, "length": 64, "hidden": 64, "heads": 4},
            "generation": {"batch": 2, "prompt": 8, "new_tokens": 16, "hidden": 64},
            "warmup": 1,
            "repeats": 2,
        }
    return {
        "absolute": {"batch": 32, "lengths": [128, 512, 2048], "width": 512},
        "attention": {
            "batch": 8,
            "heads": 8,
            "head_dim": 64,
            "lengths": [128, 512, 1024, 2048],
        },
        "shaw_memory": {"lengths": [256, 512, 1024, 2048]},
        "encoder_block": {"batch": 32, "length": 256, "hidden": 256, "heads": 8},
        "generation": {"batch": 4, "prompt": 16, "new_tokens": 256, "hidden": 128},
        "warmup": 2,
        "repeats": 7,
    }


def stateless(layer, function):
    """`function(*arrays)` with `layer`'s variables as trailing arguments.

    Lets the compiled function (and its gradient) take the tables as inputs
    instead of baking them in as constants.
    """
    variables = list(layer.variables)

    def run(*args):
        split = len(args) - len(variables)
        arrays, values = args[:split], args[split:]
        mapping = list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            return function(*arrays)

    values = [ops.convert_to_tensor(variable.value) for variable in variables]
    return run, values


def random_normal(shape, seed):
    return ops.convert_to_tensor(
        np.random.default_rng(seed).standard_normal(shape).astype("float32")
    )


def absolute(config, warmup, repeats):
    """Absolute encodings vs a bare `x + table[:L]` / concat of a constant."""
    layers = keras_posenc.layers
    rows = []
    batch, width = config["batch"], config["width"]
    for length in config["lengths"]:
        x = random_normal((batch, length, width), seed=0)
        table = random_normal((length, width), seed=1)
        candidates = {
            "bare add": (timing.jit(lambda x, t: x + t[None]), (x, table)),
            "bare concat": (
                timing.jit(
                    lambda x, t: ops.concatenate(
                        [x, ops.broadcast_to(t[None], (batch, length, width))], -1
                    )
                ),
                (x, table),
            ),
        }
        for kind in ("sinusoidal", "learned"):
            for merge in ("add", "concat"):
                if kind == "sinusoidal":
                    layer = layers.SinusoidalPositionEncoding(merge=merge)
                else:
                    layer = layers.LearnedPositionEmbedding(
                        max_length=length, merge=merge
                    )
                layer.build((batch, length, width))
                function, values = stateless(layer, layer)
                candidates[f"{kind} {merge}"] = (timing.jit(function), (x, *values))
        candidates["keras-hub sine add"] = (keras_hub_sine(), (x,))
        times = timing.median_times(candidates, warmup, repeats, inner=5)
        for name, seconds in times.items():
            if name.startswith("bare"):
                continue
            base = "bare " + name.split()[-1]
            rows.append(
                {
                    "encoding": name,
                    "length": length,
                    "ms": 1e3 * seconds,
                    "baseline_ms": 1e3 * times[base],
                    "ratio": seconds / times[base],
                }
            )
    return rows


def keras_hub_sine():
    """`x + keras_hub.layers.SinePositionEncoding()(x)`, jitted."""
    import keras_hub

    sine = keras_hub.layers.SinePositionEncoding()
    return timing.jit(lambda x: x + sine(x))


def attention_core(scheme, num_heads, head_dim, length):
    """`(function, variable_values)`: attention of projected `q, k, v`.

    Runs the same public steps as `PositionalMultiHeadAttention.call` after
    its projections (the scheme's `rotate`, then `attend`: bias, Shaw terms,
    fused or explicit attention), so that the ratio to plain attention is the
    scheme's own cost.
    """
    scale = 1.0 / math.sqrt(head_dim)
    if scheme is None:
        return (lambda q, k, v: ops.dot_product_attention(q, k, v, scale=scale)), []
    if scheme in KERAS_HUB_SCHEMES:
        return keras_hub_attention_core(scheme, scale), []
    layer = PositionalMultiHeadAttention(num_heads, head_dim, position=scheme)
    layer.build((1, length, num_heads * head_dim))

    def core(q, k, v):
        positions = ops.arange(length, dtype="int32")
        scheme = layer.position_layer
        bias = None
        if scheme.has_token_state:
            # The forgetting bias reads the layer's inputs: here the queries,
            # which have the inputs' width.
            inputs = ops.reshape(q, (ops.shape(q)[0], length, num_heads * head_dim))
            state = scheme.compute_token_state(inputs)
            bias = scheme.compute_state_bias(state, positions)
        q = scheme.rotate(q, positions, is_key=False)
        k = scheme.rotate(k, positions, is_key=True)
        output, _ = layer.attend(q, k, v, positions, positions, bias=bias)
        return output

    return stateless(layer.position_layer, core)


def keras_hub_attention_core(scheme, scale):
    """Attention of projected `q, k, v` with keras-hub's rotary or ALiBi layer."""
    import keras_hub

    if scheme == "keras_hub_rotary":
        rotary = keras_hub.layers.RotaryEmbedding(sequence_axis=1, feature_axis=-1)

        def core(q, k, v):
            q, k = rotary(q), rotary(k)
            return ops.dot_product_attention(q, k, v, scale=scale)

        return core
    alibi = keras_hub.layers.AlibiBias()

    def core(q, k, v):
        scores = alibi(ops.einsum("btnh,bsnh->bnts", q, k) * scale)
        weights = ops.softmax(scores, axis=-1)
        return ops.einsum("bnts,bsnh->btnh", weights, v)

    return core


def attention(config, warmup, repeats):
    """Forward+backward time (and, on JAX, XLA temporary memory) per scheme."""
    rows = []
    batch, heads, head_dim = config["batch"], config["heads"], config["head_dim"]
    schemes = tuple(config.get("schemes", ATTENTION_SCHEMES + KERAS_HUB_SCHEMES))
    for length in config["lengths"]:
        shape = (batch, length, heads, head_dim)
        qkv = tuple(random_normal(shape, seed) for seed in (0, 1, 2))
        candidates, functions = {}, {}
        for scheme in (None,) + schemes:
            if scheme in LENGTH_CAPS and length > LENGTH_CAPS[scheme][0]:
                continue
            function, values = attention_core(scheme, heads, head_dim, length)
            name = scheme or "plain"
            functions[name] = (function, (*qkv, *values))
            candidates[name] = (timing.jit_gradient(function), (*qkv, *values))
        # Fewer repeats where one step takes seconds.
        runs = repeats if length <= 512 else max(2, repeats // 2)
        times = timing.median_times(
            candidates, warmup=1 if length > 512 else warmup, repeats=runs
        )
        memory = {}
        if keras.config.backend() == "jax":
            memory = {
                name: timing.xla_gradient_temp_bytes(function, *args)
                for name, (function, args) in functions.items()
            }
        for name, seconds in times.items():
            if name == "plain":
                continue
            row = {
                "scheme": name,
                "length": length,
                "ms": 1e3 * seconds,
                "plain_ms": 1e3 * times["plain"],
                "ratio": seconds / times["plain"],
            }
            if memory:
                row["temp_mib"] = memory[name] / 2**20
                row["plain_temp_mib"] = memory["plain"] / 2**20
                row["memory_ratio"] = memory[name] / memory["plain"]
            rows.append(row)
    return rows


def shaw_memory(config, warmup, repeats):
    """Shaw attention, ours vs the paper's `(L, L, d)` tensors: XLA temp memory."""
    if keras.config.backend() != "jax":
        return []
    from benchmarks import shaw_memory as shaw

    layer = keras_posenc.layers.RelativePositionEmbedding(
        max_distance=shaw.MAX_DISTANCE
    )
    layer.build((shaw.BATCH, None, shaw.HEADS, shaw.HEAD_DIM))
    tables = [
        ops.convert_to_tensor(layer.key_embeddings),
        ops.convert_to_tensor(layer.value_embeddings),
    ]
    rows = []
    for length in config["lengths"]:
        shape = (shaw.BATCH, length, shaw.HEADS, shaw.HEAD_DIM)
        args = tuple(random_normal(shape, seed) for seed in (0, 1, 2)) + tuple(tables)
        measured = {
            name: timing.xla_gradient_temp_bytes(lambda *a, f=f: f(layer, *a), *args)
            / 2**20
            for name, f in (
                ("plain", shaw.plain),
                ("ours", shaw.shaw),
                ("naive", shaw.naive),
            )
        }
        rows.append(
            {
                "length": length,
                "plain_mib": measured["plain"],
                "ours_mib": measured["ours"],
                "naive_mib": measured["naive"],
                "ours_ratio": measured["ours"] / measured["plain"],
                "naive_ratio": measured["naive"] / measured["plain"],
            }
        )
    return rows


def encoder_model(kind, config, dropout):
    """Float inputs -> sinusoidal encoding -> one encoder block -> a class."""
    import keras_hub

    hidden, heads = config["hidden"], config["heads"]
    inputs = keras.Input(shape=(config["length"], hidden))
    if kind == "ours":
        x = keras_posenc.layers.SinusoidalPositionEncoding(merge="add")(inputs)
        x = keras_posenc.layers.TransformerEncoder(
            intermediate_dim=4 * hidden, num_heads=heads, dropout=dropout
        )(x)
    else:
        x = inputs + keras_hub.layers.SinePositionEncoding()(inputs)
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=4 * hidden, num_heads=heads, dropout=dropout
        )(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def encoder_block(config, warmup, repeats):
    """One training step (`train_on_batch`, Keras' default jit) vs keras-hub's."""
    x = (
        np.random.default_rng(0)
        .standard_normal((config["batch"], config["length"], config["hidden"]))
        .astype("float32")
    )
    y = (np.arange(config["batch"]) % 2).astype("int32")
    rows = []
    for dropout in (0.0, 0.1):
        keras.utils.set_random_seed(0)
        candidates = {
            kind: (encoder_model(kind, config, dropout).train_on_batch, (x, y))
            for kind in ("ours", "keras_hub")
        }
        times = timing.median_times(candidates, warmup + 1, repeats)
        rows.append(
            {
                "dropout": dropout,
                "ours_ms": 1e3 * times["ours"],
                "keras_hub_ms": 1e3 * times["keras_hub"],
                "ratio": times["ours"] / times["keras_hub"],
            }
        )
    return rows


def generation_model(config):
    """`(model, token_ids)`: the `TransformerLM` and prompts generation is timed on."""
    batch, prompt, new_tokens = config["batch"], config["prompt"], config["new_tokens"]
    length = prompt + new_tokens
    keras.utils.set_random_seed(0)
    model = keras_posenc.models.TransformerLM(
        vocabulary_size=512,
        max_length=length,
        hidden_dim=config["hidden"],
        num_layers=2,
        num_heads=4,
        intermediate_dim=2 * config["hidden"],
        dropout=0.0,
        position="rotary",
    )
    token_ids = np.zeros((batch, length), "int32")
    token_ids[:, :prompt] = np.random.default_rng(0).integers(1, 512, (batch, prompt))
    return model, ops.convert_to_tensor(token_ids)


def generation(config, warmup, repeats):
    """Tokens per second of `TransformerLM.generate_step` with and without cache."""
    batch, new_tokens = config["batch"], config["new_tokens"]
    model, token_ids = generation_model(config)
    candidates = {
        name: (
            timing.jit(
                lambda ids, use_cache=use_cache: model.generate_step(
                    ids, sampler="greedy", use_cache=use_cache
                )
            ),
            (token_ids,),
        )
        for name, use_cache in (("cached", True), ("uncached", False))
    }
    outputs = {
        name: ops.convert_to_numpy(function(*args))
        for name, (function, args) in candidates.items()
    }
    times = timing.median_times(candidates, warmup, max(2, repeats // 2))
    tokens = batch * new_tokens
    return [
        {
            "new_tokens": new_tokens,
            "batch": batch,
            "cached_tokens_per_s": tokens / times["cached"],
            "uncached_tokens_per_s": tokens / times["uncached"],
            "speedup": times["uncached"] / times["cached"],
            "same_tokens": bool(np.array_equal(outputs["cached"], outputs["uncached"])),
        }
    ]


PARTS = {
    "absolute": absolute,
    "attention": attention,
    "shaw_memory": shaw_memory,
    "encoder_block": encoder_block,
    "generation": generation,
}


def run(parts, quick, schemes=None, lengths=None):
    """Runs `parts`; `schemes` and `lengths` narrow the attention part."""
    sizes = settings(quick)
    if schemes:
        sizes["attention"]["schemes"] = list(schemes)
    if lengths:
        sizes["attention"]["lengths"] = list(lengths)
    sizes["attention"]["length_caps"] = {
        scheme: {"max_length": cap, "why": why}
        for scheme, (cap, why) in LENGTH_CAPS.items()
    }
    results = {}
    for part in parts:
        results[part] = {
            "settings": sizes[part],
            "rows": PARTS[part](sizes[part], sizes["warmup"], sizes["repeats"]),
        }
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument(
        "--schemes",
        nargs="+",
        choices=ATTENTION_SCHEMES + KERAS_HUB_SCHEMES,
        help="attention part: only these schemes (and plain attention)",
    )
    parser.add_argument(
        "--lengths", nargs="+", type=int, help="attention part: only these lengths"
    )
    parser.add_argument("--output", help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        # Every candidate is its own tf.function: retracing warnings are expected.
        tf.get_logger().setLevel("ERROR")
    results = {
        "backend": keras.config.backend(),
        "versions": backend_versions(),
        "parts": run(args.parts, args.quick, args.schemes, args.lengths),
    }
    text = json.dumps(results, indent=1)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text)
    else:
        sys.stdout.write(text + "\n")


def backend_versions():
    versions = {"keras": keras.__version__, "keras_posenc": keras_posenc.__version__}
    backend = keras.config.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    versions[backend] = __import__(module).__version__
    return versions


if __name__ == "__main__":
    main()
