"""Video tokenizers: VTok and the two baselines it is measured against.

With ``S = grid_size ** 2`` tokens a frame, a clip of ``T`` frames costs

- :class:`VTokTokenizer`: ``S + ceil((T - 1) / temporal_stride)`` (key frame + one residual token per
  later frame or group of frames),
- :class:`FrameSamplingTokenizer`: ``T * S`` (every frame on the same grid),
- :class:`KeyFrameTokenizer`: ``S`` (the key frame alone: it cannot see motion).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.frame_encoders import FrameEncoder
from vtok_lit.core.layers import MLP, AttentionPooling, FrameEmbedding
from vtok_lit.core.tokens import TokenKind, VideoTokens, cell_centres

KeyFrameName = Literal["first", "middle"]
KeyFrame = int | KeyFrameName
ResidualPooling = Literal["mean", "attention", "moments", "split_moments", "centred_moments"]
GroupReduction = Literal["mean", "subsample"]
ResidualFeatures = Literal["residual", "absolute"]
CellPooling = Literal["mean", "merge"]
MOMENT_POOLINGS = ("moments", "split_moments")


def pool_to_grid_tokens(features: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Average-pools ``(B, C, h, w)`` feature maps to a ``g x g`` grid and returns ``(B, g * g, C)``.

    Token ``r * g + c`` holds all C channels of grid cell (row r, column c). A plain
    ``reshape(B, -1, C)`` of the pooled map would instead mix channels of different cells.
    """
    pooled = F.adaptive_avg_pool2d(features, grid_size)  # (B, C, g, g)
    return pooled.flatten(2).transpose(1, 2)


def merge_to_grid_tokens(features: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Pools ``(B, C, h, w)`` feature maps to a ``2g x 2g`` grid and returns ``(B, g * g, 4 * C)``:
    token ``r * g + c`` holds the four quarters of grid cell (row r, column c), top left, top right,
    bottom left, bottom right, each with all C channels.

    Where :func:`pool_to_grid_tokens` averages a cell's features into one vector, this keeps their
    layout inside the cell: the arrangement that tells an object's shape. At ``h = w = 2g`` (an 8x8
    map on a 4x4 grid) the quarters are the feature vectors themselves.
    """
    batch, channels = features.shape[:2]
    quarters = F.adaptive_avg_pool2d(features, 2 * grid_size)  # (B, C, 2g, 2g)
    quarters = quarters.reshape(batch, channels, grid_size, 2, grid_size, 2)
    return quarters.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid_size * grid_size, 4 * channels)


def check_choice(name: str, value: str, choices: object) -> None:
    """Raises a ValueError naming the options when ``value`` is not one of the ``Literal`` ``choices``."""
    if value not in get_args(choices):
        raise ValueError(f"{name}={value!r}; choose one of {get_args(choices)}")


def feature_contrast(features: torch.Tensor) -> torch.Tensor:
    """How strongly each position of ``(..., C, h, w)`` feature maps stands out from its 3x3
    neighbourhood (edges replicated), per channel and whatever the sign: ``|F - local mean F|``.

    A local rather than a global mean: coordinate channels add a smooth ramp to every map, which a
    3x3 mean removes and a global mean leaves in, where it flips the sign of a small object's term.
    """
    maps = features.flatten(0, -4)
    local_mean = F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (maps - local_mean).abs().reshape(features.shape)


def position_bases(height: int, width: int, fourier_frequencies: int = 0) -> torch.Tensor:
    """``(K, h, w)`` weights over the positions of an ``h x w`` map: ``1, x, y`` then, for each frequency
    ``f = 1 .. fourier_frequencies``, ``cos(pi f x), sin(pi f x), cos(pi f y), sin(pi f y)``; x and y
    are the position centres in [-1, 1]. ``K = 3 + 4 * fourier_frequencies``."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    bases = [torch.ones_like(x), x, y]
    for frequency in range(1, fourier_frequencies + 1):
        for coordinate in (x, y):
            bases += [
                torch.cos(torch.pi * frequency * coordinate),
                torch.sin(torch.pi * frequency * coordinate),
            ]
    return torch.stack(bases)


