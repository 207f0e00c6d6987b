"""Text tokenizers: strings to token ids and back, with the special ids an LM needs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

import torch

from vtok_lit.core.language_models import LanguageModel


class TextTokenizer(ABC):
    """Turns text into ids and back.

    Attributes:
        vocab_size: number of ids, special ones included.
        pad_id: id that fills padded positions.
        bos_id: id that starts a sequence.
        eos_id: id that ends a sequence.
    """

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, leaving out special tokens."""

    def batch_encode(
        self,
        texts: list[str],
        max_length: int,
        padding_side: Literal["left", "right"] = "right",
        add_bos: bool = True,
        add_eos: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad a batch to its longest sequence (at most ``max_length``).

        Left padding suits prompts that generation continues; right padding suits training targets.
        Sequences longer than ``max_length`` lose their tail, but keep the end token if ``add_eos``.

        Returns:
            ids ``(B, L)`` long and attention mask ``(B, L)`` bool, True on real tokens.
        """
        sequences = []
        for text in texts:
            ids = ([self.bos_id] if add_bos else []) + self.encode(text)
            end = [self.eos_id] if add_eos else []
            sequences.append(ids[: max_length - len(end)] + end)
        length = max(map(len, sequences))
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for row, sequence in enumerate(sequences):
            columns = (
                slice(length - len(sequence), length) if padding_side == "left" else slice(0, len(sequence))
            )
            ids[row, columns] = torch.tensor(sequence, dtype=torch.long)
            mask[row, columns] = True
        return ids, mask


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes as ids 0-255, then pad 256, bos 257, eos 258; 259 is reserved, making 260 ids.

    Needs no vocabulary file and never meets an unknown character, at the price of long sequences.
    """

    def __init__(self) -> None:
        self.pad_id, self.bos_id, self.eos_id = 256, 257, 258
        self.vocab_size = 260

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class OpenCLIPTokenizer(TextTokenizer):
    """CLIP's byte-level BPE (49,408 ids) as bundled with ``open_clip``, plus a pad id of its own (49408).

    It lowercases text and drops redundant whitespace, so only such text decodes back unchanged;
    punctuation comes back set apart by spaces.
    """

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer()
        self.bos_id = self._bpe.sot_token_id
        self.eos_id = self._bpe.eot_token_id
        # open_clip pads with 0, which is also the id of "!": a fresh id keeps padding distinguishable.
        self.pad_id = self._bpe.vocab_size
        self.vocab_size = self._bpe.vocab_size + 1

    def encode(self, text: str) -> list[int]:
        return self._bpe.encode(text)

    def decode(self, ids: list[int]) -> str:
        special = {self.pad_id, self.bos_id, self.eos_id}
        return self._bpe.decode([i for i in ids if i not in special]).strip()


class HFTokenizer(TextTokenizer):
    """A Hugging Face tokenizer saved in a local directory (needs the ``hf`` extra).

    Args:
        path: directory written by ``save_pretrained``; nothing is downloaded.
    """

    def __init__(self, path: str) -> None:
        from vtok_lit.core.hf_language_model import import_transformers

        transformers = import_transformers()
        if not Path(path).is_dir():
            raise FileNotFoundError(f"no tokenizer directory at {path}")
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        if self._tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer at {path} has no end-of-sequence token")
        self.eos_id = self._tokenizer.eos_token_id
        # Many causal-LM tokenizers (GPT-2, Qwen) define neither pad nor bos; their eos stands in.
        self.pad_id = (
            self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self.eos_id
        )
        self.bos_id = (
            self._tokenizer.bos_token_id if self._tokenizer.bos_token_id is not None else self.eos_id
        )
        # len() counts added tokens; .vocab_size does not.
        self.vocab_size = len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)


def text_tokenizer_for(language_model: LanguageModel, text_tokenizer: TextTokenizer | None) -> TextTokenizer:
    """The text tokenizer (bytes when unset); refused if it has more ids than the LM has logits."""
    text_tokenizer = text_tokenizer or ByteTokenizer()
    if text_tokenizer.vocab_size > language_model.vocab_size:
        raise ValueError(
            f"The text tokenizer has {text_tokenizer.vocab_size} ids but the language model only "
            f"{language_model.vocab_size} (model.init_args.language_model.init_args.vocab_size)."
        )
    return text_tokenizer
