"""The machine description, and the markdown tables and plot of a benchmark run."""

import datetime
import os
import platform
import re

# The targets: (part, key) -> the largest acceptable ratio.
TARGETS = {
    "absolute": 1.1,
    "rotary": 1.15,
    "xpos": 1.15,
    "alibi": 1.25,
    "t5": 1.25,
    "shaw": 1.6,
    "mrope": 1.15,
    "kerple": 1.25,
    "fire": 1.25,
    "cope": 1.25,
    "forgetting": 1.25,
    "encoder_block": 1.0,
}
# Row order of the attention tables; keras-hub's layers (no target) last.
ATTENTION_ORDER = (
    "rotary",
    "xpos",
    "mrope",
    "alibi",
    "t5",
    "kerple",
    "fire",
    "cope",
    "forgetting",
    "shaw",
    "keras_hub_rotary",
    "keras_hub_alibi",
)
ATTENTION_LABELS = {
    "keras_hub_rotary": "keras-hub rotary",
    "keras_hub_alibi": "keras-hub ALiBi (einsum)",
}
# Targets on attention apply from this length on.
ATTENTION_TARGET_FROM = 512


def machine():
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as file:
            names = re.findall(r"model name\s*:\s*(.*)", file.read())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as file:
            kib = int(re.search(r"MemTotal:\s*(\d+)", file.read()).group(1))
        memory_gib = round(kib / 2**20, 1)
    except (OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": cores or os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def machine_slug(description):
    name = re.sub(r"[^a-z0-9]+", "-", description["cpu"].lower()).strip("-")
    return f"{name}-{description['cores']}cores"


def today():
    return datetime.date.today().isoformat()


def _ratio(value, target=None):
    text = f"{value:.2f}×"
    if target is not None:
        text += " ✓" if value <= target else " ✗"
    return text


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _rows(results, backend, part):
    return (
        results["backends"]
        .get(backend, {})
        .get("parts", {})
        .get(part, {})
        .get("rows", [])
    )


def markdown(results):
    """The run as markdown: one table per part, ratios with ✓/✗ against targets."""
    backends = list(results["backends"])
    description = results["machine"]
    out = [
        f"# Benchmarks, {results['date']}{' (quick mode)' if results['quick'] else ''}",
        "",
        f"Machine: {description['cpu']}, {description['cores']} cores, "
        f"{description['memory_gib']} GiB, Python {description['python']}, "
        f"{description['system']}.",
        "Versions: "
        + "; ".join(
            ", ".join(f"{k} {v}" for k, v in results["backends"][b]["versions"].items())
            for b in backends
        )
        + ".",
        "",
        "Each figure is the median of repeated runs after warm-up under the backend's "
        "jit (`jax.jit`, `tf.function(jit_compile=True)`, eager PyTorch), divided by a "
        "baseline measured in the same process. ✓/✗: against the targets of issues 6 "
        "and 16.",
        "",
    ]

    lengths = sorted(
        {r["length"] for b in backends for r in _rows(results, b, "absolute")}
    )
    if lengths:
        out += [
            "## Absolute encodings vs a bare `x + table[:L]` / concat of a constant",
            "",
            "Forward time ratio (ours / bare); target ≤ 1.1×.",
            "",
        ]
        encodings = []
        for b in backends:
            for r in _rows(results, b, "absolute"):
                if r["encoding"] not in encodings:
                    encodings.append(r["encoding"])
        header = ["encoding"] + [f"{b} L={n}" for b in backends for n in lengths]
        rows = []
        for encoding in encodings:
            row = [encoding]
            for b in backends:
                for n in lengths:
                    match = [
                        x
                        for x in _rows(results, b, "absolute")
                        if x["encoding"] == encoding and x["length"] == n
                    ]
                    r = match[0] if match else None
                    row.append(_ratio(r["ratio"], TARGETS["absolute"]) if r else "–")
            rows.append(row)
        out += [_table(header, rows), ""]

    lengths = sorted(
        {r["length"] for b in backends for r in _rows(results, b, "attention")}
    )
    if lengths:
        out += [
            "## Attention with each relative scheme vs plain "
            "`ops.dot_product_attention`",
            "",
            "Forward+backward time ratio on projected q, k, v; targets (L ≥ "
            f"{ATTENTION_TARGET_FROM}): rotary/xPos ≤ 1.15×, ALiBi/T5 ≤ 1.25×, "
            "Shaw ≤ 1.6×; T5 and the learned biases (Kerple, FIRE, CoPE, "
            "forgetting) ≤ 1.25×, multi-axis rotary ≤ 1.15×. keras-hub's "
            "`RotaryEmbedding` and `AlibiBias` (added to einsum scores, as its "
            "Falcon and Bloom attend; a causal form, measured without a mask) "
            "are timed in the same processes for comparison. Plain attention's "
            "own time in the last row.",
            "",
        ]
        present = {
            r["scheme"] for b in backends for r in _rows(results, b, "attention")
        }
        schemes = [s for s in ATTENTION_ORDER if s in present]
        header = ["scheme"] + [f"{b} L={n}" for b in backends for n in lengths]
        rows = []
        for scheme in schemes:
            row = [ATTENTION_LABELS.get(scheme, scheme)]
            for b in backends:
                found = {
                    r["length"]: r
                    for r in _rows(results, b, "attention")
                    if r["scheme"] == scheme
                }
                for n in lengths:
                    r = found.get(n)
                    target = TARGETS.get(scheme) if n >= ATTENTION_TARGET_FROM else None
                    row.append(_ratio(r["ratio"], target) if r else "–")
            rows.append(row)
        row = ["plain (ms)"]
        for b in backends:
            found = {r["length"]: r for r in _rows(results, b, "attention")}
            for n in lengths:
                row.append(f"{found[n]['plain_ms']:.1f}" if n in found else "–")
        rows.append(row)
        out += [_table(header, rows), ""]
        caps = {}
        for b in backends:
            part = results["backends"][b].get("parts", {}).get("attention", {})
            caps.update(part.get("settings", {}).get("length_caps", {}))
        for scheme, cap in sorted(caps.items()):
            if scheme in present and any(n > cap["max_length"] for n in lengths):
                out += [
                    f"{ATTENTION_LABELS.get(scheme, scheme)} is timed up to "
                    f"L={cap['max_length']}: {cap['why']}.",
                    "",
                ]
        jax_rows = _rows(results, "jax", "attention")
        if jax_rows:
            out += [
                "Peak temporary memory of forward+backward (XLA's `memory_analysis()` "
                "on JAX; TensorFlow and PyTorch expose no peak count on CPU), "
                "ratio to plain; target for Shaw ≤ 2× at L=2048.",
                "",
            ]
            header = ["scheme"] + [f"L={n}" for n in lengths]
            rows = []
            for scheme in schemes:
                found = {r["length"]: r for r in jax_rows if r["scheme"] == scheme}
                rows.append(
                    [ATTENTION_LABELS.get(scheme, scheme)]
                    + [
                        _ratio(
                            found[n]["memory_ratio"], 2.0 if scheme == "shaw" else None
                        )
                        if n in found
                        else "–"
                        for n in lengths
                    ]
                )
            found = {r["length"]: r for r in jax_rows}
            rows.append(
                ["plain (MiB)"]
                + [
                    f"{found[n]['plain_temp_mib']:.0f}" if n in found else "–"
                    for n in lengths
                ]
            )
            out += [_table(header, rows), ""]

    shaw_rows = _rows(results, "jax", "shaw_memory")
    if shaw_rows:
        out += [
            "## Shaw attention: ours vs the paper's `(L, L, d)` tensors",
            "",
            "Forward+backward temporary memory (MiB, XLA on JAX; batch 1, 4 heads "
            "of 64, max_distance 16) as L doubles.",
            "",
            _table(
                ["L", "plain", "ours", "ours / plain", "naive", "naive / plain"],
                [
                    [
                        r["length"],
                        f"{r['plain_mib']:.1f}",
                        f"{r['ours_mib']:.1f}",
                        _ratio(r["ours_ratio"]),
                        f"{r['naive_mib']:.1f}",
                        _ratio(r["naive_ratio"]),
                    ]
                    for r in shaw_rows
                ],
            ),
            "",
        ]

    rows = [
        [
            b,
            r["dropout"],
            f"{r['ours_ms']:.1f}",
            f"{r['keras_hub_ms']:.1f}",
            _ratio(r["ratio"], TARGETS["encoder_block"]),
        ]
        for b in backends
        for r in _rows(results, b, "encoder_block")
    ]
    if rows:
        out += [
            "## Encoder block training step vs keras-hub",
            "",
            "`SinusoidalPositionEncoding` + `TransformerEncoder` vs keras-hub's "
            "`SinePositionEncoding` + `TransformerEncoder`, same configuration, "
            "`train_on_batch` (ms); target ≤ 1.0×.",
            "",
            _table(["backend", "dropout", "ours ms", "keras-hub ms", "ratio"], rows),
            "",
        ]

    rows = [
        [
            b,
            r["new_tokens"],
            r["batch"],
            f"{r['cached_tokens_per_s']:.0f}",
            f"{r['uncached_tokens_per_s']:.0f}",
            f"{r['speedup']:.1f}×" + (" ✓" if r["speedup"] >= 5 else " ✗"),
            "yes" if r["same_tokens"] else "NO",
        ]
        for b in backends
        for r in _rows(results, b, "generation")
    ]
    if rows:
        out += [
            "## Generation: `TransformerLM.generate_step`, greedy, with and "
            "without cache",
            "",
            "Tokens per second (batch × new tokens / time); target: cached ≥ 5× "
            "uncached at 256 new tokens.",
            "",
            _table(
                [
                    "backend",
                    "new tokens",
                    "batch",
                    "cached tok/s",
                    "uncached tok/s",
                    "speedup",
                    "same tokens",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(out)


def plot(results, path):
    """Attention time ratios per backend and Shaw memory, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in results["backends"] if _rows(results, b, "attention")]
    shaw_rows = _rows(results, "jax", "shaw_memory")
    panels = len(backends) + (1 if shaw_rows else 0)
    if not panels:
        return False
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    for axis, backend in zip(axes, backends):
        rows = _rows(results, backend, "attention")
        for scheme in ("rotary", "alibi", "t5", "kerple", "fire", "shaw"):
            points = sorted(
                (r["length"], r["ratio"]) for r in rows if r["scheme"] == scheme
            )
            if points:
                axis.plot(*zip(*points), marker="o", label=scheme)
        axis.axhline(1.0, color="gray", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_title(f"{backend}: fwd+bwd time / plain")
        axis.set_xlabel("sequence length L")
    axes[0].set_ylabel("ratio")
    axes[0].legend(fontsize=8)
    if shaw_rows:
        axis = axes[-1]
        lengths = [r["length"] for r in shaw_rows]
        for key, label in (
            ("plain_mib", "plain"),
            ("ours_mib", "Shaw (ours)"),
            ("naive_mib", "Shaw, naive (L,L,d)"),
        ):
            axis.plot(lengths, [r[key] for r in shaw_rows], marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_title("Shaw fwd+bwd temp memory (JAX)")
        axis.set_xlabel("sequence length L")
        axis.set_ylabel("MiB")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
