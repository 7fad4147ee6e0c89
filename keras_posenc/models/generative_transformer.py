"""The generation core of `TransformerLM` and `Seq2SeqTransformer`.

keras-hub's split: `CausalLM` owns `generate`, the sampler loop and the
cache; `Seq2SeqLM` extends it. Here `GenerativeTransformer` owns `generate`
(argument checks in numpy), `generate_step` (the tensor-only loop, also
traced into serving graphs) and the keras-hub sampler call; a model supplies
five hooks: `_generation_inputs` (numpy checks of its inputs),
`_generation_prompt` (the sampler's prompt and first index),
`_initial_cache` (the cache after one pass over the prompt),
`_cached_logits` (one cached step) and `_full_logits` (the uncached
reference).
"""

import keras
import numpy as np
from keras import ops

from keras_posenc.models.generation import check_generate_arguments
from keras_posenc.models.generation import check_no_repeat_ngram_size
from keras_posenc.models.generation import clear_after_stop
from keras_posenc.models.generation import get_sampler
from keras_posenc.models.generation import next_token_scores
from keras_posenc.models.transformer_model import TransformerModel
from keras_posenc.utils.validation import check_positive_int

GENERATE_ARGUMENTS = """
            max_length: int. Length of the output (prompt or start token
                included); at most the model's `max_length`, its default.
            sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `keras_hub.samplers.Sampler` instance. Names take keras-hub's
                defaults (`top_k`: k=5; `top_p`: p=0.1, nearly greedy;
                `beam`: 5 beams); pass e.g. `TopPSampler(p=0.9)` for others.
                Defaults to `"greedy"`.
            stop_token_id: int or None. Generation stops once every sequence
                has produced it; later ids are set to 0.
            use_cache: bool. Decode with the key/value cache (one token per
                step) if True, else rerun the whole model at each step (the
                slow reference). Defaults to `True`.
            start_token_id: int or None. Encoder-decoder models: the first
                decoder token (None means 1). Decoder-only models: must be
                None (each prompt holds its own first tokens).
            no_repeat_ngram_size: int or None. If set, an id that would
                repeat an n-gram of this size already in the sequence (prompt
                included) is never chosen, with every sampler; a guard against
                repetition loops. Defaults to `None` (no guard)."""