class VideoTokenizer(nn.Module, ABC):
    """Turns ``(B, T, 3, H, W)`` clips in [0, 1] into a :class:`VideoTokens` sequence.

    Every tokenizer makes grid-cell tokens the same way (:meth:`cell_tokens`); tokens carry learned
    embeddings of their grid cell and frame index, because the decoders and LMs that consume them
    see an unordered set.
    """

    def __init__(
        self,
        frame_encoder: FrameEncoder,
        token_dim: int = 128,
        grid_size: int = 4,
        max_frames: int = 64,
        cell_pooling: CellPooling = "mean",
    ) -> None:
        """
        Args:
            frame_encoder: The per-frame feature extractor ``F``.
            token_dim: Size D of every token.
            grid_size: Side g of the grid a frame's feature map is pooled to (S = g * g tokens a frame).
            max_frames: Longest clip the frame-index embedding covers.
            cell_pooling: How a grid cell's features become its token: "mean" (their average, then a
                linear map to D) or "merge" (the averages of the cell's four quarters side by side,
                then a linear map to D: the layout inside the cell reaches the token; after the
                quickstart's pretraining its tokens hold no more of an object's shape than the mean's,
                README). The same S tokens either way.
        """
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size must be at least 1, got {grid_size}")
        check_choice("cell_pooling", cell_pooling, CellPooling)
        self.frame_encoder = frame_encoder
        self.token_dim = token_dim
        self.grid_size = grid_size
        self.max_frames = max_frames
        self.tokens_per_frame = grid_size**2
        self.cell_pooling = cell_pooling
        cell_features = frame_encoder.out_channels * (4 if cell_pooling == "merge" else 1)
        self.cell_projection = nn.Linear(cell_features, token_dim)
        self.cell_embedding = nn.Parameter(0.02 * torch.randn(self.tokens_per_frame, token_dim))
        self.frame_embedding = FrameEmbedding(max_frames, token_dim)
        # Index tensors that depend only on (T, device), built once: rebuilding them every step is
        # most of the tokenizer's own cost next to a small frame encoder.
        self._index_cache: dict[tuple[str, int, torch.device], Any] = {}

    def cached_indices(
        self, name: str, num_frames: int, device: torch.device, build: Callable[[], Any]
    ) -> Any:
        """``build()`` (a tensor, or a tuple of tensors and None) on ``device``, built once per
        ``(name, T, device)``."""
        key = (name, num_frames, torch.device(device))
        if key not in self._index_cache:
            built = build()
            parts = built if isinstance(built, tuple) else (built,)
            moved = tuple(None if part is None else part.to(device) for part in parts)
            self._index_cache[key] = moved if isinstance(built, tuple) else moved[0]
        return self._index_cache[key]

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Runs the frame encoder on every frame: ``(B, T, 3, H, W) -> (B, T, C, h, w)``."""
        features = self.frame_encoder(video.flatten(0, 1))
        return features.unflatten(0, video.shape[:2])

    @abstractmethod
    def tokenize_features(self, features: torch.Tensor) -> VideoTokens:
        """Tokenizes ``(B, T, C, h, w)`` frame features (from :meth:`encode_frames` or a cache)."""

    def forward(self, video: torch.Tensor) -> VideoTokens:
        """Tokenizes ``(B, T, 3, H, W)`` clips in [0, 1]."""
        return self.tokenize_features(self.encode_frames(video))

    @abstractmethod
    def num_tokens(self, num_frames: int) -> int:
        """The sequence length L for a clip of ``num_frames`` frames."""

    @abstractmethod
    def token_layout(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What each of the L positions of a ``num_frames``-frame clip's sequence holds, without the clip.

        Returns:
            ``(L,)`` long :class:`TokenKind` s, ``(L,)`` long frame indices and ``(L, 2)`` grid-cell
            centres (NaN for tokens of no single cell) or None: the layout fields of
            :class:`VideoTokens`.
        """

    def video_tokens(self, tokens: torch.Tensor, num_frames: int) -> VideoTokens:
        """Wraps ``(B, L, D)`` tokens of ``num_frames``-frame clips (encoded or generated) in their layout."""
        kinds, frame_index, cell_xy = self.cached_indices(
            "layout", num_frames, tokens.device, lambda: self.token_layout(num_frames)
        )
        if tokens.shape[1] != len(kinds):
            raise ValueError(
                f"got {tokens.shape[1]} tokens, but {type(self).__name__} lays out {len(kinds)} "
                f"for a clip of T={num_frames} frames"
            )
        padding_mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return VideoTokens(tokens, kinds, frame_index, padding_mask, cell_xy)

    def key_frame_index(self, num_frames: int) -> int:
        """The frame the others are described against; the first one where no frame is special."""
        return 0

    def cell_tokens(self, features: torch.Tensor, frame_positions: torch.Tensor) -> torch.Tensor:
        """Grid-cell tokens of some frames: ``(B, F, C, h, w)`` -> ``(B, F * S, D)``, frame by frame.

        Args:
            features: Feature maps of F frames.
            frame_positions: ``(F, D)`` frame-index embeddings of those frames.
        """
        batch, frames = features.shape[:2]
        pool = merge_to_grid_tokens if self.cell_pooling == "merge" else pool_to_grid_tokens
        cells = pool(features.flatten(0, 1), self.grid_size)  # (B * F, S, C or 4 * C)
        tokens = self.cell_projection(cells) + self.cell_embedding
        tokens = tokens.unflatten(0, (batch, frames)) + frame_positions[None, :, None]
        return tokens.flatten(1, 2)


