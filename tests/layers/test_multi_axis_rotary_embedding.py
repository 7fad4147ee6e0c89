import keras
import numpy as np
import pytest

from keras_posenc.layers.multi_axis_rotary_embedding import MultiAxisRotaryEmbedding
from keras_posenc.layers.multi_axis_rotary_embedding import default_sections
from keras_posenc.layers.positional_multi_head_attention import (
    PositionalMultiHeadAttention,
)
from keras_posenc.layers.rotary_embedding import RotaryEmbedding
from keras_posenc.preprocessing.multi_axis_positions import grid_position_ids
from keras_posenc.preprocessing.multi_axis_positions import multi_axis_position_ids
from keras_posenc.utils import to_numpy
from tests.harness import assert_config_round_trip
from tests.harness import run_layer_test


def _inputs(shape):
    return np.random.uniform(-1, 1, shape).astype("float32")


def _random_positions(batch, length, num_axes, high=50):
    return np.random.randint(0, high, (batch, length, num_axes)).astype("int32")


# Float64 numpy transcriptions of the reference implementations. HF works in
# (batch, heads, seq, head_dim) and unsqueezes cos/sin at axis 1; ours is
# (batch, seq, heads, head_dim), so cos/sin get their head axis at 2.


def hf_rotate_half(x):
    """HF transformers' `rotate_half`."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return np.concatenate([-x2, x1], axis=-1)


def hf_mrope_freqs(position_ids, head_dim, base):
    """`Qwen2VLRotaryEmbedding.forward`'s freqs: (3, batch, seq, head_dim / 2)."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype="float64") / head_dim)
    return np.asarray(position_ids, "float64")[..., None] * inv_freq


def hf_qwen2_vl(x, position_ids, mrope_section, base=10000.0):
    """HF `Qwen2VLRotaryEmbedding` + `apply_multimodal_rotary_pos_emb`.

    `position_ids` is HF's `(3, batch, seq)`.
    """
    x = np.asarray(x, "float64")
    freqs = hf_mrope_freqs(position_ids, x.shape[-1], base)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    mrope_section = mrope_section * 2
    splits = np.cumsum(mrope_section)[:-1]
    cos = np.concatenate(
        [m[i % 3] for i, m in enumerate(np.split(cos, splits, axis=-1))], axis=-1
    )[:, :, None]
    sin = np.concatenate(
        [m[i % 3] for i, m in enumerate(np.split(sin, splits, axis=-1))], axis=-1
    )[:, :, None]
    return x * cos + hf_rotate_half(x) * sin


def hf_qwen3_vl(x, position_ids, mrope_section, base=10000.0):
    """HF `Qwen3VLTextRotaryEmbedding` (`apply_interleaved_mrope`) + rotate_half."""
    x = np.asarray(x, "float64")
    freqs = hf_mrope_freqs(position_ids, x.shape[-1], base)
    freqs_t = freqs[0].copy()  # just overwrite the first dimension T
    for dim, offset in enumerate((1, 2), start=1):  # H, W
        length = mrope_section[dim] * 3
        idx = slice(offset, length, 3)
        freqs_t[..., idx] = freqs[dim, ..., idx]
    emb = np.concatenate([freqs_t, freqs_t], axis=-1)
    cos, sin = np.cos(emb)[:, :, None], np.sin(emb)[:, :, None]
    return x * cos + hf_rotate_half(x) * sin


