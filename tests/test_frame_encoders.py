import json

import pytest
import torch

from vtok_lit.core.frame_encoders import ConvFrameEncoder, coordinate_planes, embed_patches
from vtok_lit.core.open_clip_encoder import OpenCLIPFrameEncoder

TINY_NAME = "vtok-test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_config(tmp_path) -> str:
    """A tiny open_clip model config, registered under its file stem."""
    path = tmp_path / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


def tiny_encoder(config_path: str, **options) -> OpenCLIPFrameEncoder:
    return OpenCLIPFrameEncoder(TINY_NAME, model_config_path=config_path, **options)


def test_conv_encoder_shapes_and_identity():
    encoder = ConvFrameEncoder()
    assert encoder(torch.rand(2, 3, 64, 64)).shape == (2, 64, 8, 8) and encoder.out_channels == 64
    identities = {
        ConvFrameEncoder().config_identity,
        ConvFrameEncoder(channels=32).config_identity,
        ConvFrameEncoder(patch_size=4).config_identity,
        ConvFrameEncoder(coordinate_channels=False).config_identity,
    }
    assert len(identities) == 4


@pytest.mark.parametrize("size", [(64, 64), (70, 61)])
def test_patch_embedding_is_the_strided_convolution_and_its_gradients(size):
    torch.manual_seed(0)
    stem = torch.nn.Conv2d(5, 16, kernel_size=8, stride=8)
    frames = torch.rand(3, 5, *size, requires_grad=True)
    expected = stem(frames)
    (expected_input_grad, expected_weight_grad) = torch.autograd.grad(
        expected.square().sum(), [frames, stem.weight]
    )
    embedded = embed_patches(frames, stem.weight, stem.bias)
    assert embedded.shape == expected.shape  # a remainder is dropped, as the convolution drops it
    torch.testing.assert_close(embedded, expected, atol=1e-5, rtol=1e-5)
    input_grad, weight_grad = torch.autograd.grad(embedded.square().sum(), [frames, stem.weight])
    torch.testing.assert_close(input_grad, expected_input_grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight_grad, expected_weight_grad, atol=1e-4, rtol=1e-5)


def test_coordinate_channels_are_the_stem_of_frames_with_coordinate_planes_appended():
    torch.manual_seed(0)
    encoder = ConvFrameEncoder(channels=16, num_blocks=0)
    frames = torch.rand(3, 3, 64, 48, requires_grad=True)
    planes = coordinate_planes(64, 48, like=frames)
    assert planes[0, 0, 0] == -1 and planes[0, 0, -1] == 1 and planes[1, -1, 0] == 1  # x, then y
    appended = torch.cat([frames * 2 - 1, planes.expand(3, -1, -1, -1)], dim=1)
    expected = encoder.stem(appended)
    torch.testing.assert_close(encoder(frames), expected, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(encoder(frames).square().sum(), encoder.stem.weight)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), encoder.stem.weight)
    torch.testing.assert_close(grad, expected_grad, atol=1e-3, rtol=1e-5)


def test_coordinate_channels_make_pooled_features_position_aware():
    # The same square 24 pixels apart (a multiple of the total stride 8), away from the borders.
    frames = torch.zeros(2, 3, 64, 64)
    frames[0, :, 28:36, 16:24] = 1.0
    frames[1, :, 28:36, 40:48] = 1.0

    def pooled_gap(encoder: ConvFrameEncoder) -> float:
        pooled = encoder(frames).mean(dim=(-2, -1))
        return (pooled[0] - pooled[1]).abs().max().item()

    torch.manual_seed(0)
    without_coordinates = pooled_gap(ConvFrameEncoder(channels=16, coordinate_channels=False))
    assert without_coordinates < 1e-5
    assert pooled_gap(ConvFrameEncoder(channels=16)) > 100 * max(without_coordinates, 1e-6)


def test_open_clip_tiny_model_gives_the_patch_grid(tiny_config):
    encoder = tiny_encoder(tiny_config, freeze=False)
    assert encoder.out_channels == 32
    assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 32, 4, 4)
    assert encoder(torch.rand(2, 3, 64, 48)).shape == (2, 32, 4, 4)  # resized to the model's 32x32
    assert encoder.identity.startswith(f"open_clip/{TINY_NAME}/") and "random-init" in encoder.identity


def test_open_clip_loads_a_local_checkpoint(tiny_config, tmp_path):
    import open_clip

    tiny_encoder(tiny_config)  # registers the config
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_NAME)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)

    encoder = tiny_encoder(tiny_config, pretrained=str(checkpoint))
    expected = model.visual.state_dict()
    for name, value in encoder.visual.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert f"file:{checkpoint}" in encoder.identity


def test_open_clip_missing_checkpoint_is_a_file_not_found_error(tiny_config, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        tiny_encoder(tiny_config, pretrained=str(missing))


def test_open_clip_tag_missing_offline_says_to_pass_a_path(monkeypatch):
    import open_clip.factory

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(RuntimeError, match="offline.*local checkpoint path"):
        OpenCLIPFrameEncoder("ViT-B-32", pretrained="openai")


def test_open_clip_unknown_names_are_value_errors(tiny_config):
    with pytest.raises(ValueError, match="ViT-B-32"):
        OpenCLIPFrameEncoder("ViT-B-33")
    with pytest.raises(ValueError, match=f"model_name='{TINY_NAME}'"):
        OpenCLIPFrameEncoder("ViT-B-32", model_config_path=tiny_config)


def test_open_clip_freeze(tiny_config):
    frozen = tiny_encoder(tiny_config)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.train().training and not frozen.visual.training
    trainable = tiny_encoder(tiny_config, freeze=False)
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable.train().visual.training
