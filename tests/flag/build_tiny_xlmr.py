"""Build tiny random-weight XLM-R models that FlagEmbedding loads like bge-m3 and
bge-reranker-v2-m3, without any download: hidden size 32, 2 layers, a locally trained tokenizer.
The real loading code (BGEM3FlagModel, FlagReranker) runs on them in well under a second.

Usage: python tests/flag/build_tiny_xlmr.py OUT_DIR   (writes OUT_DIR/bge-m3 and OUT_DIR/reranker)
"""

from __future__ import annotations

import sys
from pathlib import Path

CORPUS = ["华东精工生产精密数控机床，总部在苏州。", "南方银行提供供应链金融服务。", "The gateway routes queries.",
          "启明风控云缩短贷款审批时间。", "What is the capital of France?"] * 40


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.normalizer = normalizers.NFKC()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", core.token_to_id("<s>")), ("</s>", core.token_to_id("</s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                        model_max_length=512,
                                        # as XLMRobertaTokenizerFast: no token_type_ids (type_vocab_size is 1)
                                        model_input_names=["input_ids", "attention_mask"])
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              type_vocab_size=1)
    torch.manual_seed(0)
    for name, model in (("bge-m3", XLMRobertaModel(config)),
                        ("reranker", XLMRobertaForSequenceClassification(config.__class__(**{**config.to_dict(),
                                                                                            "num_labels": 1})))):
        target = out / name
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    print(f"tiny XLM-R models written to {out}")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