def rope_vit_axial(x, t_x, t_y, theta=100.0):
    """naver-ai/rope-vit `compute_axial_cis` + `apply_rotary_emb`.

    `t_x`, `t_y`: `(batch, seq)` column and row of each token.
    """
    dim = x.shape[-1]
    freqs_x = 1.0 / theta ** (np.arange(0, dim, 4)[: dim // 4] / dim)
    freqs_y = 1.0 / theta ** (np.arange(0, dim, 4)[: dim // 4] / dim)
    freqs_x = np.asarray(t_x, "float64")[..., None] * freqs_x
    freqs_y = np.asarray(t_y, "float64")[..., None] * freqs_y
    freqs_cis = np.exp(1j * np.concatenate([freqs_x, freqs_y], axis=-1))[:, :, None]
    x = np.asarray(x, "float64")
    pairs = x.reshape(x.shape[:-1] + (-1, 2))
    rotated = (pairs[..., 0] + 1j * pairs[..., 1]) * freqs_cis
    return np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)


def hf_get_rope_index(input_tokens, image_grid_thw, spatial_merge_size=2):
    """HF `Qwen2VLModel.get_rope_index` for one sequence of text and images.

    Returns HF's `(3, length)` position ids.
    """
    vision_start, image_token = 151652, 151655
    image_nums = sum(
        input_tokens[i + 1] == image_token
        for i, token in enumerate(input_tokens[:-1])
        if token == vision_start
    )
    llm_pos_ids_list = []
    st = 0
    for image_index in range(image_nums):
        ed = input_tokens.index(image_token, st)
        t, h, w = image_grid_thw[image_index]
        llm_grid_t, llm_grid_h, llm_grid_w = (
            t,
            h // spatial_merge_size,
            w // spatial_merge_size,
        )
        text_len = ed - st
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0
        llm_pos_ids_list.append(
            np.broadcast_to(np.arange(text_len), (3, text_len)) + st_idx
        )
        shape = (llm_grid_t, llm_grid_h, llm_grid_w)
        t_index = np.broadcast_to(np.arange(llm_grid_t)[:, None, None], shape).ravel()
        h_index = np.broadcast_to(np.arange(llm_grid_h)[None, :, None], shape).ravel()
        w_index = np.broadcast_to(np.arange(llm_grid_w)[None, None, :], shape).ravel()
        llm_pos_ids_list.append(
            np.stack([t_index, h_index, w_index]) + text_len + st_idx
        )
        st = ed + llm_grid_t * llm_grid_h * llm_grid_w
    if st < len(input_tokens):
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0
        text_len = len(input_tokens) - st
        llm_pos_ids_list.append(
            np.broadcast_to(np.arange(text_len), (3, text_len)) + st_idx
        )
    return np.concatenate(llm_pos_ids_list, axis=1)


def test_layer_harness(tmp_path):
    run_layer_test(
        MultiAxisRotaryEmbedding,
        init_kwargs={"sections": [2, 1, 1], "interleave_sections": True},
        input_data=_inputs((2, 5, 2, 10)),
        expected_output_shape=(2, 5, 2, 10),
        expected_num_trainable_weights=0,
        call_kwargs={"positions": _random_positions(2, 5, 3)},
        tmp_path=tmp_path,
    )


def test_qwen2_vl_matches_hf():
    x = _inputs((2, 6, 2, 128))
    positions = _random_positions(2, 6, 3)
    # HF's position_ids are (3, batch, seq).
    expected = hf_qwen2_vl(x, positions.transpose(2, 0, 1), [16, 24, 24], 1000.0)
    layer = MultiAxisRotaryEmbedding(sections=[16, 24, 24], max_wavelength=1000)
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=positions)), expected, atol=1e-5
    )
    # sections=None is Qwen2-VL's split.
    assert default_sections(64) == [16, 24, 24]
    default = MultiAxisRotaryEmbedding(max_wavelength=1000)
    np.testing.assert_allclose(
        to_numpy(default(x, positions=positions)), expected, atol=1e-5
    )
    # Unbatched (seq, 3) positions, and uneven small sections.
    small = x[..., :16]
    expected = hf_qwen2_vl(small, positions[:1].transpose(2, 0, 1), [2, 4, 2])
    layer = MultiAxisRotaryEmbedding(sections=[2, 4, 2])
    np.testing.assert_allclose(
        to_numpy(layer(small, positions=positions[0])), expected, atol=1e-5
    )


def test_qwen3_vl_interleaved_matches_hf():
    x = _inputs((2, 6, 2, 128))
    positions = _random_positions(2, 6, 3)
    expected = hf_qwen3_vl(x, positions.transpose(2, 0, 1), [24, 20, 20])
    layer = MultiAxisRotaryEmbedding(sections=[24, 20, 20], interleave_sections=True)
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=positions)), expected, atol=1e-5
    )
    # The interleaving is real: it differs from Qwen2-VL's contiguous blocks.
    blocks = hf_qwen2_vl(x, positions.transpose(2, 0, 1), [24, 20, 20])
    assert np.max(np.abs(blocks - expected)) > 1e-2
    # sections=None with interleave_sections is Qwen3-VL's split.
    assert default_sections(64, interleave_sections=True) == [24, 20, 20]
    default = MultiAxisRotaryEmbedding(interleave_sections=True)
    np.testing.assert_allclose(
        to_numpy(default(x, positions=positions)), expected, atol=1e-5
    )
    small = x[..., :16]
    expected = hf_qwen3_vl(small, positions.transpose(2, 0, 1), [4, 2, 2])
    layer = MultiAxisRotaryEmbedding(sections=[4, 2, 2], interleave_sections=True)
    np.testing.assert_allclose(
        to_numpy(layer(small, positions=positions)), expected, atol=1e-5
    )