class GenerativeTransformer(TransformerModel):
    """Base of the models that generate tokens with a key/value cache."""

    def generate(
        self,
        inputs,
        max_length=None,
        sampler="greedy",
        stop_token_id=None,
        use_cache=True,
        start_token_id=None,
        no_repeat_ngram_size=None,
    ):
        max_length = check_generate_arguments(
            max_length, self.max_length, stop_token_id, use_cache
        )
        for name, value in (
            ("stop_token_id", stop_token_id),
            ("start_token_id", start_token_id),
        ):
            if value is None:
                continue
            check_positive_int(name, value)
            if value >= self.vocabulary_size:
                raise ValueError(
                    f"`{name}` must be below vocabulary_size={self.vocabulary_size}."
                    f" Received: {name}={value}"
                )
        sampler = self._named_sampler(sampler)
        inputs = self._generation_inputs(inputs, max_length, start_token_id)
        output = self._compiled_generate_step()(
            ops.convert_to_tensor(inputs, dtype="int32"),
            max_length,
            sampler=sampler,
            stop_token_id=stop_token_id,
            use_cache=use_cache,
            start_token_id=start_token_id,
            no_repeat_ngram_size=check_no_repeat_ngram_size(no_repeat_ngram_size),
        )
        return np.asarray(ops.convert_to_numpy(output)).astype("int32")

    def _named_sampler(self, sampler):
        """One keras-hub sampler per name, so compiled loops are reused."""
        samplers = self.__dict__.setdefault("_samplers", {})
        if isinstance(sampler, str) and sampler in samplers:
            return samplers[sampler]
        resolved = get_sampler(sampler)
        if isinstance(sampler, str):
            samplers[sampler] = resolved
        return resolved

    def _compiled_generate_step(self):
        """`generate_step` compiled once per model and argument set.

        As keras-hub's `CausalLM.make_generate_function`: on JAX a `jax.jit`
        of a stateless step (the variables go in as arguments, the sampler's
        seed state comes back out); on TensorFlow a `tf.function`; PyTorch
        runs eagerly under `torch.no_grad()` (as keras-hub does: otherwise
        every op of every step records an autograd graph for the weights).
        Non-tensor arguments are static: a new `max_length`, sampler or stop
        token compiles a new step.
        """
        compiled = self.__dict__.get("_generate_function")
        if compiled is not None:
            return compiled
        backend = keras.config.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            compiled = tf.function(self.generate_step, reduce_retracing=True)
        elif backend == "jax":
            compiled = self._jax_generate_function()
        else:
            import torch

            def compiled(*args, **kwargs):
                with torch.no_grad():
                    return self.generate_step(*args, **kwargs)

        self.__dict__["_generate_function"] = compiled
        return compiled

    def _jax_generate_function(self):
        import functools

        import jax

        @functools.partial(
            jax.jit,
            static_argnames=(
                "max_length",
                "sampler",
                "stop_token_id",
                "use_cache",
                "start_token_id",
                "no_repeat_ngram_size",
            ),
        )
        def stateless_step(inputs, state, max_length, sampler, **static):
            sampler_values, trainable_values, non_trainable_values = state
            mapping = list(zip(sampler.variables, sampler_values))
            mapping += zip(self.trainable_variables, trainable_values)
            mapping += zip(self.non_trainable_variables, non_trainable_values)
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = self.generate_step(
                    inputs, max_length, sampler=sampler, **static
                )
            new_sampler_values = []
            for variable, value in zip(sampler.variables, sampler_values):
                new_value = scope.get_current_value(variable)
                new_sampler_values.append(value if new_value is None else new_value)
            return outputs, new_sampler_values

        def generate_function(inputs, max_length, sampler, **static):
            state = (
                [variable.value for variable in sampler.variables],
                [variable.value for variable in self.trainable_variables],
                [variable.value for variable in self.non_trainable_variables],
            )
            outputs, sampler_values = stateless_step(
                inputs, state, max_length=max_length, sampler=sampler, **static
            )
            # Only the sampler's seeds change; the model's weights never do.
            for variable, value in zip(sampler.variables, sampler_values):
                variable.assign(value)
            return outputs

        return generate_function

    def generate_step(
        self,
        inputs,
        max_length=None,
        sampler="greedy",
        stop_token_id=None,
        use_cache=True,
        start_token_id=None,
        no_repeat_ngram_size=None,
    ):
        sampler = get_sampler(sampler)
        inputs = ops.cast(inputs, "int32")
        token_ids, index, context = self._generation_prompt(
            inputs, max_length, start_token_id
        )
        prompt_mask = ops.not_equal(token_ids, 0)

        if use_cache:
            hidden_states, cache = self._initial_cache(token_ids, context)

            def next(prompt, cache, index):
                token = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])
                logits, hidden_states, cache = self._cached_logits(
                    token, cache, index - 1
                )
                return (
                    next_token_scores(
                        ops.squeeze(logits, axis=1), prompt, index, no_repeat_ngram_size
                    ),
                    ops.squeeze(hidden_states, axis=1),
                    cache,
                )

        else:
            hidden_states, cache = None, context

            def next(prompt, cache, index):
                logits = self._full_logits(prompt, cache)
                logits = ops.slice(
                    logits,
                    [0, index - 1, 0],
                    [ops.shape(prompt)[0], 1, self.vocabulary_size],
                )
                return (
                    next_token_scores(
                        ops.squeeze(logits, axis=1), prompt, index, no_repeat_ngram_size
                    ),
                    None,
                    cache,
                )

        output = sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=prompt_mask,
            stop_token_ids=None if stop_token_id is None else (stop_token_id,),
            hidden_states=hidden_states,
            model=self,
        )
        return clear_after_stop(ops.cast(output, "int32"), prompt_mask, stop_token_id)

    def empty_cache(self, batch_size, length):
        """Zeros `(batch, num_layers, entries, length, num_heads, head_dim)`.

        `entries` is 2 (keys, values), or 3 for a scheme with a token state
        (the forgetting bias). Batch comes first so that keras-hub's beam
        search can repeat and reorder the cache with the beams.
        """
        head_dim = self.hidden_dim // self.num_heads
        entries = self.decoder_layers[0].self_attention.cache_entries
        shape = (batch_size, self.num_layers, entries, length, self.num_heads, head_dim)
        return ops.zeros(shape, dtype=self._model_dtype_policy.compute_dtype)

    def decode_with_cache(
        self, layers, x, cache, cache_update_index, final_norm, **block_kwargs
    ):
        """Runs decoder `layers` on new embeddings `x` against the cache.

        Returns `(logits, hidden_states, cache)` as `call_with_cache` does.
        """
        # In the cache every slot up to the query is a real token (later
        # slots are hidden by the causal mask), so no padding mask is used.
        no_padding = ops.ones(ops.shape(x)[:2], dtype="bool")
        caches = []
        for index, layer in enumerate(layers):
            x, layer_cache = layer(
                x,
                decoder_padding_mask=no_padding,
                self_attention_cache=cache[:, index],
                self_attention_cache_update_index=cache_update_index,
                training=False,
                **block_kwargs,
            )
            caches.append(layer_cache)
        if final_norm is not None:
            x = final_norm(x)
        return self.logits_dense(x), x, ops.stack(caches, axis=1)


GenerativeTransformer.generate.__doc__ = f"""Generates token ids with a sampler.

        The prompt (or the encoded source) is run once to fill the key/value
        cache; each step then runs only the newest token. keras-hub is
        needed here only.

        Args:
            inputs: int array, tensor or list of lists `(batch, length)`,
                right-padded or left-padded with 0: the prompts of a
                decoder-only model, the sources of an encoder-decoder model.
                Left-padded rows are shifted to the left first, so their
                tokens take positions `0, 1, ...` as unpadded ones do; a row
                with padding inside raises a `ValueError` naming it.{GENERATE_ARGUMENTS}

        Returns:
            Numpy int32 array `(batch, max_length)`: prompts (shifted to the
            left) and continuations (decoder-only), or decoded targets
            starting with the start token (encoder-decoder).
        """

GenerativeTransformer.generate_step.__doc__ = f"""Tensor-only core of `generate()`.

        Also traced into serving graphs by `export_for_serving`.

        Unlike `generate()`, it checks nothing, so that it runs inside a
        `tf.function`.

        Args:
            inputs: int tensor `(batch, length)`, right-padded with 0: prompts
                of at least one id (decoder-only; padded up to `max_length`
                here), or sources of at most the model's `max_length` ids
                (encoder-decoder).{GENERATE_ARGUMENTS}

        Returns:
            Int32 tensor `(batch, max_length)`, as `generate()` returns.
        """
