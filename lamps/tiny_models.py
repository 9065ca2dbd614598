"""The tiny model directories the tests, benchmarks and replay run on, written on the fly.

A random-weight Llama (config and safetensors), a word-level chat tokenizer over its
vocabulary, and a config-only model directory, enough for a scheduler (removed at exit). Torch,
transformers and tokenizers are imported inside the functions, so importing this is cheap.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

TINY_LLAMA_VOCAB = 512
"""Vocabulary of the tiny random-weight Llama (token ids below it are valid prompts)."""


def write_tiny_llama(path: Path, max_len: int = 2048, seed: int = 0) -> Path:
    """Writes a random-weight Llama (2 layers, config + safetensors, no tokenizer) to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TINY_LLAMA_VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vLLM's CPU attention needs 64; 16 does not work
        max_position_embeddings=max_len,
        dtype="float32",  # transformers 5 name (torch_dtype is its deprecated alias)
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    return path


CHAT_ROLES = ("system", "user", "assistant", "tool")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' }}"
    "{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}"
    "{{ ' call ' + c['function']['name'] }}{% endfor %}{% endif %}"
    "{{ ' <|end|> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)
"""The tiny tokenizer's chat template: `<|role|> content <|end|>` per message."""


def tiny_word_ids() -> list[int]:
    """Token ids of the tiny tokenizer's words (`w0`...), the ids a test lets the model sample."""
    first = 3 + len(CHAT_ROLES) + 1
    return list(range(first, TINY_LLAMA_VOCAB))


def write_tiny_chat_tokenizer(path: Path) -> Path:
    """Writes a word-level tokenizer over the tiny Llama's vocabulary, with a chat template.

    Ids 0-2 are `<unk>`, `<s>`, `</s>`, then `<|system|>`, `<|user|>`, `<|assistant|>`,
    `<|tool|>`, `<|end|>`, then the words `w0`, `w1`, ... (`tiny_word_ids()`). Text is words
    separated by spaces, so any sequence of word ids decodes and encodes back to itself: a
    client that resends a conversation resends exactly the tokens the model produced.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", *(f"<|{r}|>" for r in CHAT_ROLES), "<|end|>"]
    words = [f"w{i}" for i in range(TINY_LLAMA_VOCAB - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return path


@functools.cache
def scheduler_model_dir(max_model_len: int, vocab_size: int) -> Path:
    """A directory with only a Llama config.json, enough for a scheduler (removed at exit)."""
    # The scheduler never loads weights; ModelConfig only needs a config.json to read.
    path = _scratch_dir() / f"len{max_model_len}-vocab{vocab_size}"
    path.mkdir(exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_model_len,
        "torch_dtype": "float16",
        "rms_norm_eps": 1e-5,
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


@functools.cache
def _scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="lamps-harness-model-"))
    atexit.register(shutil.rmtree, path, True)
    return path
