"""Loss batches of GRPO rollouts: prompt + the exact sampled tokens, agent tokens labelled.

A row that carries `completion_ids` (one sampled assistant turn: the step mode, and the episode
mode without history) is trained on exactly the tokens the sampler drew: the prompt (its messages
without the last assistant turn, tokenised with its images as at generation) followed by those
ids; only they carry labels. Decoding and re-encoding would train on the canonical tokenisation
of the text instead, which is not what was sampled for text that does not round-trip.
Other rows (the episode mode with history: one chat with every turn) go through the SFT collator
(`sft_data.ChatCollator`): re-tokenised text, observations and prompts masked.
"""

from __future__ import annotations

from ibisagent.policies.vlm_chat import MAX_PIXELS
from ibisagent.train.vlm.sft_data import IGNORE, ChatCollator


def collate_rollout_rows(processor, rows: list[dict], max_pixels: int = MAX_PIXELS) -> dict:
    """Model inputs (right padded, B x T) with `labels` (IGNORE outside agent tokens)."""
    if not all(r.get("completion_ids") is not None for r in rows):
        return ChatCollator(processor, max_pixels)(rows)
    import torch

    tok = processor.tokenizer
    prompts = [
        processor.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True) for r in rows
    ]
    images = [img for r in rows for img in r["images"]]
    tok.padding_side = "right"
    enc = processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
    n_prompt = enc["attention_mask"].sum(1).tolist()
    seqs = [enc["input_ids"][b, : n_prompt[b]].tolist() + list(r["completion_ids"]) for b, r in enumerate(rows)]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        labels[b, n_prompt[b] : len(s)] = ids[b, n_prompt[b] : len(s)]
    out = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    out.update(input_ids=ids, attention_mask=mask, labels=labels)
    if "mm_token_type_ids" in enc:  # image tokens lie in the prompt; completion tokens are text (0)
        mm = torch.zeros((len(rows), T), dtype=enc["mm_token_type_ids"].dtype)
        for b in range(len(rows)):
            mm[b, : n_prompt[b]] = enc["mm_token_type_ids"][b, : n_prompt[b]]
        out["mm_token_type_ids"] = mm
    return out
