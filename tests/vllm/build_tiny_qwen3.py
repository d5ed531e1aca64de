"""Build a tiny random-weight Qwen3 that vLLM can serve on the CPU, without any download.

A locally trained byte-level BPE tokenizer with Qwen3's special tokens (<|im_start|>,
<|im_end|>, <think>, </think>), a chat template that honours `enable_thinking` like Qwen3's,
and a 2-layer model with head_dim 32 (vLLM's CPU attention needs 32 or more).

Usage: python tests/vllm/build_tiny_qwen3.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3's template in miniature: with thinking off the assistant turn opens with an empty think
# block (what vLLM's qwen3 reasoning parser detects); with thinking on it opens with <think>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false -%}<think>\n\n</think>\n\n"
    "{%- else -%}<think>\n{%- endif -%}"
    "{%- endif -%}"
)

CORPUS = [
    "The gateway routes each query to the cheapest model that can answer it well.",
    "Local Qwen3 runs on vLLM; the cloud model answers the hard questions.",
    "请比较两家公司的产品，并分析它们的优势和劣势。",
    "华东精工是一家制造企业，主要客户在金融和汽车行业。",
    "Think step by step, then answer briefly with the key points.",
] * 50


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=True, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(config)
    # Random weights happen to favour </think> at every step; with tied embeddings, zero rows
    # give the special tokens a logit of 0, below the best ordinary token, so greedy output is
    # ordinary text and the reasoning/content split depends only on the chat template.
    with torch.no_grad():
        for token in SPECIAL:
            model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(token)].zero_()
    model.save_pretrained(out)
    print(f"tiny Qwen3 written to {out} (vocab {len(tokenizer)})")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
