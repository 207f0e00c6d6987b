import pytest
import torch

from vtok_lit.core.frame_encoders import ConvFrameEncoder, FrameEncoder
from vtok_lit.core.tokenizers import (
    FrameSamplingTokenizer,
    KeyFrameTokenizer,
    VTokTokenizer,
    merge_to_grid_tokens,
    pool_to_grid_tokens,
)
from vtok_lit.core.tokens import TokenKind

GRID = 4
CHANNELS = 6


class PresetFeatures(FrameEncoder):
    """Returns preset ``(N, C, h, w)`` features: frame n of the clips (counting through the batch, see
    :func:`clips`) gets ``features[n]``, so the test controls them and sees which frames were encoded."""

    config_identity = "preset"

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features
        self.out_channels = features.shape[1]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.encoded = frames[:, 0, 0, 0].long()
        assert self.encoded.max() < len(self.features)
        return self.features[self.encoded]


def clips(batch: int, num_frames: int) -> torch.Tensor:
    """``(batch, num_frames, 3, 8, 8)`` clips whose frame n, counting through the batch, is filled with n."""
    return (
        torch.arange(batch * num_frames, dtype=torch.float32)
        .view(batch, num_frames, 1, 1, 1)
        .expand(-1, -1, 3, 8, 8)
    )


def make(tokenizer_class, features: torch.Tensor, **options):
    torch.manual_seed(0)
    return tokenizer_class(PresetFeatures(features), token_dim=8, grid_size=GRID, **options)


def tokens_of(tokenizer, batch: int, num_frames: int) -> torch.Tensor:
    return tokenizer(clips(batch, num_frames)).tokens