def test_per_axis_matches_rope_vit_axial():
    x = _inputs((2, 12, 2, 32))
    # (column, row) per token, as rope-vit's (t_x, t_y); fractional too.
    positions = np.random.uniform(0, 30, (2, 12, 2)).astype("float32")
    layer = MultiAxisRotaryEmbedding(
        sections=[8, 8],
        frequencies="per_axis",
        layout="interleaved",
        max_wavelength=100,
    )
    expected = rope_vit_axial(x, positions[..., 0], positions[..., 1])
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=positions)), expected, atol=1e-5
    )
    # A 3 x 4 patch grid: grid_position_ids reversed are rope-vit's init_t_xy.
    t = np.arange(12)
    t_x, t_y = t % 4, t // 4  # init_t_xy(end_x=4, end_y=3)
    reversed_ids = grid_position_ids(3, 4)[:, ::-1]
    np.testing.assert_array_equal(reversed_ids, np.stack([t_x, t_y], -1))
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=reversed_ids)),
        rope_vit_axial(x, t_x[None], t_y[None]),
        atol=1e-5,
    )


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_equal_axes_equal_rotary_embedding(layout):
    x = _inputs((2, 6, 2, 16))
    positions = np.array([[0, 3, 1, 100, 7, 2], [5, 6, 7, 8, 9, 4000]], "int32")
    for init_kwargs, rotary_dim in (
        ({"sections": [1, 2, 1]}, 8),
        ({"sections": [2, 1, 1], "interleave_sections": True}, 8),
        # Partial rotary: features from 2 * sum(sections) pass through.
        ({"sections": [1, 1]}, 4),
        ({}, 16),
    ):
        layer = MultiAxisRotaryEmbedding(
            layout=layout, max_wavelength=500, **init_kwargs
        )
        reference = RotaryEmbedding(
            layout=layout, max_wavelength=500.0, rotary_dim=rotary_dim
        )
        num_axes = layer.num_position_axes
        expected = to_numpy(reference(x, positions=positions))
        # (batch, seq) positions, and (batch, seq, num_axes) all equal.
        equal_axes = np.repeat(positions[..., None], num_axes, axis=-1)
        for given in (positions, equal_axes):
            np.testing.assert_array_equal(to_numpy(layer(x, positions=given)), expected)
        # start_index, (seq,) positions and (seq, num_axes) all equal.
        expected = to_numpy(reference(x, start_index=11))
        single = np.repeat(np.arange(11, 17)[:, None], num_axes, axis=-1)
        np.testing.assert_array_equal(to_numpy(layer(x, start_index=11)), expected)
        for given in (np.arange(11, 17), single):
            np.testing.assert_array_equal(to_numpy(layer(x, positions=given)), expected)


def _scores(layer, query, key, query_positions, key_positions):
    """(query, key) matrix of <R(P) q_i, R(P') k_j> through `rotate`."""
    rotated_query = to_numpy(layer.rotate(query, query_positions))[0, :, 0]
    rotated_key = to_numpy(layer.rotate(key, key_positions, is_key=True))[0, :, 0]
    return rotated_query.astype("float64") @ rotated_key.astype("float64").T


def test_dot_product_depends_only_on_position_differences():
    # The same query and key vector at every position: (1, L, 1, 16).
    query = np.repeat(_inputs((1, 1, 1, 16)), 4, axis=1)
    key = np.repeat(_inputs((1, 1, 1, 16)), 4, axis=1)
    for init_kwargs in (
        {"sections": [2, 3, 3]},
        {"sections": [4, 2, 2], "interleave_sections": True, "layout": "interleaved"},
        {"sections": [4, 4], "frequencies": "per_axis", "max_wavelength": 100},
    ):
        layer = MultiAxisRotaryEmbedding(**init_kwargs)
        num_axes = layer.num_position_axes
        query_positions = _random_positions(1, 4, num_axes, high=30)
        key_positions = _random_positions(1, 4, num_axes, high=30)
        scores = _scores(layer, query, key, query_positions, key_positions)
        for axis in range(num_axes):
            shift = np.zeros(num_axes, "int32")
            shift[axis] = 37
            shifted = _scores(
                layer, query, key, query_positions + shift, key_positions + shift
            )
            np.testing.assert_allclose(shifted, scores, atol=2e-4)
            # Shifting the queries alone on this axis changes the scores.
            moved = _scores(layer, query, key, query_positions + shift, key_positions)
            assert np.max(np.abs(moved - scores)) > 1e-3, (init_kwargs, axis)


