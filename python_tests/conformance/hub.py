"""Offline stand-ins for the model-hub repositories vLLM's scheduler tests name.

The tests build `ModelConfig(model="facebook/opt-125m", ...)`, which reads the model's
`config.json` (and `generation_config.json`) from the Hugging Face hub. This writes a local hub
cache holding exactly those files (the published configs, no weights, no tokenizer), and the
suite runs with `HF_HUB_OFFLINE=1` pointed at it, so no test reaches the network.

The multimodal models the tests also name (llava-1.5, Qwen2.5-VL) get their configs too, but
their tests are skipped (`plugin.UNLOADABLE_MODELS`: their vLLM classes need torchvision and
their processors need tokenizer/image-processor files); so are those naming Qwen3-Next, whose
config is not here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_COMMIT = "0" * 40

# The published config.json of facebook/opt-125m.
_OPT_125M = {
    "activation_dropout": 0.0,
    "activation_function": "relu",
    "architectures": ["OPTForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "do_layer_norm_before": True,
    "dropout": 0.1,
    "eos_token_id": 2,
    "ffn_dim": 3072,
    "hidden_size": 768,
    "init_std": 0.02,
    "layerdrop": 0.0,
    "max_position_embeddings": 2048,
    "model_type": "opt",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "prefix": "</s>",
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": 50272,
    "word_embed_proj_dim": 768,
}

# The published config.json of llava-hf/llava-1.5-7b-hf.
_LLAVA_15_7B = {
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}

# The published config.json of Qwen/Qwen2.5-VL-3B-Instruct.
_QWEN25_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

# The published config.json of Qwen/Qwen3-0.6B (vLLM 0.34's mamba checkpoint test names it).
_QWEN3_06B = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

REPOS: dict[str, dict[str, Any]] = {
    "facebook/opt-125m": {
        "config.json": _OPT_125M,
        "generation_config.json": {"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1},
    },
    "llava-hf/llava-1.5-7b-hf": {"config.json": _LLAVA_15_7B},
    "Qwen/Qwen2.5-VL-3B-Instruct": {"config.json": _QWEN25_VL_3B},
    "Qwen/Qwen3-0.6B": {"config.json": _QWEN3_06B},
}


def write_hub_cache(root: Path) -> Path:
    """Write a Hugging Face hub cache (the HF_HUB_CACHE layout) of REPOS under `root`."""
    for repo, files in REPOS.items():
        base = root / ("models--" + repo.replace("/", "--"))
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text(_COMMIT)
        snapshot = base / "snapshots" / _COMMIT
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (snapshot / name).write_text(json.dumps(content, indent=1))
    return root
