"""Where the time goes in the runs that miss their speed targets.

    KERAS_BACKEND=torch python -m benchmarks.profiles           # full sizes
    KERAS_BACKEND=tensorflow python -m benchmarks.profiles --quick

Writes `results/<machine>-<date>-<backend>-profiles.md` (`results/quick/`
with `--quick`). On every backend: the cost of the learned biases (T5,
Kerple, FIRE) with and without the gradient of their tables, at L=1024. On
PyTorch also: the aten kernels that take the time of rotary, xPos, ALiBi, T5,
forgetting and Shaw attention (forward+backward, the sizes of
`benchmarks.speed`), next to plain attention and attention with a fixed
random bias; the cost of ALiBi and the forgetting bias with subnormal floats
flushed to zero or not; and, for cached generation, the share of wall time
spent inside aten kernels and the number of Keras layer calls per generated
token. `torch.profiler` adds a few microseconds per kernel, so the shares of
many small kernels are upper bounds.
"""

import argparse
import cProfile
import os
import pstats
import time

import keras
import numpy as np
from keras import ops

from benchmarks import report
from benchmarks import speed
from benchmarks import timing

# Self-time of these kernels is matrix multiplication (einsum calls them).
MATMUL_KERNELS = ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm")
TOP_KERNELS = 8


