import os

import pytest
import torch

from vtok_lit.core.text_tokenizers import ByteTokenizer, HFTokenizer, OpenCLIPTokenizer

# Set before transformers is first imported: its hub client reads this once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_byte_tokenizer_round_trips_unicode():
    tokenizer = ByteTokenizer()
    text = "Ein Hund läuft 🐕 über 草地!"
    ids = tokenizer.encode(text)
    assert max(ids) < 256 and len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]) == text
    assert tokenizer.vocab_size == 260
    assert len({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}) == 3


def test_batch_encode_pads_on_the_requested_side_and_truncates():
    tokenizer = ByteTokenizer()
    ids, mask = tokenizer.batch_encode(["ab", "abcd"], max_length=16, padding_side="left")
    bos, eos, pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
    assert ids.tolist() == [[pad, pad, bos, 97, 98, eos], [bos, 97, 98, 99, 100, eos]]
    assert mask.tolist() == [[False, False, True, True, True, True], [True] * 6]

    ids, mask = tokenizer.batch_encode(["ab", "abcdefgh"], max_length=5, padding_side="right")
    assert ids.tolist() == [[bos, 97, 98, eos, pad], [bos, 97, 98, 99, eos]]
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [4, 5]


def test_open_clip_tokenizer_round_trips_lowercase_text():
    tokenizer = OpenCLIPTokenizer()
    text = "a dog chases a red ball across the park"
    ids = tokenizer.encode(text)
    assert tokenizer.bos_id not in ids and tokenizer.eos_id not in ids
    assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]) == text
    assert tokenizer.decode(tokenizer.encode("A  Dog")) == "a dog"
    assert tokenizer.pad_id == tokenizer.vocab_size - 1
    assert len({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}) == 3


@pytest.fixture
def saved_hf_tokenizer(tmp_path):
    """A word-level tokenizer trained on a few sentences and saved like a downloaded one."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer.train_from_iterator(["a dog runs in the park", "the cat sleeps on a mat"], trainer)
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    wrapped.save_pretrained(tmp_path)
    return tmp_path


def test_hf_tokenizer_loads_a_local_directory(saved_hf_tokenizer):
    tokenizer = HFTokenizer(str(saved_hf_tokenizer))
    ids = tokenizer.encode("the dog sleeps")
    assert len(ids) == 3 and tokenizer.bos_id not in ids
    assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id]) == "the dog sleeps"
    assert tokenizer.pad_id == tokenizer.eos_id  # no pad token was saved
    assert tokenizer.vocab_size == 3 + len(set("a dog runs in the park the cat sleeps on a mat".split()))


def test_hf_tokenizer_names_a_missing_directory(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match="no-such-tokenizer"):
        HFTokenizer(str(tmp_path / "no-such-tokenizer"))