def changed_positions(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """The sequence positions whose tokens differ, ``(B, L, D)`` tensors."""
    return (before - after).abs().amax(dim=(0, 2)).gt(1e-6).nonzero().flatten().tolist()


def test_pool_to_grid_tokens_holds_all_channels_of_one_cell_row_major():
    features = torch.randn(2, CHANNELS, 8, 8)
    tokens = pool_to_grid_tokens(features, GRID)
    assert tokens.shape == (2, GRID * GRID, CHANNELS)
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        cell = features[:, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean(dim=(-2, -1))
        torch.testing.assert_close(tokens[:, r * GRID + c], cell)


def test_merge_to_grid_tokens_holds_the_four_quarters_of_one_cell_row_major():
    features = torch.randn(2, CHANNELS, 8, 8)
    tokens = merge_to_grid_tokens(features, GRID)
    assert tokens.shape == (2, GRID * GRID, 4 * CHANNELS)
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        quarters = features[:, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].flatten(2).transpose(1, 2)
        torch.testing.assert_close(tokens[:, r * GRID + c], quarters.flatten(1))


def test_merge_to_grid_tokens_takes_any_feature_map_size():
    """A 7x7 map (a ViT-B/32 at 224 px) on a 4x4 grid: each quarter averages its share of the map."""
    features = torch.randn(1, CHANNELS, 7, 7)
    tokens = merge_to_grid_tokens(features, GRID)
    assert tokens.shape == (1, GRID * GRID, 4 * CHANNELS)
    torch.testing.assert_close(tokens[0, 0, :CHANNELS], features[0, :, 0, 0])


@pytest.mark.parametrize("cell_pooling", ["mean", "merge"])
def test_only_merge_pooling_tells_apart_two_cells_of_the_same_mean(cell_pooling):
    """An object's shape is the layout of its features inside a cell: swapping a cell's left and right
    halves keeps their mean, so "mean" pooling gives the same token and "merge" another."""
    num_frames = 3
    features = torch.randn(num_frames, CHANNELS, 8, 8)
    tokenizer = make(KeyFrameTokenizer, features, cell_pooling=cell_pooling)
    before = tokens_of(tokenizer, 1, num_frames)
    mirrored = features.clone()
    mirrored[0, :, 2:4, 4:6] = features[0, :, 2:4, 4:6].flip(-1)
    tokenizer.frame_encoder.features = mirrored
    changed = changed_positions(before, tokens_of(tokenizer, 1, num_frames))
    assert changed == ([1 * GRID + 2] if cell_pooling == "merge" else [])


def test_an_unknown_cell_pooling_is_named():
    with pytest.raises(ValueError, match="cell_pooling='max'"):
        make(VTokTokenizer, torch.randn(2, CHANNELS, 8, 8), cell_pooling="max")


@pytest.mark.parametrize("cell_pooling", ["mean", "merge"])
@pytest.mark.parametrize("tokenizer_class", [VTokTokenizer, KeyFrameTokenizer])
@pytest.mark.parametrize("key_frame", ["first", "middle"])
@pytest.mark.parametrize(("row", "col"), [(0, 0), (1, 2), (3, 3)])
def test_a_key_frame_cell_changes_only_its_spatial_token(tokenizer_class, key_frame, row, col, cell_pooling):
    num_frames, cells = 5, GRID * GRID
    features = torch.randn(num_frames, CHANNELS, 8, 8)
    tokenizer = make(tokenizer_class, features, key_frame=key_frame, cell_pooling=cell_pooling)
    key = tokenizer.key_frame_index(num_frames)
    before = tokens_of(tokenizer, 1, num_frames)
    for channel in range(CHANNELS):  # the token depends on every channel of its cell
        tokenizer.frame_encoder.features = features.clone()
        tokenizer.frame_encoder.features[key, channel, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2] += 1.0
        after = tokens_of(tokenizer, 1, num_frames)
        assert [p for p in changed_positions(before, after) if p < cells] == [row * GRID + col]


def test_a_frame_cell_changes_only_its_frame_token():
    num_frames, cells = 3, GRID * GRID
    features = torch.randn(num_frames, CHANNELS, 8, 8)
    tokenizer = make(FrameSamplingTokenizer, features)
    before = tokens_of(tokenizer, 1, num_frames)
    tokenizer.frame_encoder.features = features.clone()
    tokenizer.frame_encoder.features[2, 3, 4:6, 2:4] -= 1.0  # frame 2, cell (2, 1), one channel
    assert changed_positions(before, tokens_of(tokenizer, 1, num_frames)) == [2 * cells + 2 * GRID + 1]


@pytest.mark.parametrize("num_frames", [16, 32])
@pytest.mark.parametrize("stride", [1, 2])
def test_token_counts_and_layout(num_frames, stride):
    cells = GRID * GRID
    features = torch.randn(2 * num_frames, CHANNELS, 4, 4)
    vtok = make(VTokTokenizer, features, temporal_stride=stride)
    tokenizers = [vtok, make(FrameSamplingTokenizer, features), make(KeyFrameTokenizer, features)]
    for tokenizer in tokenizers:
        tokens = tokenizer(clips(2, num_frames))
        assert len(tokens) == tokenizer.num_tokens(num_frames)
        assert tokens.tokens.shape == (2, len(tokens), 8)
        assert tokens.kinds.dtype == tokens.frame_index.dtype == torch.long
        assert tokens.kinds.shape == tokens.frame_index.shape == (len(tokens),)
        assert not tokens.padding_mask.any() and tokens.padding_mask.shape == (2, len(tokens))
    num_residual = -(-(num_frames - 1) // stride)
    assert vtok.num_tokens(num_frames) == cells + num_residual
    assert tokenizers[1].num_tokens(num_frames) == num_frames * cells
    assert tokenizers[2].num_tokens(num_frames) == cells

    tokens = vtok(clips(2, num_frames))
    assert tokens.kinds.tolist() == [TokenKind.SPATIAL] * cells + [TokenKind.RESIDUAL] * num_residual
    assert tokens.frame_index.tolist() == [0] * cells + list(range(1, num_frames, stride))
    frames = tokenizers[1](clips(2, num_frames))
    assert frames.kinds.unique().tolist() == [TokenKind.FRAME]
    assert frames.frame_index.tolist() == [t for t in range(num_frames) for _ in range(cells)]


def test_a_middle_key_frame_is_left_out_of_the_residual_groups():
    features = torch.randn(16, CHANNELS, 4, 4)
    tokenizer = make(VTokTokenizer, features, key_frame="middle", temporal_stride=2)
    tokens = tokenizer(clips(1, 16))
    assert tokens.frame_index.tolist() == [8] * 16 + [0, 2, 4, 6, 9, 11, 13, 15]


@pytest.mark.parametrize(("key_frame", "expected"), [("first", 0), ("middle", 3), (2, 2), (-1, 6)])
def test_key_frame_options(key_frame, expected):
    tokenizer = make(KeyFrameTokenizer, torch.randn(7, CHANNELS, 4, 4), key_frame=key_frame)
    assert tokenizer.key_frame_index(7) == expected
    assert tokenizer(clips(1, 7)).frame_index.unique().tolist() == [expected]


def test_the_key_frame_tokenizer_encodes_the_key_frame_alone():
    features = torch.randn(2 * 5, CHANNELS, 4, 4)
    key_frame_only = make(KeyFrameTokenizer, features, key_frame="middle")
    tokens = key_frame_only(clips(2, 5))
    assert key_frame_only.frame_encoder.encoded.tolist() == [2, 7], "the encoder saw more than the key frames"
    # The same tokens as from the features of every frame (what a feature cache holds).
    every_frame = key_frame_only.tokenize_features(key_frame_only.encode_frames(clips(2, 5)))
    torch.testing.assert_close(tokens.tokens, every_frame.tokens)


def test_bad_options_are_clear_errors():
    features = torch.randn(4, CHANNELS, 4, 4)
    with pytest.raises(ValueError, match="key_frame=7 is out of range for a clip of T=4"):
        make(VTokTokenizer, features, key_frame=7)(clips(1, 4))
    with pytest.raises(ValueError, match="key_frame='last'"):
        make(KeyFrameTokenizer, features, key_frame="last")
    with pytest.raises(ValueError, match="residual_pooling='max'"):
        make(VTokTokenizer, features, residual_pooling="max")
    with pytest.raises(ValueError, match="temporal_stride"):
        make(VTokTokenizer, features, temporal_stride=0)
    too_long = make(FrameSamplingTokenizer, torch.randn(5, CHANNELS, 4, 4), max_frames=4)
    with pytest.raises(ValueError, match="T=5.*max_frames=4"):
        too_long(clips(1, 5))


def residual_tokens_for_static_video(residual_features: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual tokens of a clip of 5 copies of one random frame, and g_phi(0) + frame embeddings."""
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(
        ConvFrameEncoder(channels=8, patch_size=4),
        token_dim=8,
        grid_size=2,
        residual_features=residual_features,
    )
    frame = torch.rand(1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    tokens = tokenizer(frame.expand(1, 5, -1, -1, -1))
    g_phi_of_zero = tokenizer.residual_mlp(torch.zeros(8)) + tokenizer.frame_embedding.weight[1:5]
    return tokens.tokens[0, 4:], g_phi_of_zero


def test_a_static_video_gives_g_phi_of_zero_whatever_its_content():
    for seed in (1, 2):
        residual, g_phi_of_zero = residual_tokens_for_static_video("residual", seed)
        torch.testing.assert_close(residual, g_phi_of_zero)
    absolute_1, g_phi_of_zero = residual_tokens_for_static_video("absolute", 1)
    absolute_2, _ = residual_tokens_for_static_video("absolute", 2)
    assert not torch.allclose(absolute_1, g_phi_of_zero)
    assert not torch.allclose(absolute_1, absolute_2)


def test_group_reductions():
    features = torch.randn(5, CHANNELS, 4, 4)  # key 0; groups of stride 2: frames (1, 2) and (3, 4)
    mean = make(VTokTokenizer, features, temporal_stride=2)
    subsample = make(VTokTokenizer, features, temporal_stride=2, group_reduction="subsample")
    pooled = (features - features[:1]).mean(dim=(-2, -1))
    positions = mean.frame_embedding.weight[[1, 3]]
    grouped_mean = torch.stack([pooled[1:3].mean(0), pooled[3:5].mean(0)])
    # pooled_residuals is what g_phi reads, one row per residual token.
    torch.testing.assert_close(mean.pooled_residuals(features[None])[0], grouped_mean)
    torch.testing.assert_close(subsample.pooled_residuals(features[None])[0], pooled[[1, 3]])
    expected_mean = mean.residual_mlp(grouped_mean) + positions
    expected_subsample = subsample.residual_mlp(pooled[[1, 3]]) + positions
    torch.testing.assert_close(tokens_of(mean, 1, 5)[0, -2:], expected_mean)
    torch.testing.assert_close(tokens_of(subsample, 1, 5)[0, -2:], expected_subsample)


def test_one_tokenizer_serves_clips_of_several_lengths():
    # Layout and residual-group indices are built once per T and reused: a T=9 clip between two T=5
    # clips must get its own, and each clip the tokens a fresh tokenizer gives it.
    features = {num_frames: torch.randn(1, num_frames, CHANNELS, 4, 4) for num_frames in (5, 9)}
    shared = make(VTokTokenizer, torch.empty(0, CHANNELS, 4, 4), temporal_stride=2)
    for num_frames in (5, 9, 5):
        fresh = make(VTokTokenizer, torch.empty(0, CHANNELS, 4, 4), temporal_stride=2)
        tokens = shared.tokenize_features(features[num_frames])
        expected = fresh.tokenize_features(features[num_frames])
        torch.testing.assert_close(tokens.tokens, expected.tokens)
        assert tokens.frame_index.tolist() == [0] * GRID**2 + list(range(1, num_frames, 2))
        assert len(tokens) == shared.num_tokens(num_frames)


def test_attention_pooling_starts_as_mean_pooling_and_learns():
    features = torch.randn(2 * 6, CHANNELS, 4, 4)
    mean = make(VTokTokenizer, features)
    attention = make(VTokTokenizer, features, residual_pooling="attention")
    attention.load_state_dict(mean.state_dict(), strict=False)
    torch.testing.assert_close(tokens_of(attention, 2, 6), tokens_of(mean, 2, 6))
    tokens_of(attention, 2, 6).square().mean().backward()
    assert attention.attention_pooling.query.grad.abs().sum() > 0


@pytest.mark.parametrize("residual_pooling", ["mean", "attention"])
def test_gradients_reach_g_phi_and_the_frame_encoder(residual_pooling):
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(
        ConvFrameEncoder(channels=8, patch_size=4), token_dim=8, residual_pooling=residual_pooling
    )
    tokens = tokenizer(torch.rand(2, 4, 3, 16, 16))
    tokens.tokens[:, GRID * GRID :].square().mean().backward()  # residual tokens alone
    for module in (tokenizer.residual_mlp, tokenizer.frame_encoder):
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_inherited_options_are_configurable_through_jsonargparse():
    from jsonargparse import ArgumentParser

    from vtok_lit.core.tokenizers import VideoTokenizer

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VideoTokenizer, "tokenizer")
    config = parser.parse_object(
        {
            "tokenizer": {
                "class_path": "vtok_lit.core.VTokTokenizer",
                "init_args": {
                    "frame_encoder": {"class_path": "vtok_lit.core.ConvFrameEncoder"},
                    "key_frame": 2,  # a KeyFrameTokenizer option
                    "grid_size": 2,  # a VideoTokenizer option
                    "temporal_stride": 3,
                },
            }
        }
    )
    tokenizer = parser.instantiate(config).tokenizer
    assert (tokenizer.key_frame, tokenizer.grid_size, tokenizer.temporal_stride) == (2, 2, 3)