def test_config_round_trip_gives_identical_outputs():
    x = _inputs((2, 6, 2, 16))
    positions = _random_positions(2, 6, 3)
    for init_kwargs in (
        {},
        {"sections": [3, 1, 1], "interleave_sections": True, "max_wavelength": 50},
        {"sections": [2, 2], "frequencies": "per_axis", "layout": "interleaved"},
    ):
        layer = MultiAxisRotaryEmbedding(**init_kwargs)
        assert_config_round_trip(layer)
        revived = MultiAxisRotaryEmbedding.from_config(layer.get_config())
        given = positions[..., : layer.num_position_axes]
        np.testing.assert_array_equal(
            to_numpy(revived(x, positions=given)), to_numpy(layer(x, positions=given))
        )
    assert layer.get_config()["sections"] == [2, 2]
    assert MultiAxisRotaryEmbedding().get_config()["sections"] is None


def test_compute_cos_sin_and_dtypes():
    layer = MultiAxisRotaryEmbedding(
        sections=[1, 2], frequencies="per_axis", dtype="mixed_bfloat16"
    )
    layer.build((None, None, 2, 8))
    positions = np.array([[[0, 1], [2, 3], [5, 700]]], "int32")
    cos, sin = layer.compute_cos_sin(positions)
    assert keras.backend.standardize_dtype(cos.dtype) == "float32"
    assert tuple(cos.shape) == (1, 3, 6)
    # Axis 0: one pair at theta 1; axis 1: two pairs at 1 and 10000 ** -0.5.
    angles = positions[..., [0, 1, 1]] * np.array([1.0, 1.0, 10000.0**-0.5])
    angles = np.concatenate([angles, angles], -1)
    np.testing.assert_allclose(to_numpy(cos), np.cos(angles), atol=1e-5)
    np.testing.assert_allclose(to_numpy(sin), np.sin(angles), atol=1e-5)
    out = layer(_inputs((1, 3, 8)), positions=positions)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


INVALID_ARGUMENTS = [
    ({"sections": []}, "sections"),
    ({"sections": [0, 2]}, "sections"),
    ({"sections": [2, -1]}, "sections"),
    ({"sections": [2.0, 2]}, "sections"),
    ({"sections": [True, 2]}, "sections"),
    ({"sections": 4}, "sections"),
    ({"sections": "thw"}, "sections"),
    # Interleaving needs num_axes * sections[a] <= sum(sections) for a >= 1.
    ({"sections": [16, 24, 24], "interleave_sections": True}, "sections"),
    ({"layout": "full"}, "layout"),
    ({"frequencies": "axial"}, "frequencies"),
    ({"interleave_sections": 1}, "interleave_sections"),
    ({"interleave_sections": "yes"}, "interleave_sections"),
    ({"interleave_sections": True, "frequencies": "per_axis"}, "interleave_sections"),
    ({"max_wavelength": 0}, "max_wavelength"),
    ({"max_wavelength": True}, "max_wavelength"),
]


def test_invalid_arguments():
    for kwargs, argument in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=f"`{argument}`") as info:
            MultiAxisRotaryEmbedding(**kwargs)
        assert repr(kwargs[argument])[:3] in str(info.value), kwargs


def test_invalid_inputs():
    x = _inputs((2, 5, 2, 8))
    layer = MultiAxisRotaryEmbedding(sections=[1, 1, 2])
    for positions, message in (
        (_random_positions(2, 5, 2), "`positions`.*num_axes=3"),
        (np.zeros((5, 4), "int32"), "`positions`.*num_axes=3"),
        (_random_positions(2, 4, 3), "`positions`.*sequence length 5"),
        (_random_positions(3, 5, 3), "`positions`.*batch size 2"),
        (np.arange(4), "`positions`"),
    ):
        with pytest.raises(ValueError, match=message):
            layer(x, positions=positions)
    with pytest.raises(ValueError, match=r"sum\(`sections`\).*feature_dim=6"):
        MultiAxisRotaryEmbedding(sections=[1, 1, 2])(_inputs((2, 5, 6)))
    with pytest.raises(ValueError, match="feature_dim=7"):
        MultiAxisRotaryEmbedding()(_inputs((2, 5, 7)))
    with pytest.raises(ValueError, match="inputs.shape"):
        MultiAxisRotaryEmbedding()(np.zeros((2, 8), "float32"))
    with pytest.raises(TypeError, match="inputs"):
        layer(np.zeros((2, 5, 8), "int32"))


