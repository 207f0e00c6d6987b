import os
import sys

import pytest
import torch

from vtok_lit.core.language_models import LMOutput, TransformerBlock, TransformerLM

# Set before transformers is first imported: its hub client reads this once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN2 = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 300,
    "max_position_embeddings": 256,
}
LLAMA = {**QWEN2, "model_type": "llama"}


def tiny_lm(**overrides) -> TransformerLM:
    torch.manual_seed(0)
    options = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "max_seq_len": 64} | overrides
    return TransformerLM(**options).eval()


def hf_lm(config: dict = QWEN2, **options):
    pytest.importorskip("transformers")
    from vtok_lit.core.hf_language_model import HFCausalLM

    torch.manual_seed(0)
    return HFCausalLM(config=config, **options).eval()


def left_padded(embeds: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend ``pad`` random positions to ``embeds`` ``(B, L, D)`` and mark them as padding."""
    batch, _, dim = embeds.shape
    padded = torch.cat([torch.randn(batch, pad, dim), embeds], dim=1)
    mask = torch.ones(padded.shape[:2], dtype=torch.bool)
    mask[:, :pad] = False
    return padded, mask


@pytest.fixture(params=["builtin", "qwen2"])
def lm(request):
    return tiny_lm() if request.param == "builtin" else hf_lm()


def test_shapes(lm):
    output = lm(lm.embed_tokens(torch.randint(0, lm.vocab_size, (2, 7))))
    assert isinstance(output, LMOutput)
    assert output.hidden_states.shape == (2, 7, lm.hidden_size)
    assert output.logits.shape == (2, 7, lm.vocab_size)
    assert output.past_key_values is None


def test_logits_of_the_last_positions_are_those_of_a_full_run(lm):
    embeds, mask = left_padded(lm.embed_tokens(torch.randint(0, lm.vocab_size, (2, 7))), pad=2)
    with torch.no_grad():
        full = lm(embeds, attention_mask=mask)
        last = lm(embeds, attention_mask=mask, logits_to_keep=3)
    assert last.logits.shape == (2, 3, lm.vocab_size)
    torch.testing.assert_close(last.logits, full.logits[:, -3:])
    torch.testing.assert_close(last.hidden_states, full.hidden_states)


def test_later_tokens_do_not_change_earlier_logits(lm):
    embeds = torch.randn(1, 6, lm.hidden_size)
    changed = embeds.clone()
    changed[:, 4:] = torch.randn(1, 2, lm.hidden_size)
    with torch.no_grad():
        before, after = lm(embeds).logits, lm(changed).logits
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_left_padding_matches_unpadded(lm):
    embeds = torch.randn(2, 5, lm.hidden_size)
    padded, mask = left_padded(embeds, pad=3)
    with torch.no_grad():
        expected = lm(embeds).logits
        got = lm(padded, attention_mask=mask).logits
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[:, 3:], expected, atol=1e-5, rtol=1e-4)


def test_kv_cache_decoding_matches_full_forward(lm):
    """Prefill a left-padded prompt, then feed two tokens one at a time through the cache."""
    padded, mask = left_padded(torch.randn(2, 6, lm.hidden_size), pad=2)
    mask[1, 2] = False  # rows padded by different amounts
    with torch.no_grad():
        full = lm(padded, attention_mask=mask).logits
        step = lm(padded[:, :6], attention_mask=mask[:, :6], use_cache=True)
        for position in (6, 7):
            step = lm(
                padded[:, position : position + 1],
                attention_mask=mask[:, : position + 1],
                past_key_values=step.past_key_values,
                use_cache=True,
            )
            torch.testing.assert_close(step.logits[:, 0], full[:, position], atol=1e-5, rtol=1e-4)


def test_kv_cache_without_mask_matches_full_forward():
    lm = tiny_lm()
    embeds = torch.randn(2, 5, lm.hidden_size)
    with torch.no_grad():
        full = lm(embeds).logits
        prefix = lm(embeds[:, :3], use_cache=True)
        rest = lm(embeds[:, 3:], past_key_values=prefix.past_key_values, use_cache=True)
    torch.testing.assert_close(rest.logits, full[:, 3:], atol=1e-5, rtol=1e-4)
    assert rest.past_key_values[0][0].shape == (2, 4, 5, 8)


@pytest.mark.parametrize("kind", ["builtin", "qwen2"])
def test_gradient_checkpointing_gives_same_gradients(kind):
    def gradients(checkpointed: bool) -> dict[str, torch.Tensor]:
        build = tiny_lm if kind == "builtin" else hf_lm
        lm = build(gradient_checkpointing=checkpointed).train()
        first_attention = lm.blocks[0].attention if kind == "builtin" else lm.decoder_layers()[0].self_attn
        calls = []
        first_attention.register_forward_pre_hook(lambda *_: calls.append(1))
        torch.manual_seed(1)
        ids = torch.randint(0, lm.vocab_size, (2, 6))
        lm(lm.embed_tokens(ids)).logits.logsumexp(-1).sum().backward()
        assert len(calls) == (2 if checkpointed else 1)  # checkpointing recomputes in the backward pass
        return {name: p.grad for name, p in lm.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_blocks_are_a_module_list_of_transformer_blocks():
    lm = tiny_lm(num_layers=3)
    assert isinstance(lm.blocks, torch.nn.ModuleList)
    assert len(lm.blocks) == 3 and all(isinstance(block, TransformerBlock) for block in lm.blocks)
    assert lm.head.weight is lm.token_embedding.weight
    assert tiny_lm(tie_embeddings=False).head.weight is not tiny_lm().token_embedding.weight


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="even width"):
        TransformerLM(hidden_size=20, num_heads=4)
    lm = tiny_lm(max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        lm(torch.randn(1, 9, lm.hidden_size))
    with pytest.raises(ValueError, match="P \\+ L"):
        lm(torch.randn(1, 4, lm.hidden_size), attention_mask=torch.ones(1, 3, dtype=torch.bool))


def test_tiny_transformer_overfits_byte_sequences():
    from vtok_lit.core.text_tokenizers import ByteTokenizer

    tokenizer = ByteTokenizer()
    texts = ["a red ball rolls", "the cat sleeps", "two birds fly away", "rain on the window"]
    ids, mask = tokenizer.batch_encode(texts, max_length=32)
    lm = tiny_lm(hidden_size=64, max_seq_len=32).train()
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        logits = lm(lm.embed_tokens(ids[:, :-1]), attention_mask=mask[:, :-1]).logits
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets)

    first = loss().item()
    for _ in range(100):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.1 * first


@pytest.mark.parametrize("config", [QWEN2, LLAMA], ids=["qwen2", "llama"])
def test_hf_model_round_trips_through_save_pretrained(config, tmp_path):
    from vtok_lit.core.hf_language_model import HFCausalLM

    lm = hf_lm(config)
    assert (lm.hidden_size, lm.vocab_size, lm.max_seq_len) == (64, 300, 256)
    lm.model.save_pretrained(tmp_path)
    loaded = HFCausalLM(model_path=str(tmp_path)).eval()
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.embed_tokens(ids)).logits, lm(lm.embed_tokens(ids)).logits)


def test_hf_model_needs_exactly_one_source(tmp_path):
    pytest.importorskip("transformers")
    from vtok_lit.core.hf_language_model import HFCausalLM

    with pytest.raises(ValueError, match="exactly one"):
        HFCausalLM()
    with pytest.raises(ValueError, match="exactly one"):
        HFCausalLM(model_path=str(tmp_path), config=QWEN2)
    with pytest.raises(FileNotFoundError, match="missing-model"):
        HFCausalLM(model_path=str(tmp_path / "missing-model"))


def test_hf_model_without_transformers_says_what_to_install(monkeypatch):
    from vtok_lit.core.hf_language_model import HFCausalLM

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"vtok-lit\[hf\]"):
        HFCausalLM(config=QWEN2)


def trainable(lm) -> set[str]:
    return {name for name, p in lm.named_parameters() if p.requires_grad}


def test_hf_freeze_and_trainable_layers():
    everything = {name for name, _ in hf_lm().named_parameters()}
    assert trainable(hf_lm()) == everything
    assert trainable(hf_lm(freeze=True)) == set()
    last_block = {name for name in everything if ".layers.1." in name}
    assert trainable(hf_lm(trainable_layers=1)) == last_block | {
        "model.model.norm.weight",
        "model.lm_head.weight",
    }
    with pytest.raises(ValueError, match="choose one"):
        hf_lm(freeze=True, trainable_layers=1)
    with pytest.raises(ValueError, match="trainable_layers"):
        hf_lm(trainable_layers=3)


def test_hf_lora_trains_only_adapters_and_starts_as_identity():
    from vtok_lit.core.hf_language_model import LoRALinear

    plain, adapted = hf_lm(), hf_lm(lora_rank=4)
    adapters = [module for module in adapted.modules() if isinstance(module, LoRALinear)]
    assert len(adapters) == 2 * 2  # q and v in each of 2 layers
    assert trainable(adapted) == {
        f"model.model.layers.{layer}.self_attn.{projection}.{part}.weight"
        for layer in (0, 1)
        for projection in ("q_proj", "v_proj")
        for part in ("lora_down", "lora_up")
    }
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            adapted(adapted.embed_tokens(ids)).logits, plain(plain.embed_tokens(ids)).logits
        )

    adapted.train()
    adapted(adapted.embed_tokens(ids)).logits.sum().backward()
    assert all(adapter.lora_up.weight.grad.abs().sum() > 0 for adapter in adapters)

    with_last_block = trainable(hf_lm(lora_rank=4, trainable_layers=1))
    assert "model.model.layers.1.self_attn.q_proj.base.weight" in with_last_block
    assert "model.model.layers.0.self_attn.q_proj.base.weight" not in with_last_block