class FrameSamplingTokenizer(VideoTokenizer):
    """The naive baseline: every frame pooled to the same grid, ``T * S`` tokens of kind FRAME."""

    def tokenize_features(self, features: torch.Tensor) -> VideoTokens:
        num_frames = features.shape[1]
        return self.video_tokens(self.cell_tokens(features, self.frame_embedding(num_frames)), num_frames)

    def num_tokens(self, num_frames: int) -> int:
        return num_frames * self.tokens_per_frame

    def token_layout(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frame_index = torch.arange(num_frames).repeat_interleave(self.tokens_per_frame)
        kinds = torch.full_like(frame_index, TokenKind.FRAME)
        return kinds, frame_index, cell_centres(self.grid_size).repeat(num_frames, 1)


class KeyFrameTokenizer(VideoTokenizer):
    """The ``S`` spatial tokens of one key frame: the ablation that cannot see motion."""

    def __init__(self, frame_encoder: FrameEncoder, *, key_frame: KeyFrame = "first", **kwargs) -> None:
        """
        Args:
            frame_encoder: The per-frame feature extractor ``F``.
            key_frame: Which frame is the key: "first", "middle" (``T // 2``) or an index (negative
                counts from the end).
            **kwargs: The :class:`VideoTokenizer` options (token_dim, grid_size, max_frames, cell_pooling).
        """
        super().__init__(frame_encoder, **kwargs)
        if isinstance(key_frame, str):
            check_choice("key_frame", key_frame, KeyFrameName)
        self.key_frame = key_frame

    def key_frame_index(self, num_frames: int) -> int:
        if self.key_frame == "first":
            return 0
        if self.key_frame == "middle":
            return num_frames // 2
        if not -num_frames <= self.key_frame < num_frames:
            raise ValueError(
                f"key_frame={self.key_frame} is out of range for a clip of T={num_frames} frames"
            )
        return self.key_frame % num_frames

    def forward(self, video: torch.Tensor) -> VideoTokens:
        """Tokenizes ``(B, T, 3, H, W)`` clips in [0, 1] from their key frame: the frame encoder sees
        one frame of each clip, not T."""
        num_frames = video.shape[1]
        key = self.key_frame_index(num_frames)
        key_features = self.encode_frames(video[:, key : key + 1])
        return self.video_tokens(self.key_frame_tokens(key_features, num_frames), num_frames)

    def tokenize_features(self, features: torch.Tensor) -> VideoTokens:
        return self.video_tokens(self.spatial_tokens(features), features.shape[1])

    def spatial_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The ``(B, S, D)`` grid-cell tokens of the key frame of ``(B, T, C, h, w)`` features."""
        key = self.key_frame_index(features.shape[1])
        return self.key_frame_tokens(features[:, key : key + 1], features.shape[1])

    def key_frame_tokens(self, key_features: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The ``(B, S, D)`` grid-cell tokens of ``(B, 1, C, h, w)`` features of the key frame of
        ``num_frames``-frame clips."""
        key = self.key_frame_index(num_frames)
        return self.cell_tokens(key_features, self.frame_embedding(num_frames)[key : key + 1])

    def num_tokens(self, num_frames: int) -> int:
        return self.tokens_per_frame

    def token_layout(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frame_index = torch.full((self.tokens_per_frame,), self.key_frame_index(num_frames))
        kinds = torch.full_like(frame_index, TokenKind.SPATIAL)
        return kinds, frame_index, cell_centres(self.grid_size)


class VTokTokenizer(KeyFrameTokenizer):
    """VTok: the key frame's S spatial tokens, then ONE residual token per later frame (or group).

    A residual token is ``g_phi(pool(F(x_t) - F(x_key)))``: it carries what changed since the key
    frame, so a clip costs ``S + ceil((T - 1) / temporal_stride)`` tokens instead of ``T * S``.
    """

    def __init__(
        self,
        frame_encoder: FrameEncoder,
        *,
        temporal_stride: int = 1,
        residual_pooling: ResidualPooling = "mean",
        group_reduction: GroupReduction = "mean",
        residual_features: ResidualFeatures = "residual",
        residual_hidden_dim: int = 256,
        fourier_frequencies: int = 0,
        residual_contrast: bool = False,
        residual_encoder_gradient: bool = True,
        **kwargs,
    ) -> None:
        """
        Args:
            frame_encoder: The per-frame feature extractor ``F``.
            temporal_stride: How many consecutive non-key frames share one residual token.
            residual_pooling: How the ``h * w`` positions of a residual become one vector: "mean"
                (global average), "attention" (one learned query) or "moments" (the averages of the
                residual weighted by ``1, x, y`` and optional Fourier bases of the position, so the
                vector keeps WHERE things changed: a translation-equivariant encoder's features of an
                object that moves have the same global mean before and after the move, and a mean
                residual of zero), or "split_moments" (the same moments of the residual's positive
                and negative parts apart: where features rose, where they fell). A moving object's
                residual is a pair of lobes of opposite sign, one where it arrived and one where it
                left; a fading or growing one adds a lobe of one sign over it, whose ``x`` and ``y``
                moments in a plain moment sum depend on where the object is and look like a move.
                Apart, the lobes keep their own places: doubles ``g_phi``'s input. Or
                "centred_moments": the ``x`` and ``y`` moments about each channel's centre in the
                key frame (where its key-frame map departs from a plane), beside the mean:
                an object that fades or grows in place changes its channels symmetrically about that
                centre and adds nothing to them, one that moves adds its displacement.
            group_reduction: How a group of ``temporal_stride`` frames becomes one token: "mean" of
                their pooled residuals, or "subsample" (the group's first frame alone).
            residual_features: "residual" pools ``F(x_t) - F(x_key)``; "absolute" pools ``F(x_t)``
                (the ablation without the key-frame subtraction).
            residual_hidden_dim: Hidden width of the MLP ``g_phi``.
            fourier_frequencies: With "moments" or "split_moments" pooling, also weight the residual by
                ``cos/sin(pi f x)`` and ``cos/sin(pi f y)`` for ``f = 1 .. fourier_frequencies``.
            residual_contrast: Also pool the residual of each channel's local contrast
                (:func:`feature_contrast`), ``C(x_t) - C(x_key)``: positive where something appeared
                since the key frame and negative where it left, whatever its colour, so with
                "moments" pooling the token says which way it moved. A plain residual's moment is
                the displacement times the object's feature difference from the background, whose
                sign changes with the colour: a linear reader cannot tell left from right until the
                encoder has learned colour-blind channels. Doubles ``g_phi``'s input.
            residual_encoder_gradient: Whether the residual tokens' gradient reaches the frame
                encoder. False detaches the features the residuals are taken from, so the encoder
                learns from the spatial tokens alone (and ``g_phi`` from the residual tokens): the
                ablation that tells whether serving both costs the spatial tokens.
            **kwargs: The :class:`KeyFrameTokenizer` option (key_frame) and the
                :class:`VideoTokenizer` ones (token_dim, grid_size, max_frames, cell_pooling).
        """
        super().__init__(frame_encoder, **kwargs)
        if temporal_stride < 1:
            raise ValueError(f"temporal_stride must be at least 1, got {temporal_stride}")
        check_choice("residual_pooling", residual_pooling, ResidualPooling)
        check_choice("group_reduction", group_reduction, GroupReduction)
        check_choice("residual_features", residual_features, ResidualFeatures)
        self.temporal_stride = temporal_stride
        self.group_reduction = group_reduction
        self.residual_features = residual_features
        if fourier_frequencies < 0:
            raise ValueError(f"fourier_frequencies must not be negative, got {fourier_frequencies}")
        if fourier_frequencies and residual_pooling not in MOMENT_POOLINGS:
            raise ValueError(
                f"fourier_frequencies={fourier_frequencies} needs residual_pooling='moments' or "
                f"'split_moments', got {residual_pooling!r}"
            )
        self.residual_pooling = residual_pooling
        self.fourier_frequencies = fourier_frequencies
        self.residual_contrast = residual_contrast
        self.residual_encoder_gradient = residual_encoder_gradient
        channels = frame_encoder.out_channels * (2 if residual_contrast else 1)
        self.attention_pooling = AttentionPooling(channels) if residual_pooling == "attention" else None
        if residual_pooling in MOMENT_POOLINGS:
            num_bases = (3 + 4 * fourier_frequencies) * (2 if residual_pooling == "split_moments" else 1)
        else:
            num_bases = 3 if residual_pooling == "centred_moments" else 1
        self.residual_mlp = MLP(channels * num_bases, residual_hidden_dim, self.token_dim)  # g_phi

    def forward(self, video: torch.Tensor) -> VideoTokens:
        """Tokenizes ``(B, T, 3, H, W)`` clips in [0, 1]; the residual tokens need every frame encoded."""
        return self.tokenize_features(self.encode_frames(video))

    def tokenize_features(self, features: torch.Tensor) -> VideoTokens:
        tokens = torch.cat([self.spatial_tokens(features), self.residual_tokens(features)], dim=1)
        return self.video_tokens(tokens, features.shape[1])

    def token_layout(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kinds, frame_index, cell_xy = super().token_layout(num_frames)
        group_starts = self._residual_group_indices(num_frames)[2]
        return (
            torch.cat([kinds, torch.full_like(group_starts, TokenKind.RESIDUAL)]),
            torch.cat([frame_index, group_starts]),
            # A residual token pools the whole frame: it has no cell.
            torch.cat([cell_xy, cell_xy.new_full((len(group_starts), 2), float("nan"))]),
        )

    def residual_groups(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(T - 1,)`` non-key frames in time order and the residual token (group) of each.

        Frames before and after the key frame are grouped separately, so no group averages the
        displacements on both sides of the key frame (which have opposite signs).
        """
        key = self.key_frame_index(num_frames)
        before = torch.arange(key) // self.temporal_stride
        after = torch.arange(num_frames - key - 1) // self.temporal_stride
        after = after + (len(before) and int(before[-1]) + 1)
        others = torch.tensor([t for t in range(num_frames) if t != key], dtype=torch.long)
        return others, torch.cat([before, after])

    def _residual_group_indices(self, num_frames: int) -> tuple[torch.Tensor, ...]:
        """:meth:`residual_groups`, each group's first frame and each group's size."""
        others, group_of = self.residual_groups(num_frames)
        first_of_group = torch.ones_like(group_of, dtype=torch.bool)
        first_of_group[1:] = group_of[1:] != group_of[:-1]
        group_starts = others[first_of_group]
        return others, group_of, group_starts, torch.bincount(group_of, minlength=len(group_starts))

    def residual_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Residual tokens of ``(B, T, C, h, w)`` features: ``(B, G, D)``, one per group of
        ``temporal_stride`` consecutive non-key frames (in time order)."""
        group_starts = self._group_indices(features)[2]
        positions = self.frame_embedding(features.shape[1])[group_starts]
        return self.residual_mlp(self.pooled_residuals(features)) + positions

    def pooled_residuals(self, features: torch.Tensor) -> torch.Tensor:
        """What ``g_phi`` reads: ``pool(F(x_t) - F(x_key))`` of ``(B, T, C, h, w)`` features, ``(B, G,
        C * K)`` with one row per residual token (a group's rows averaged or subsampled)."""
        batch, num_frames = features.shape[:2]
        key = self.key_frame_index(num_frames)
        others, group_of, group_starts, group_sizes = self._group_indices(features)
        pooled_frames = group_starts if self.group_reduction == "subsample" else others

        if not self.residual_encoder_gradient:
            features = features.detach()
        if self.residual_contrast:
            features = torch.cat([features, feature_contrast(features)], dim=2)
        selected = features[:, pooled_frames]
        if self.residual_features == "residual":
            selected = selected - features[:, key : key + 1]
        pooled = self.pool_positions(selected, features[:, key : key + 1])  # (B, N, C * K)
        if self.group_reduction == "mean":
            sums = pooled.new_zeros(batch, len(group_starts), pooled.shape[-1]).index_add(1, group_of, pooled)
            pooled = sums / group_sizes[:, None]
        return pooled

    def _group_indices(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`_residual_group_indices` for the clip length of ``features``, cached on their device."""
        num_frames = features.shape[1]
        return self.cached_indices(
            "residual_groups", num_frames, features.device, lambda: self._residual_group_indices(num_frames)
        )

    def pool_positions(
        self, features: torch.Tensor, key_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pools the ``h * w`` positions away: ``(B, N, C, h, w) -> (B, N, C * K)``, K = 1 but for
        moment poolings (one block of C channels per position basis, and per sign for
        "split_moments"). "centred_moments" needs the ``(B, 1, C, h, w)`` key frame's features."""
        if self.residual_pooling == "centred_moments":
            if key_features is None:
                raise ValueError("residual_pooling='centred_moments' needs the key frame's features")
            return self.centred_moments(features, key_features)
        if self.residual_pooling == "split_moments":
            parts = (features.clamp(min=0), features.clamp(max=0))
            return torch.cat([self.position_moments(part) for part in parts], dim=-1)
        if self.residual_pooling == "moments":
            return self.position_moments(features)
        if self.attention_pooling is None:
            return features.mean(dim=(-2, -1))
        positions = features.flatten(3).transpose(2, 3)  # (B, N, h * w, C)
        return self.attention_pooling(positions.flatten(0, 1)).unflatten(0, features.shape[:2])

    def centred_moments(self, features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, h, w) -> (B, N, 3 * C)``: the mean of each channel, then its ``x`` and ``y``
        moments about the channel's key-frame centre: the centroid of its key-frame map's squared
        departure from the plane that fits the map best (objects, not a coordinate channel's
        ramp)."""
        height, width = features.shape[-2:]
        bases = self.cached_position_bases(height, width, features)[:3]  # 1, x, y: orthogonal on the grid
        coordinates = bases[1:]
        unit_bases = bases / bases.pow(2).sum((-2, -1), keepdim=True)
        plane = torch.einsum("bnchw,khw->bnck", key_features, unit_bases)
        departure = (key_features - torch.einsum("bnck,khw->bnchw", plane, bases)).pow(2)
        weight = departure.sum((-2, -1))[..., None] + 1e-6
        centre = torch.einsum("bnchw,khw->bnck", departure, coordinates) / weight  # (B, 1, C, 2)
        total = features.sum((-2, -1))
        first = torch.einsum("bnchw,khw->bnck", features, coordinates) - total[..., None] * centre
        pooled = torch.cat([total[..., None], first], dim=-1) / (height * width)  # (B, N, C, 3)
        return pooled.transpose(-1, -2).flatten(2)

    def cached_position_bases(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """The cached :func:`position_bases` of an ``height x width`` map, on ``like``'s device and dtype."""
        return self.cached_indices(
            f"bases/{height}x{width}",
            0,
            like.device,
            lambda: position_bases(height, width, self.fourier_frequencies),
        ).to(like.dtype)

    def position_moments(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, h, w) -> (B, N, K * C)``: the features' averages weighted by each of the K
        :func:`position_bases`, basis-major."""
        height, width = features.shape[-2:]
        bases = self.cached_position_bases(height, width, features)
        moments = torch.einsum("bnchw,khw->bnkc", features, bases) / (height * width)
        return moments.flatten(2)

    def num_tokens(self, num_frames: int) -> int:
        key = self.key_frame_index(num_frames)
        stride = self.temporal_stride
        return self.tokens_per_frame + -(-key // stride) + -(-(num_frames - key - 1) // stride)