def test_check_attention():
    MultiAxisRotaryEmbedding().check_attention(num_heads=2, key_dim=16)
    MultiAxisRotaryEmbedding(sections=[2, 3, 3]).check_attention(2, 16)
    # Odd, or too small for the sections.
    with pytest.raises(ValueError, match="feature_dim=7"):
        MultiAxisRotaryEmbedding().check_attention(num_heads=2, key_dim=7)
    with pytest.raises(ValueError, match="feature_dim=8"):
        MultiAxisRotaryEmbedding(sections=[2, 3, 3]).check_attention(2, 8)
    # The attention layer asks at construction.
    with pytest.raises(ValueError, match="`key_dim` does not suit"):
        PositionalMultiHeadAttention(
            num_heads=2, key_dim=8, position=MultiAxisRotaryEmbedding(sections=[4, 4])
        )
    attention = PositionalMultiHeadAttention(
        num_heads=2, key_dim=8, position=MultiAxisRotaryEmbedding(sections=[2, 2])
    )
    assert attention.position_layer.num_position_axes == 2


def test_multi_axis_position_ids_by_hand():
    # 4 text tokens, a 1 x 2 x 3 grid, 2 text tokens, a 2 x 2 x 2 grid, 3 text.
    ids = multi_axis_position_ids([4, (1, 2, 3), 2, (2, 2, 2), 3])
    assert ids.dtype == np.int32 and ids.shape == (23, 3)

    def text(*values):
        return [[value] * 3 for value in values]

    expected = (
        text(0, 1, 2, 3)
        # Offset 4: (4 + t, 4 + h, 4 + w) in t, h, w order; next start 4 + 3.
        + [[4, 4, 4], [4, 4, 5], [4, 4, 6], [4, 5, 4], [4, 5, 5], [4, 5, 6]]
        + text(7, 8)
        # Offset 9; next start 9 + 2.
        + [[9, 9, 9], [9, 9, 10], [9, 10, 9], [9, 10, 10]]
        + [[10, 9, 9], [10, 9, 10], [10, 10, 9], [10, 10, 10]]
        + text(11, 12, 13)
    )
    np.testing.assert_array_equal(ids, expected)
    # Text only: arange on every axis; a grid first starts at 0.
    np.testing.assert_array_equal(multi_axis_position_ids([5]), text(0, 1, 2, 3, 4))
    np.testing.assert_array_equal(
        multi_axis_position_ids([(1, 1, 2), 1]), [[0, 0, 0], [0, 0, 1], [2, 2, 2]]
    )


def test_multi_axis_position_ids_match_hf_get_rope_index():
    # Token ids: text segments end with <|vision_start|> before a grid, whose
    # tokens are <|image_pad|>; HF's grid_thw is before the 2 x 2 merge.
    vision_start, image_token, text_token = 151652, 151655, 9
    for segments in (
        [4, (1, 2, 3), 2, (2, 2, 2), 3],
        [1, (1, 3, 2), 1, (1, 1, 1)],
        [2, (3, 1, 2), 2, (1, 4, 4), 5],
    ):
        tokens, grids = [], []
        for index, segment in enumerate(segments):
            if isinstance(segment, int):
                before_grid = int(index + 1 < len(segments))
                tokens += [text_token] * (segment - before_grid)
                tokens += [vision_start] * before_grid
            else:
                t, h, w = segment
                tokens += [image_token] * (t * h * w)
                grids.append((t, 2 * h, 2 * w))
        np.testing.assert_array_equal(
            multi_axis_position_ids(segments), hf_get_rope_index(tokens, grids).T
        )


def test_grid_position_ids_and_bad_arguments():
    ids = grid_position_ids(2, 3)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])
    assert grid_position_ids(1, 1).tolist() == [[0, 0]]
    for call, message in (
        (lambda: multi_axis_position_ids([(1, 2)]), "segments"),
        (lambda: multi_axis_position_ids([(1, 0, 2)]), "segments"),
        (lambda: multi_axis_position_ids([-1]), "segments"),
        (lambda: multi_axis_position_ids([2.0]), "segments"),
        (lambda: multi_axis_position_ids(5), "segments"),
        (lambda: grid_position_ids(0, 2), "height"),
        (lambda: grid_position_ids(2, 1.5), "width"),
    ):
        with pytest.raises(ValueError, match=message):
            call()
