"""Length generalization of the position schemes on copy and reverse.

A decoder-only `keras_posenc.models.TransformerLM` (2 layers, hidden width 64,
4 heads, feed-forward width 128, no dropout) is trained, once per position
scheme, task and seed, on sequences

    [BOS] x1 .. xn [SEP] y1 .. yn [EOS]

with `n` drawn uniformly from 1-16, `x` drawn uniformly from 16 symbols, and
`y = x` (copy) or `y = reversed(x)` (reverse). The model reads the sequence
without its last token and predicts the next one; the loss is taken on the
`n + 1` target tokens `y1 .. yn [EOS]` only (a 0/1 `sample_weight`).
Batches are right-padded with token id 0, which `TransformerLM` turns into a
padding mask on the keys; with causal attention and right padding a real
token never sees a padded one, so padding changes no prediction that counts.

Evaluation is exact-match accuracy on fresh sequences with `n` in 1-16 (in
distribution), 17-32 and 33-48 (up to 3x the trained length), the same test
sequences for every scheme. It takes one teacher-forced forward pass: a
sequence counts as correct when the argmax at every target position equals
the target. That is the same as greedy decoding from the prompt
`[BOS] x [SEP]`: if every teacher-forced argmax is right, greedy decoding
feeds itself exactly the teacher-forced inputs and reproduces `y [EOS]`; if
not, the first wrong teacher-forced argmax is computed from the same prefix
greedy decoding would have produced, so greedy decoding goes wrong there too.
Each length bucket is padded to its longest sequence and run as one batch.

Schemes: every `position=` of `TransformerLM` except `learned_concat`
(`none` is NoPE) with the library's defaults (Shaw clips distances at 16,
T5 uses 32 causal buckets up to distance 128, ALiBi the standard slopes).
The learned table has one row per position of the training sequences
(`2 * 16 + 2 = 34`); it cannot honestly go further (`grow()` would
interpolate the trained rows, i.e. evaluate a different model), so the
longer buckets are reported as "n/a (table of 34 positions)".

"Rotary with scaling at test time" reuses the trained `rotary` models: their
weights are copied into a model with the same layers whose
`RotaryEmbedding` has `scaling="linear"`, `"dynamic_ntk"` or `"yarn"` with
`scaling_factor=3` (48 / 16) and `original_max_length=34`, then evaluated
without any training. Dynamic NTK sets its base from the length of the call,
which for a padded bucket is the bucket's longest sequence (as HF
transformers does with a right-padded batch); up to 34 tokens it equals
plain rotary.

Training: 750 steps of 64 sequences per model, Adam with a linear warmup
over the first 5% of the steps to a peak learning rate of 3e-3, cosine decay
to 0, global gradient clipping at 1.0, fresh random sequences at every step
(no example is repeated); the seed sets the initialization and the training
data. The step count is set by the budget (all 54 trained models, their
XLA compilations included, took 22 minutes on 2 CPU cores shared with
another job), not by convergence: rotary, xPos and sinusoidal fit 1-16 on
both tasks (0.96-1.00 exact match), learned nearly (0.93-0.99), ALiBi fits
copy (1.00) but not yet reverse (0.58), and NoPE, T5 and Shaw (on copy) are
still learning (a peak rate of 1e-2, or batches of 32 for twice the steps,
did not help NoPE or ALiBi on reverse in single-seed trials).

The backend is the one of `KERAS_BACKEND`; run as a script the benchmark
defaults to JAX, the fastest of the three for this model on 2 CPU cores
(about 20 ms per training step of 64 sequences, against 27 ms on PyTorch and
28 ms on TensorFlow). The code uses `keras.ops` and `model.fit` only.

    KERAS_BACKEND=jax python benchmarks/length_generalization.py
    python benchmarks/length_generalization.py --quick --output-dir /tmp/lg

writes `length_generalization.json` (machine, settings, accuracy per task,
scheme, seed and bucket, times), `length_generalization.md` (a table, mean
and standard deviation over seeds) and `length_generalization.png` into
`--output-dir` (default `benchmarks/results/`). `--quick` runs every scheme
and code path at toy sizes (lengths 1-4, 4 steps, one seed, one layer); its
accuracies mean nothing. It still compiles a training step and three
forward passes for each of its 18 models, which takes about two minutes on
2 busy CPU cores.

References:
    - Press et al., 2022, Train Short, Test Long (ALiBi):
      https://arxiv.org/abs/2108.12409
    - Kazemnejad et al., 2023, The Impact of Positional Encoding on Length
      Generalization in Transformers: https://arxiv.org/abs/2305.19466
    - Chen et al., 2023 (linear scaling): https://arxiv.org/abs/2306.15595
    - Peng et al., 2023 (YaRN): https://arxiv.org/abs/2309.00071
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Run as a file: the repository root holds the `benchmarks` package.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from benchmarks.report import machine as machine_facts  # noqa: E402
from keras_posenc.layers import RotaryEmbedding  # noqa: E402
from keras_posenc.layers import TokenAndPositionEmbedding  # noqa: E402
from keras_posenc.layers import TransformerDecoder  # noqa: E402
from keras_posenc.models import TransformerLM  # noqa: E402

PAD, BOS, SEP, EOS = 0, 1, 2, 3
FIRST_SYMBOL = 4
TASKS = ("copy", "reverse")
TRAINED_SCHEMES = (
    "none",
    "sinusoidal",
    "sinusoidal_concat",
    "learned",
    "shaw",
    "t5",
    "alibi",
    "rotary",
    "xpos",
)
# Evaluated with the trained `rotary` models' weights, never trained.
ROTARY_SCALINGS = ("linear", "dynamic_ntk", "yarn")
SCALED_SCHEMES = tuple(f"rotary+{scaling}" for scaling in ROTARY_SCALINGS)
SCHEMES = TRAINED_SCHEMES + SCALED_SCHEMES
DEFAULT_OUTPUT_DIR = pathlib.Path(__file__).resolve().parent / "results"
EVAL_SEED = 20240601

FULL = {
    "num_symbols": 16,
    "train_max": 16,
    "buckets": [(1, 16), (17, 32), (33, 48)],
    "hidden_dim": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_dim": 128,
    "steps": 750,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "eval_examples": 256,
    "seeds": [0, 1, 2],
}
QUICK = {
    **FULL,
    "train_max": 4,
    "buckets": [(1, 4), (5, 8), (9, 12)],
    "hidden_dim": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 32,
    "steps": 4,
    "batch_size": 8,
    "eval_examples": 8,
    "seeds": [0],
}


def sequence_length(n):
    """Tokens of one example with `n` symbols: BOS, x, SEP, y, EOS."""
    return 2 * n + 3


def make_batch(task, lengths, num_symbols, rng, pad_to):
    """Model inputs, targets and 0/1 target weights for one batch.

    Args:
        task: `"copy"` or `"reverse"`.
        lengths: int array of the number of symbols `n` of each example.
        num_symbols: int. Size of the symbol alphabet.
        rng: numpy `Generator`.
        pad_to: int. Length of the rows, at least `2 * max(lengths) + 2`.

    Returns:
        `(inputs, targets, weights)`, each `(batch, pad_to)`: the sequence
        without its last token, without its first token, and 1 where the
        target is one of `y1 .. yn [EOS]`.
    """
    batch = len(lengths)
    sequences = np.full((batch, pad_to + 1), PAD, dtype="int32")
    weights = np.zeros((batch, pad_to), dtype="float32")
    for row, n in enumerate(lengths):
        symbols = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + num_symbols, size=n)
        answer = symbols if task == "copy" else symbols[::-1]
        sequences[row, : sequence_length(n)] = np.concatenate(
            [[BOS], symbols, [SEP], answer, [EOS]]
        )
        # Input slot n + 1 holds SEP and predicts y1; slot 2n + 1 predicts EOS.
        weights[row, n + 1 : 2 * n + 2] = 1.0
    return sequences[:, :-1], sequences[:, 1:], weights


def exact_match(logits, targets, weights):
    """Per-example 1.0 where every weighted argmax equals its target."""
    predictions = np.argmax(logits, axis=-1)
    wrong = (predictions != targets) & (weights > 0)
    return 1.0 - wrong.any(axis=1).astype("float64")


def build_model(scheme, settings, max_length):
    return TransformerLM(
        vocabulary_size=FIRST_SYMBOL + settings["num_symbols"],
        max_length=max_length,
        hidden_dim=settings["hidden_dim"],
        num_layers=settings["num_layers"],
        num_heads=settings["num_heads"],
        intermediate_dim=settings["intermediate_dim"],
        dropout=0.0,
        position=scheme,
    )


def train_model(task, scheme, seed, settings):
    """Trains one `TransformerLM`; returns it and its final training loss."""
    keras.utils.set_random_seed(seed)
    train_length = sequence_length(settings["train_max"]) - 1
    longest = sequence_length(settings["buckets"][-1][1]) - 1
    # Only the learned table depends on `max_length`: it gets the training
    # positions, the other schemes accept every evaluated length.
    max_length = train_length if scheme == "learned" else longest
    model = build_model(scheme, settings, max_length)
    steps, batch_size = settings["steps"], settings["batch_size"]
    warmup_steps = max(steps // 20, 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(steps - warmup_steps, 1),
        warmup_target=settings["learning_rate"],
        warmup_steps=warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng([seed, TASKS.index(task)])
    lengths = rng.integers(1, settings["train_max"] + 1, size=steps * batch_size)
    inputs, targets, weights = make_batch(
        task, lengths, settings["num_symbols"], rng, train_length
    )
    # Fit in ten chunks of fresh data only to read the loss of the last
    # tenth of the steps; the compiled step and the schedule carry over.
    for chunk in np.array_split(np.arange(steps), min(10, steps)):
        rows = slice(chunk[0] * batch_size, (chunk[-1] + 1) * batch_size)
        history = model.fit(
            inputs[rows],
            targets[rows],
            sample_weight=weights[rows],
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
        )
    return model, float(history.history["loss"][-1])


def evaluation_sets(task, settings):
    """One padded batch per length bucket, the same for every scheme and seed."""
    rng = np.random.default_rng([EVAL_SEED, TASKS.index(task)])
    sets = []
    for low, high in settings["buckets"]:
        lengths = rng.integers(low, high + 1, size=settings["eval_examples"])
        pad_to = sequence_length(high) - 1
        sets.append(make_batch(task, lengths, settings["num_symbols"], rng, pad_to))
    return sets


def bucket_name(bucket):
    return f"{bucket[0]}-{bucket[1]}"


def evaluate(model, sets, settings, table_length=None):
    """Exact-match accuracy per bucket; None where the learned table ends."""
    accuracies = {}
    for bucket, (inputs, targets, weights) in zip(settings["buckets"], sets):
        if table_length is not None and inputs.shape[1] > table_length:
            accuracies[bucket_name(bucket)] = None
            continue
        logits = ops.convert_to_numpy(model.predict_on_batch(inputs))
        accuracies[bucket_name(bucket)] = float(
            exact_match(logits, targets, weights).mean()
        )
    return accuracies


def rotary_model_with_scaling(model, scaling, scaling_factor, original_max_length):
    """A functional copy of a trained rotary `TransformerLM`, other rotary settings.

    `TransformerLM` names its scheme by string, so the same layers are
    rebuilt from their configs, every `TransformerDecoder` with a
    `RotaryEmbedding(scaling=...)` instance as its position, and the trained
    weights copied layer by layer (the rotary layer has none). With
    `scaling=None` the copy computes the original model's logits.
    """
    rotary_arguments = {}
    if scaling is not None:
        rotary_arguments = {
            "scaling": scaling,
            "scaling_factor": scaling_factor,
            "original_max_length": original_max_length,
        }
    embedding = TokenAndPositionEmbedding.from_config(model.embedding.get_config())
    decoder_layers = [
        TransformerDecoder(
            **{
                **layer.get_config(),
                "position": RotaryEmbedding(name="position", **rotary_arguments),
            }
        )
        for layer in model.decoder_layers
    ]
    final_norm = keras.layers.LayerNormalization.from_config(
        model.final_norm.get_config()
    )
    logits_dense = keras.layers.Dense.from_config(model.logits_dense.get_config())

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = ops.not_equal(token_ids, PAD)
    x = embedding(token_ids)
    for layer in decoder_layers:
        x = layer(x, decoder_padding_mask=padding_mask)
    logits = logits_dense(final_norm(x))
    rebuilt = keras.Model(token_ids, logits, name=f"rotary_{scaling}")

    pairs = [(model.embedding, embedding), (model.final_norm, final_norm)]
    pairs += list(zip(model.decoder_layers, decoder_layers))
    pairs.append((model.logits_dense, logits_dense))
    for trained, copy in pairs:
        copy.set_weights(trained.get_weights())
    return rebuilt


def summarize(accuracies):
    """Mean, standard deviation (over seeds), min and max; None if not applicable."""
    if any(value is None for value in accuracies):
        return None
    values = np.asarray(accuracies, dtype="float64")
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def machine_description():
    """`benchmarks.report.machine()` plus the backend, Keras version and time."""
    return {
        **machine_facts(),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    }


def not_applicable_text(table_length):
    return f"n/a (table of {table_length} positions)"


def run_study(settings, tasks, schemes, log=print):
    """Trains and evaluates; returns the `results` part of the JSON."""
    trained = [s for s in TRAINED_SCHEMES if s in schemes]
    scaled = [s for s in SCALED_SCHEMES if s in schemes]
    if scaled and "rotary" not in trained:
        trained.append("rotary")  # The scaled variants reuse its weights.
    table_length = sequence_length(settings["train_max"]) - 1
    scaling_factor = settings["buckets"][-1][1] / settings["train_max"]
    results = {}
    for task in tasks:
        sets = evaluation_sets(task, settings)
        task_results = {
            scheme: {"seeds": {}, "train_seconds": {}, "final_loss": {}}
            for scheme in trained + scaled
        }
        for scheme in trained:
            for seed in settings["seeds"]:
                start = time.perf_counter()
                model, loss = train_model(task, scheme, seed, settings)
                train_seconds = time.perf_counter() - start
                limit = table_length if scheme == "learned" else None
                runs = [(scheme, model)]
                for scaling in ROTARY_SCALINGS if scheme == "rotary" else ():
                    if f"rotary+{scaling}" in scaled:
                        runs.append(
                            (
                                f"rotary+{scaling}",
                                rotary_model_with_scaling(
                                    model, scaling, scaling_factor, table_length
                                ),
                            )
                        )
                for name, evaluated in runs:
                    accuracies = evaluate(evaluated, sets, settings, limit)
                    entry = task_results[name]
                    entry["seeds"][str(seed)] = accuracies
                    if name == scheme:
                        entry["train_seconds"][str(seed)] = round(train_seconds, 2)
                        entry["final_loss"][str(seed)] = loss
                    shown = ", ".join(
                        f"{key}: {'n/a' if value is None else f'{value:.3f}'}"
                        for key, value in accuracies.items()
                    )
                    log(
                        f"{task:8s} {name:19s} seed {seed}  {shown}  "
                        f"(loss {loss:.4f}, {train_seconds:.1f} s)"
                    )
        for scheme in trained + scaled:
            if scheme not in schemes:
                del task_results[scheme]
                continue
            entry = task_results[scheme]
            entry["summary"] = {}
            for bucket in settings["buckets"]:
                key = bucket_name(bucket)
                values = [entry["seeds"][str(s)][key] for s in settings["seeds"]]
                summary = summarize(values)
                if summary is None:
                    summary = {"not_applicable": not_applicable_text(table_length)}
                entry["summary"][key] = summary
        results[task] = task_results
    return results


def markdown_table(report):
    settings, results = report["settings"], report["results"]
    buckets = [bucket_name(bucket) for bucket in settings["buckets"]]
    schemes = report["schemes"]
    header = ["scheme"] + [f"{task} {bucket}" for task in results for bucket in buckets]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    for scheme in schemes:
        cells = [f"`{scheme}`"]
        for task in results:
            for bucket in buckets:
                summary = results[task][scheme]["summary"][bucket]
                if "not_applicable" in summary:
                    cells.append(summary["not_applicable"])
                else:
                    cells.append(f"{summary['mean']:.2f} ± {summary['std']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    machine = report["machine"]
    seeds = settings["seeds"]
    intro = (
        f"Exact-match accuracy by number of input symbols (trained on "
        f"1-{settings['train_max']}), mean ± standard deviation over "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
        f"({', '.join(map(str, seeds))}); {settings['eval_examples']} test "
        f"sequences per bucket. {settings['steps']} training steps of "
        f"{settings['batch_size']} sequences per model. Keras "
        f"{machine['keras_version']}, {machine['backend']} backend, "
        f"{machine['cores']} cores of {machine['cpu']}; "
        f"{report['wall_seconds']:.0f} s in all."
    )
    if report["quick"]:
        intro = "Quick (smoke-test) settings: the numbers mean nothing. " + intro
    return "\n".join(["# Length generalization", "", intro, ""] + lines) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, results = report["settings"], report["results"]
    buckets = [bucket_name(bucket) for bucket in settings["buckets"]]
    schemes = report["schemes"]
    figure, axes = plt.subplots(
        len(results), 1, figsize=(12, 3.6 * len(results)), squeeze=False
    )
    width = 0.8 / len(buckets)
    for axis, task in zip(axes[:, 0], results):
        for index, bucket in enumerate(buckets):
            means, low, high, missing = [], [], [], []
            for position, scheme in enumerate(schemes):
                summary = results[task][scheme]["summary"][bucket]
                if "not_applicable" in summary:
                    means.append(0.0)
                    low.append(0.0)
                    high.append(0.0)
                    missing.append(position)
                else:
                    means.append(summary["mean"])
                    low.append(summary["mean"] - summary["min"])
                    high.append(summary["max"] - summary["mean"])
            offsets = np.arange(len(schemes)) + (index - (len(buckets) - 1) / 2) * width
            axis.bar(
                offsets,
                means,
                width,
                yerr=[low, high],
                capsize=2,
                label=f"{bucket} symbols",
            )
            for position in missing:
                axis.text(
                    offsets[position],
                    0.02,
                    "n/a",
                    rotation=90,
                    ha="center",
                    va="bottom",
                )
        axis.set_xticks(np.arange(len(schemes)))
        axis.set_xticklabels(schemes, rotation=20, ha="right")
        axis.set_ylim(0.0, 1.05)
        axis.set_ylabel("exact match")
        axis.set_title(f"{task}: trained on 1-{settings['train_max']} symbols")
        axis.legend(loc="upper right", fontsize="small")
    figure.suptitle("Length generalization (mean over seeds, bars = min to max)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="Length generalization of position schemes on copy and reverse."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="toy sizes, a few steps, one seed: a smoke test of every code path",
    )
    parser.add_argument("--output-dir", type=pathlib.Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument(
        "--schemes",
        nargs="+",
        choices=SCHEMES,
        default=list(SCHEMES),
        metavar="SCHEME",
        help=f"schemes to run, of {', '.join(SCHEMES)} (default: all)",
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, default=list(TASKS), metavar="TASK"
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument("--steps", type=int, help="training steps per model")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = parse_arguments(argv)
    start = time.perf_counter()
    settings = dict(QUICK if arguments.quick else FULL)
    for name in ("seeds", "steps", "batch_size", "learning_rate"):
        if getattr(arguments, name) is not None:
            settings[name] = getattr(arguments, name)
    schemes = [scheme for scheme in SCHEMES if scheme in arguments.schemes]
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{'quick' if arguments.quick else 'full'} settings",
        flush=True,
    )
    tasks = [task for task in TASKS if task in arguments.tasks]
    results = run_study(
        settings, tasks, schemes, log=lambda line: print(line, flush=True)
    )
    report = {
        "machine": machine_description(),
        "quick": arguments.quick,
        "settings": {
            **settings,
            "tasks": tasks,
            "dropout": 0.0,
            "rotary_scaling_factor": settings["buckets"][-1][1] / settings["train_max"],
            "rotary_original_max_length": sequence_length(settings["train_max"]) - 1,
            "learned_table_length": sequence_length(settings["train_max"]) - 1,
            "arguments": argv,
        },
        "schemes": schemes,
        "results": results,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    output_dir = arguments.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "length_generalization.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    table = markdown_table(report)
    (output_dir / "length_generalization.md").write_text(table)
    plot(report, output_dir / "length_generalization.png")
    print(table, flush=True)
    print(f"wrote {output_dir}/length_generalization.{{json,md,png}}", flush=True)
    return report


if __name__ == "__main__":
    main()
