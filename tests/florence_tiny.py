"""A tiny random-weight Florence-2 saved like a hub checkpoint: processor, tokenizer with location tokens, config."""

from __future__ import annotations

from pathlib import Path


def save_tiny_florence2(folder: Path, seed: int = 0) -> Path:
    """Write a Florence-2 with a shrunk config and a byte-level BPE tokenizer (256 byte symbols,
    BART's special tokens, `<image>`, `<loc_0>`..`<loc_999>`) to `folder`, as save_pretrained does."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        BartTokenizerFast,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = BartTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)])
    images = CLIPImageProcessor(
        size={"height": 64, "width": 64},
        crop_size={"height": 64, "width": 64},
        do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    images.image_seq_length = 5  # 64 px / 32 = 2 x 2 patches + 1 pooled token
    parse = (
        "pure_text",
        "description_with_bboxes",
        "bboxes",
        "ocr",
        "phrase_grounding",
        "polygons",
        "description_with_polygons",
        "description_with_bboxes_or_polygons",
    )
    processor = Florence2Processor(
        image_processor=images, tokenizer=tokenizer, post_processor_config={k: {} for k in parse}
    )
    config = Florence2Config(
        vision_config=dict(
            depths=[1, 1, 1, 1],
            embed_dim=[16, 32, 32, 64],
            num_heads=[1, 2, 2, 4],
            num_groups=[1, 2, 2, 4],
            window_size=2,
            projection_dim=32,
            max_position_embeddings=8,
            max_temporal_embeddings=4,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
        ),
        image_token_id=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    folder = Path(folder)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