def kernel_profile(function, args, repeats):
    """`(wall_seconds, {kernel: (calls, self_seconds)})` per call of `function`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    for _ in range(2):
        function(*args)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(repeats):
            function(*args)
        wall = (time.perf_counter() - start) / repeats
    kernels = {
        event.key: (event.count / repeats, event.self_cpu_time_total / 1e6 / repeats)
        for event in profiler.key_averages()
    }
    return wall, kernels


def kernel_table(title, wall, kernels):
    inside = sum(seconds for _, seconds in kernels.values())
    matmul = sum(kernels[name][1] for name in MATMUL_KERNELS if name in kernels)
    lines = [
        f"### {title}",
        "",
        f"{1e3 * wall:.1f} ms per call under the profiler; aten kernels "
        f"{100 * inside / wall:.0f}% of it, matrix multiplications "
        f"{100 * matmul / inside:.0f}% of the kernel time.",
        "",
        "| kernel | calls | ms | share of kernel time |",
        "|---|---:|---:|---:|",
    ]
    ranked = sorted(kernels.items(), key=lambda item: -item[1][1])
    for name, (calls, seconds) in ranked[:TOP_KERNELS]:
        lines.append(
            f"| `{name}` | {calls:g} | {1e3 * seconds:.1f} | "
            f"{100 * seconds / inside:.0f}% |"
        )
    return lines + [""]


def fixed_bias_core(num_heads, length, scale):
    """Plain attention with a `(1, heads, L, L)` bias that needs no gradient."""
    bias = ops.convert_to_tensor(
        np.random.default_rng(3).standard_normal((1, num_heads, length, length)),
        "float32",
    )

    def core(q, k, v):
        return ops.dot_product_attention(q, k, v, bias=bias, scale=scale)

    return core


def projected_qkv(config, length):
    shape = (config["batch"], length, config["heads"], config["head_dim"])
    return tuple(speed.random_normal(shape, seed) for seed in (0, 1, 2))


def core(scheme, config, length):
    """`speed.attention_core`, or `"fixed_bias"` for `fixed_bias_core`."""
    heads, head_dim = config["heads"], config["head_dim"]
    if scheme == "fixed_bias":
        return fixed_bias_core(heads, length, 1.0 / np.sqrt(head_dim)), []
    return speed.attention_core(scheme, heads, head_dim, length)


def attention_profiles(config, repeats):
    batch, heads, head_dim = config["batch"], config["heads"], config["head_dim"]
    length = config["length"]
    qkv = projected_qkv(config, length)
    candidates = [
        ("plain `ops.dot_product_attention`", None),
        ("plain with a fixed bias (no gradient)", "fixed_bias"),
        ("rotary", "rotary"),
        ("xPos", "xpos"),
        ("ALiBi", "alibi"),
        ("T5 bias", "t5"),
        ("forgetting bias", "forgetting"),
        ("Shaw", "shaw"),
    ]
    lines = [
        f"## Attention, forward+backward (batch {batch}, {heads} heads of "
        f"{head_dim}, L={length})",
        "",
    ]
    for title, scheme in candidates:
        function, values = core(scheme, config, length)
        gradient = timing.jit_gradient(function)
        wall, kernels = kernel_profile(gradient, (*qkv, *values), repeats)
        lines += kernel_table(title, wall, kernels)
    return lines


def subnormal_check(config, repeats):
    """ALiBi, forgetting and a fixed bias vs plain, subnormals flushed or not.

    ALiBi's and the forgetting bias's logits reach far below the row maximum,
    so that many attention probabilities are subnormal floats, which x86
    cores compute on slowly. `torch.set_flush_denormal` sets only
    the calling thread, hence one thread here.
    """
    import torch

    length = config["length"]
    qkv = projected_qkv(config, length)
    candidates = {}
    for name, scheme in (
        ("plain", None),
        ("alibi", "alibi"),
        ("forgetting", "forgetting"),
        ("fixed bias", "fixed_bias"),
    ):
        function, values = core(scheme, config, length)
        candidates[name] = (timing.jit_gradient(function), (*qkv, *values))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lines = [
        "## Subnormal floats (one thread, forward+backward, same sizes)",
        "",
        "| flush subnormals to zero | ALiBi / plain | forgetting / plain "
        "| fixed random bias / plain | plain ms |",
        "|---|---:|---:|---:|---:|",
    ]
    try:
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            times = timing.median_times(candidates, warmup=1, repeats=repeats)
            lines.append(
                f"| {'yes' if flush else 'no (default)'} | "
                f"{times['alibi'] / times['plain']:.2f}× | "
                f"{times['forgetting'] / times['plain']:.2f}× | "
                f"{times['fixed bias'] / times['plain']:.2f}× | "
                f"{1e3 * times['plain']:.1f} |"
            )
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    return lines + [""]


def generation_profile(config):
    """Kernel share and Keras layer calls per token of cached generation."""
    batch, new_tokens = config["batch"], config["new_tokens"]
    model, token_ids = speed.generation_model(config)
    generate = timing.jit(
        lambda ids: model.generate_step(ids, sampler="greedy", use_cache=True)
    )
    wall, kernels = kernel_profile(generate, (token_ids,), repeats=1)

    calls = cProfile.Profile()
    calls.enable()
    generate(token_ids)
    calls.disable()
    stats = pstats.Stats(calls).stats
    # The total count, nested calls included (pstats' first count leaves out
    # a `__call__` made inside another one).
    layer_calls = sum(
        total
        for (filename, _, name), (_, total, *_) in stats.items()
        if name == "__call__" and filename.endswith(os.path.join("layers", "layer.py"))
    )
    lines = [
        f"## Cached generation (`TransformerLM`, 2 layers, width {config['hidden']}, "
        f"batch {batch}, {new_tokens} new tokens)",
        "",
        f"{layer_calls / new_tokens:.0f} Keras `Layer.__call__` per generated token "
        f"(cProfile). {1e3 * wall / new_tokens:.2f} ms per token under the profiler.",
        "",
    ]
    return lines + kernel_table("Kernels of the whole generation", wall, kernels)


def bias_breakdown(config, repeats):
    """Learned biases with and without their gradient, against plain attention.

    The "no table gradient" column passes the scheme's tables as constants,
    not as arguments to differentiate: the gap between the two columns is
    the price of the bias gradient, and the gap to a fixed random bias is the
    price of computing the bias (bucket lookup, MLP) at all. Runs on every backend.
    """
    batch, heads, head_dim = config["batch"], config["heads"], config["head_dim"]
    length = config["breakdown_length"]
    qkv = projected_qkv(config, length)
    candidates = {
        name: (timing.jit_gradient(core(scheme, config, length)[0]), qkv)
        for name, scheme in (("plain", None), ("fixed bias", "fixed_bias"))
    }
    schemes = ("t5", "kerple", "fire")
    for scheme in schemes:
        function, values = core(scheme, config, length)

        def constant_tables(q, k, v, function=function, values=values):
            return function(q, k, v, *values)

        candidates[scheme] = (timing.jit_gradient(function), (*qkv, *values))
        candidates[scheme + " constant"] = (timing.jit_gradient(constant_tables), qkv)
    times = timing.median_times(candidates, warmup=1, repeats=repeats)
    plain = times["plain"]
    lines = [
        f"## Learned biases: what their cost is made of ({keras.config.backend()}, "
        f"forward+backward, batch {batch}, {heads} heads of {head_dim}, L={length})",
        "",
        f"Ratio to plain attention ({1e3 * plain:.1f} ms); a fixed random bias "
        f"(no gradient): {times['fixed bias'] / plain:.2f}×.",
        "",
        "| scheme | with the table's gradient | no table gradient |",
        "|---|---:|---:|",
    ]
    for scheme in schemes:
        lines.append(
            f"| {scheme} | {times[scheme] / plain:.2f}× | "
            f"{times[scheme + ' constant'] / plain:.2f}× |"
        )
    return lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--output-dir", help="where to write the markdown")
    args = parser.parse_args(argv)
    backend = keras.config.backend()
    sizes = speed.settings(args.quick)
    attention = dict(
        sizes["attention"],
        length=128 if args.quick else 512,
        breakdown_length=128 if args.quick else 1024,
    )
    repeats = 2 if args.quick else 3
    root = os.path.dirname(os.path.abspath(__file__))
    output_dir = args.output_dir or os.path.join(
        root, "results", "quick" if args.quick else ""
    )
    os.makedirs(output_dir, exist_ok=True)
    description = report.machine()
    versions = ", ".join(f"{k} {v}" for k, v in speed.backend_versions().items())
    lines = [
        f"# Profiles on {backend}, {report.today()}"
        f"{' (quick mode)' if args.quick else ''}",
        "",
        f"Machine: {description['cpu']}, {description['cores']} cores; {versions}.",
        "",
    ]
    if backend == "torch":
        lines += [
            "Self time of each aten kernel per call (`torch.profiler`, CPU).",
            "",
        ]
        lines += attention_profiles(attention, repeats)
        lines += subnormal_check(attention, repeats)
        lines += generation_profile(sizes["generation"])
    lines += bias_breakdown(attention, repeats)
    path = os.path.join(
        output_dir,
        f"{report.machine_slug(description)}-{report.today()}-{backend}-profiles.md",
    )
    with open(path, "w") as file:
        file.write("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
