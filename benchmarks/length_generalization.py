"""Length generalization of the position schemes on copy and reverse.

The setting of Kazemnejad et al. (2023): a decoder-only
`keras_posenc.models.TransformerLM` (2 layers, hidden width 64, 4 heads,
feed-forward width 128, no dropout) is trained, once per position scheme,
task and seed, on sequences

    [BOS] x1 .. xn [SEP] y1 .. yn [EOS]

with `n` drawn uniformly from 1-20, `x` drawn uniformly from 16 symbols, and
`y = x` (copy) or `y = reversed(x)` (reverse), and tested on 1-20 (in
distribution), 21-40 (the paper's test split) and 41-60 (a harder bucket).
The model reads the sequence without its last token and predicts the next
one; the loss is taken on the `n + 1` target tokens `y1 .. yn [EOS]` only (a
0/1 `sample_weight`). Batches are right-padded with token id 0, which
`TransformerLM` turns into a padding mask on the keys; with causal attention
and right padding a real token never sees a padded one.

Evaluation is exact-match accuracy on fresh sequences, the same test
sequences for every scheme. It takes one teacher-forced forward pass: a
sequence counts as correct when the argmax at every target position equals
the target. That is the same as greedy decoding from the prompt
`[BOS] x [SEP]`: if every teacher-forced argmax is right, greedy decoding
feeds itself exactly the teacher-forced inputs and reproduces `y [EOS]`; if
not, the first wrong teacher-forced argmax is computed from the same prefix
greedy decoding would have produced, so greedy decoding goes wrong there too.
Each length bucket is padded to its longest sequence and run as one batch.

Training runs until the model fits: every `eval_every` steps the exact match
on a validation set of training lengths (its own sequences, not the test
ones) is measured, and training stops once it reaches `stop_at` (0.98, a
margin over the 0.95 that counts as fitting) or at `max_steps`. The steps
taken and the validation curve are kept; a model whose in-distribution test
accuracy is under 0.95 is reported as not fitting within the cap, never as a
result about longer lengths. Adam with a linear warm-up over
`warmup_steps` to a peak rate of 3e-3 and a cosine decay to a tenth of it at
`max_steps`, global gradient clipping at 1.0, fresh random sequences at every
step (no example is repeated); the seed sets the initialization and the data.

Schemes: NoPE (`none`), sinusoidal, learned, T5, ALiBi, rotary, xPos, Shaw,
FIRE, Kerple, CoPE and the forgetting bias with the library's defaults, and
each scheme that reads position ids also with randomized positions (Ruoss et
al., 2023: `randomize_positions=256`, twice the longest test sequence, so
training sees the positions of every test length). The plain learned table
has one row per training position (`2 * 20 + 2 = 42`); it cannot honestly go
further, so its longer buckets are "n/a". "Rotary with scaling at test time"
reuses the trained `rotary` models: their weights are copied into a model
whose `RotaryEmbedding` has `scaling="linear"`, `"dynamic_ntk"` or `"yarn"`
with `scaling_factor=3` (60 / 20) and `original_max_length=42`, evaluated
without training.

The backend is the one of `KERAS_BACKEND`; run as a script the benchmark
defaults to JAX, the fastest of the three for this model on CPU. With
`--workers N` the models are trained by N processes of one thread each:
measured alone on this 2-core machine, a one-thread process took 46 ms per
training step (batch 64, lengths 1-20), a two-thread process 52 ms, so two
workers train about twice as many models per hour as one. The code uses
`keras.ops` and `model.fit`.

    KERAS_BACKEND=jax python benchmarks/length_generalization.py --workers 2
    python benchmarks/length_generalization.py --quick --output-dir /tmp/lg

writes `length_generalization.json` (machine, settings, accuracy per task,
scheme, seed and bucket, steps to fit, validation curves, times),
`length_generalization.md` (tables, mean and standard deviation over seeds,
with the paper's figures side by side) and `length_generalization.png` into
`--output-dir` (default `benchmarks/results/`). `--quick` runs every scheme
and code path on copy at toy sizes (lengths 1-4, a few steps, one seed, one
layer); its accuracies mean nothing.

References:
    - Kazemnejad et al., 2023, The Impact of Positional Encoding on Length
      Generalization in Transformers: https://arxiv.org/abs/2305.19466
      (code: https://github.com/McGill-NLP/length-generalization)
    - Ruoss et al., 2023, Randomized Positional Encodings Boost Length
      Generalization of Transformers: https://arxiv.org/abs/2305.16843
    - Press et al., 2022, Train Short, Test Long (ALiBi):
      https://arxiv.org/abs/2108.12409
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
    "learned",
    "t5",
    "alibi",
    "rotary",
    "xpos",
    "shaw",
    "fire",
    "kerple",
    "cope",
    "forgetting",
)
# Schemes that read position ids, so randomized positions change them; NoPE,
# CoPE and the forgetting bias take no positions.
RANDOMIZABLE_SCHEMES = (
    "sinusoidal",
    "learned",
    "t5",
    "alibi",
    "rotary",
    "xpos",
    "shaw",
    "fire",
    "kerple",
)
RANDOMIZED_SCHEMES = tuple(f"{scheme}+randomized" for scheme in RANDOMIZABLE_SCHEMES)
# Evaluated with the trained `rotary` models' weights, never trained.
ROTARY_SCALINGS = ("linear", "dynamic_ntk", "yarn")
SCALED_SCHEMES = tuple(f"rotary+{scaling}" for scaling in ROTARY_SCALINGS)
SCHEMES = TRAINED_SCHEMES + RANDOMIZED_SCHEMES + SCALED_SCHEMES
DEFAULT_OUTPUT_DIR = pathlib.Path(__file__).resolve().parent / "results"
EVAL_SEED = 20240601
VALIDATION_SEED = 20240602
# A model fits its training lengths when its in-distribution test exact
# match reaches this.
FIT_THRESHOLD = 0.95

FULL = {
    "num_symbols": 16,
    "train_max": 20,
    "buckets": [(1, 20), (21, 40), (41, 60)],
    "hidden_dim": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_dim": 128,
    "max_steps": 4000,
    "eval_every": 250,
    "stop_at": 0.98,
    "warmup_steps": 200,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "randomize_positions": 256,
    "eval_examples": 256,
    "validation_examples": 256,
    "seeds": [0, 1],
    # The randomized variants run to the step cap (none fits within it), so
    # they get one seed to keep the study within two hours on 2 cores.
    "randomized_seeds": [0],
    "tasks": list(TASKS),
}
QUICK = {
    **FULL,
    "train_max": 4,
    "buckets": [(1, 4), (5, 8), (9, 12)],
    "hidden_dim": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 32,
    "max_steps": 4,
    "eval_every": 2,
    "warmup_steps": 1,
    "batch_size": 8,
    "randomize_positions": 32,
    "eval_examples": 8,
    "validation_examples": 8,
    "seeds": [0],
    "randomized_seeds": [0],
    "tasks": ["copy"],
}
# Kazemnejad et al. (2023), exact match on lengths 21-40 after training on
# 1-20: the paper's two copy variants and its reverse task.
PAPER_SCHEMES = {
    "none": "NoPE",
    "t5": "T5",
    "alibi": "ALiBi",
    "rotary": "RoPE",
    "sinusoidal": "APE",
    "learned": "APE",
}
PAPER_RESULTS = {
    "copy": {
        "NoPE": "0.99 / 0.97",
        "T5": "0.77 / 0.94",
        "ALiBi": "0.29 / 0.17",
        "RoPE": "0.00 / 0.02",
        "APE": "0.00 / 0.00",
    },
    "reverse": {
        "NoPE": "0.47",
        "T5": "0.45",
        "ALiBi": "0.20",
        "RoPE": "0.05",
        "APE": "0.01",
    },
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


def base_scheme(scheme):
    """`"rotary+randomized"` -> `"rotary"`; other names unchanged."""
    return scheme.split("+")[0]


def is_randomized(scheme):
    return scheme.endswith("+randomized")


def table_length(settings):
    """Rows of the plain learned table: the longest training input."""
    return sequence_length(settings["train_max"]) - 1


def build_model(scheme, settings, max_length):
    return TransformerLM(
        vocabulary_size=FIRST_SYMBOL + settings["num_symbols"],
        max_length=max_length,
        hidden_dim=settings["hidden_dim"],
        num_layers=settings["num_layers"],
        num_heads=settings["num_heads"],
        intermediate_dim=settings["intermediate_dim"],
        dropout=0.0,
        position=base_scheme(scheme),
        randomize_positions=(
            settings["randomize_positions"] if is_randomized(scheme) else None
        ),
    )


def train_model(task, scheme, seed, settings, log=None):
    """Trains one `TransformerLM` until it fits or reaches `max_steps`.

    Returns:
        `(model, record)`: `record` holds `steps` (taken), `steps_to_fit`
        (the first validation at or above `stop_at`, else None), `final_loss`
        and `curve`, a list of `[step, validation exact match, loss]`.
    """
    keras.utils.set_random_seed(seed)
    longest = sequence_length(settings["buckets"][-1][1]) - 1
    # Only the plain learned table depends on `max_length`: it gets the
    # training positions, the other schemes accept every evaluated length.
    max_length = table_length(settings) if scheme == "learned" else longest
    model = build_model(scheme, settings, max_length)
    max_steps, batch_size = settings["max_steps"], settings["batch_size"]
    warmup_steps = min(settings["warmup_steps"], max_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(max_steps - warmup_steps, 1),
        alpha=0.1,
        warmup_target=settings["learning_rate"],
        warmup_steps=warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng([seed, TASKS.index(task)])
    validation = validation_set(task, settings)
    curve, steps, steps_to_fit, loss = [], 0, None, float("nan")
    while steps < max_steps:
        chunk = min(settings["eval_every"], max_steps - steps)
        lengths = rng.integers(1, settings["train_max"] + 1, size=chunk * batch_size)
        inputs, targets, weights = make_batch(
            task, lengths, settings["num_symbols"], rng, table_length(settings)
        )
        # One fit per chunk of fresh data; the compiled step, the optimizer
        # state and the schedule carry over.
        history = model.fit(
            inputs,
            targets,
            sample_weight=weights,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
        )
        steps += chunk
        loss = float(history.history["loss"][-1])
        logits = ops.convert_to_numpy(model.predict_on_batch(validation[0]))
        accuracy = float(exact_match(logits, *validation[1:]).mean())
        curve.append([steps, round(accuracy, 4), round(loss, 5)])
        if log is not None:
            log(f"  {task} {scheme} seed {seed} step {steps}: {accuracy:.3f}")
        if accuracy >= settings["stop_at"]:
            steps_to_fit = steps
            break
    record = {
        "steps": steps,
        "steps_to_fit": steps_to_fit,
        "final_loss": loss,
        "curve": curve,
    }
    return model, record


def validation_set(task, settings):
    """Training lengths, drawn apart from the training and test sequences."""
    rng = np.random.default_rng([VALIDATION_SEED, TASKS.index(task)])
    lengths = rng.integers(
        1, settings["train_max"] + 1, size=settings["validation_examples"]
    )
    return make_batch(
        task, lengths, settings["num_symbols"], rng, table_length(settings)
    )


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


def run_job(task, scheme, seed, settings):
    """Trains one model and evaluates it (and its rotary scalings).

    Returns:
        A list of `(name, entry)`: `entry` holds the accuracies per bucket,
        and for the trained model its training record and seconds.
    """
    start = time.perf_counter()
    model, record = train_model(task, scheme, seed, settings)
    train_seconds = time.perf_counter() - start
    sets = evaluation_sets(task, settings)
    limit = table_length(settings) if scheme == "learned" else None
    runs = [(scheme, model)]
    if scheme == "rotary":
        scaling_factor = settings["buckets"][-1][1] / settings["train_max"]
        runs += [
            (
                f"rotary+{scaling}",
                rotary_model_with_scaling(
                    model, scaling, scaling_factor, table_length(settings)
                ),
            )
            for scaling in ROTARY_SCALINGS
        ]
    entries = []
    for name, evaluated in runs:
        entry = {"accuracies": evaluate(evaluated, sets, settings, limit)}
        if name == scheme:
            entry.update(record, train_seconds=round(train_seconds, 2))
        entries.append((name, entry))
    return entries


def start_worker():
    """One thread per worker process: N workers share N cores."""
    os.environ["XLA_FLAGS"] = (
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )


def job_order(jobs):
    """Slow learners first, so the last jobs of a pool run short."""
    slow = ("none", "t5", "shaw", "alibi", "cope", "forgetting")
    return sorted(jobs, key=lambda job: (base_scheme(job[1]) not in slow, job[2]))


def scheme_seeds(scheme, settings):
    """The seeds a scheme is trained with."""
    key = "randomized_seeds" if is_randomized(scheme) else "seeds"
    return settings[key]


def settings_key(settings):
    """What must match for a logged job to be reused by `--resume`."""
    kept = {k: v for k, v in settings.items() if k not in ("workers", "arguments")}
    return json.dumps(
        {**kept, "backend": keras.backend.backend()}, sort_keys=True, default=str
    )


def read_job_log(path, settings):
    """`{(task, scheme, seed): entries}` of the jobs a previous run finished."""
    finished = {}
    if path is None or not path.exists():
        return finished
    key = settings_key(settings)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        job = json.loads(line)
        if job["settings"] == key:
            finished[(job["task"], job["scheme"], job["seed"])] = [
                tuple(entry) for entry in job["entries"]
            ]
    return finished


def run_study(settings, tasks, schemes, log=print, workers=1, job_log=None):
    """Trains and evaluates; returns the `results` part of the JSON.

    Each finished job is appended to `job_log` (a JSON-lines file) when one
    is given, and the jobs already there with the same settings are not run
    again: an interrupted study resumes where it stopped.
    """
    trained = [s for s in TRAINED_SCHEMES + RANDOMIZED_SCHEMES if s in schemes]
    scaled = [s for s in SCALED_SCHEMES if s in schemes]
    if scaled and "rotary" not in trained:
        trained.append("rotary")  # The scaled variants reuse its weights.
    jobs = job_order(
        [
            (task, s, seed, settings)
            for task in tasks
            for s in trained
            for seed in scheme_seeds(s, settings)
        ]
    )
    collected = {task: {} for task in tasks}
    finished = read_job_log(job_log, settings)

    def record(job, entries, logged=False):
        task, scheme, seed, _ = job
        if job_log is not None and not logged:
            line = {
                "task": task,
                "scheme": scheme,
                "seed": seed,
                "settings": settings_key(settings),
                "entries": entries,
            }
            with job_log.open("a") as file:
                file.write(json.dumps(line) + "\n")
        for name, entry in entries:
            collected[task].setdefault(name, {})[str(seed)] = entry
            shown = ", ".join(
                f"{key}: {'n/a' if value is None else f'{value:.3f}'}"
                for key, value in entry["accuracies"].items()
            )
            trained_text = ""
            if "steps" in entry:
                fitted = entry["steps_to_fit"] is not None
                trained_text = (
                    f"  ({entry['steps']} steps, {'fit' if fitted else 'cap'}, "
                    f"{entry['train_seconds']:.0f} s)"
                )
            log(f"{task:8s} {name:20s} seed {seed}  {shown}{trained_text}")

    for job in [job for job in jobs if job[:3] in finished]:
        record(job, finished[job[:3]], logged=True)
    jobs = [job for job in jobs if job[:3] not in finished]
    if workers > 1:
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_worker,
        ) as pool:
            futures = {pool.submit(run_job, *job): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                record(futures[future], future.result())
    else:
        for job in jobs:
            record(job, run_job(*job))

    results = {}
    for task in tasks:
        task_results = {}
        for scheme in SCHEMES:
            if scheme not in schemes:
                continue
            per_seed = collected[task][scheme]
            seeds = [str(seed) for seed in scheme_seeds(scheme, settings)]
            entry = {"seeds": {s: per_seed[s]["accuracies"] for s in seeds}}
            if scheme in SCALED_SCHEMES:
                entry["evaluated_from"] = "rotary"
                trained_entries = collected[task]["rotary"]
            else:
                trained_entries = per_seed
            for key in (
                "train_seconds",
                "final_loss",
                "steps",
                "steps_to_fit",
                "curve",
            ):
                entry[key] = {s: trained_entries[s][key] for s in seeds}
            first = bucket_name(settings["buckets"][0])
            entry["fits"] = {
                s: entry["seeds"][s][first] >= FIT_THRESHOLD for s in seeds
            }
            entry["summary"] = {}
            for bucket in settings["buckets"]:
                key = bucket_name(bucket)
                summary = summarize([entry["seeds"][s][key] for s in seeds])
                if summary is None:
                    summary = {
                        "not_applicable": not_applicable_text(table_length(settings))
                    }
                entry["summary"][key] = summary
            task_results[scheme] = entry
        results[task] = task_results
    return results


def fitted_cell(entry, bucket):
    """Mean ± std over the seeds that fit; what did not fit says so."""
    fitted = [s for s, fits in entry["fits"].items() if fits]
    total = len(entry["fits"])
    if not fitted:
        return "not fit"
    values = [entry["seeds"][s][bucket] for s in fitted]
    if any(value is None for value in values):
        return "n/a"
    text = f"{np.mean(values):.2f} ± {np.std(values):.2f}"
    return text if len(fitted) == total else f"{text} ({len(fitted)}/{total} fit)"


def in_distribution_cell(entry, bucket):
    values = [entry["seeds"][s][bucket] for s in entry["seeds"]]
    text = f"{np.mean(values):.2f} ± {np.std(values):.2f}"
    return text if all(entry["fits"].values()) else f"**{text}**"


def steps_cell(entry, settings):
    if "evaluated_from" in entry:
        return "(rotary's)"
    steps = [v for v in entry["steps_to_fit"].values() if v is not None]
    if not steps:
        return f"> {settings['max_steps']}"
    text = f"{np.mean(steps):.0f}"
    missed = len(entry["steps_to_fit"]) - len(steps)
    return text if not missed else f"{text} (+{missed} > {settings['max_steps']})"


def markdown_table(report):
    settings, results = report["settings"], report["results"]
    buckets = [bucket_name(bucket) for bucket in settings["buckets"]]
    schemes = report["schemes"]
    header = ["scheme"]
    for task in results:
        header += [f"{task} steps"] + [f"{task} {bucket}" for bucket in buckets]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    for scheme in schemes:
        cells = [f"`{scheme}`"]
        for task in results:
            entry = results[task][scheme]
            cells.append(steps_cell(entry, settings))
            for index, bucket in enumerate(buckets):
                summary = entry["summary"][bucket]
                if "not_applicable" in summary:
                    cells.append(summary["not_applicable"])
                elif index == 0:
                    cells.append(in_distribution_cell(entry, bucket))
                else:
                    cells.append(fitted_cell(entry, bucket))
        lines.append("| " + " | ".join(cells) + " |")
    machine = report["machine"]
    seeds = settings["seeds"]
    randomized_seeds = settings.get("randomized_seeds", seeds)
    randomized_text = ""
    if any(is_randomized(scheme) for scheme in schemes):
        randomized_text = (
            f"; the `+randomized` rows {', '.join(map(str, randomized_seeds))}, "
            f"randomize_positions={settings['randomize_positions']}"
        )
    intro = (
        f"Exact-match accuracy by number of input symbols (trained on "
        f"1-{settings['train_max']}), mean ± standard deviation over "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
        f"({', '.join(map(str, seeds))}{randomized_text}); "
        f"{settings['eval_examples']} test "
        f"sequences per bucket. Each model trains in batches of "
        f"{settings['batch_size']} until its validation exact match on "
        f"training lengths reaches {settings['stop_at']} or for "
        f'{settings["max_steps"]} steps; "steps" is the mean number of '
        f"steps to get there. An in-distribution cell in bold has a seed under "
        f"{FIT_THRESHOLD} (not fit within the cap); longer buckets average the "
        f'seeds that fit only, and say "not fit" when none did. Keras '
        f"{machine['keras_version']}, {machine['backend']} backend, "
        f"{machine['cores']} cores of {machine['cpu']}, "
        f"{settings.get('workers', 1)} worker process(es). Training took "
        f"{report['job_seconds']:.0f} s summed over the jobs (each on one "
        f"worker: {report['job_seconds'] / settings.get('workers', 1) / 3600:.1f} "
        f"h of wall time); this report's run took {report['wall_seconds']:.0f} s"
        + (
            ", reusing the jobs logged by earlier runs (`--resume`)."
            if "--resume" in report["settings"].get("arguments", [])
            else "."
        )
    )
    if report["quick"]:
        intro = "Quick (smoke-test) settings: the numbers mean nothing. " + intro
    paper = [
        "",
        "## Beside Kazemnejad et al. (2023)",
        "",
        "Exact match on 21-40 symbols after training on 1-20; the paper's copy "
        "figures are its two copy variants.",
        "",
    ]
    paper_header = ["scheme", "paper"]
    for task in results:
        paper_header += [f"{task} (paper)", f"{task} (ours)"]
    paper += [
        "| " + " | ".join(paper_header) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * (len(paper_header) - 2)) + " |",
    ]
    for scheme, paper_name in PAPER_SCHEMES.items():
        if scheme not in schemes:
            continue
        cells = [f"`{scheme}`", paper_name]
        for task in results:
            cells.append(PAPER_RESULTS[task][paper_name])
            entry = results[task][scheme]
            summary = entry["summary"][buckets[1]]
            cells.append(
                summary["not_applicable"]
                if "not_applicable" in summary
                else fitted_cell(entry, buckets[1])
            )
        paper.append("| " + " | ".join(cells) + " |")
    if len(buckets) < 2:
        paper = []
    return "\n".join(["# Length generalization", "", intro, ""] + lines + paper) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, results = report["settings"], report["results"]
    buckets = [bucket_name(bucket) for bucket in settings["buckets"]]
    schemes = report["schemes"]
    figure, axes = plt.subplots(
        len(results),
        2,
        figsize=(19, 4.2 * len(results)),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1]},
    )
    width = 0.8 / len(buckets)
    for (axis, curve_axis), task in zip(axes, results):
        for index, bucket in enumerate(buckets):
            means, low, high, missing = [], [], [], []
            for position, scheme in enumerate(schemes):
                entry = results[task][scheme]
                summary = entry["summary"][bucket]
                fitted = [s for s, fits in entry["fits"].items() if fits]
                values = [entry["seeds"][s][bucket] for s in fitted]
                if index == 0:
                    values = [entry["seeds"][s][bucket] for s in entry["seeds"]]
                if "not_applicable" in summary or not values:
                    means.append(0.0)
                    low.append(0.0)
                    high.append(0.0)
                    missing.append(position)
                else:
                    means.append(float(np.mean(values)))
                    low.append(means[-1] - min(values))
                    high.append(max(values) - means[-1])
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
                label = "n/a"
                if (
                    "not_applicable"
                    not in results[task][schemes[position]]["summary"][bucket]
                ):
                    label = "not fit"
                axis.text(
                    offsets[position],
                    0.02,
                    label,
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                )
        axis.set_xticks(np.arange(len(schemes)))
        axis.set_xticklabels(schemes, rotation=35, ha="right", fontsize="small")
        axis.set_ylim(0.0, 1.05)
        axis.set_ylabel("exact match")
        axis.set_title(
            f"{task}: trained on 1-{settings['train_max']} symbols "
            "(longer buckets: seeds that fit)"
        )
        axis.legend(loc="upper right", fontsize="small")
        for scheme in schemes:
            entry = results[task][scheme]
            if "evaluated_from" in entry:
                continue
            curve = np.asarray(next(iter(entry["curve"].values())), dtype="float64")
            curve_axis.plot(
                curve[:, 0],
                curve[:, 1],
                linestyle="--" if is_randomized(scheme) else "-",
                label=scheme,
            )
        curve_axis.axhline(FIT_THRESHOLD, color="gray", linewidth=0.8)
        curve_axis.set_xlabel("training steps")
        curve_axis.set_ylabel("validation exact match (1st seed)")
        curve_axis.set_ylim(0.0, 1.02)
        curve_axis.set_title(f"{task}: fitting the training lengths")
        curve_axis.legend(fontsize="xx-small", ncol=2)
    figure.suptitle("Length generalization (mean over seeds, bars = min to max)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="Length generalization of position schemes on copy and reverse."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="toy sizes, a few steps, one seed, copy only: a smoke test",
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
    parser.add_argument("--tasks", nargs="+", choices=TASKS, metavar="TASK")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1")
    parser.add_argument("--max-steps", type=int, help="step cap per model")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes training models side by side, one thread each",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the jobs logged in OUTPUT_DIR/length_generalization.jobs.jsonl "
        "by an interrupted run with the same settings",
    )
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = parse_arguments(argv)
    start = time.perf_counter()
    settings = dict(QUICK if arguments.quick else FULL)
    for name in ("seeds", "max_steps", "batch_size", "learning_rate", "tasks"):
        if getattr(arguments, name) is not None:
            settings[name] = getattr(arguments, name)
    settings["workers"] = arguments.workers
    schemes = [scheme for scheme in SCHEMES if scheme in arguments.schemes]
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{'quick' if arguments.quick else 'full'} settings",
        flush=True,
    )
    tasks = [task for task in TASKS if task in settings["tasks"]]
    output_dir = arguments.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    job_log = output_dir / "length_generalization.jobs.jsonl"
    if not arguments.resume and job_log.exists():
        job_log.unlink()
    results = run_study(
        settings,
        tasks,
        schemes,
        log=lambda line: print(line, flush=True),
        workers=arguments.workers,
        job_log=job_log,
    )
    report = {
        "machine": machine_description(),
        "quick": arguments.quick,
        "settings": {
            **settings,
            "tasks": tasks,
            "dropout": 0.0,
            "fit_threshold": FIT_THRESHOLD,
            "rotary_scaling_factor": settings["buckets"][-1][1] / settings["train_max"],
            "rotary_original_max_length": table_length(settings),
            "learned_table_length": table_length(settings),
            "arguments": argv,
        },
        "schemes": schemes,
        "results": results,
        "wall_seconds": round(time.perf_counter() - start, 1),
        # Jobs resumed from the log took their time in an earlier run.
        "job_seconds": round(
            sum(
                seconds
                for task_results in results.values()
                for scheme, entry in task_results.items()
                if scheme not in SCALED_SCHEMES
                for seconds in entry["train_seconds"].values()
            ),
            1,
        ),
    }
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
