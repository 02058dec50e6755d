"""Can the click-trained SAM mask decoder, steered by text, draw a better belief than the FiLM belief net?

    python bench/compact_decoder_belief.py ../shared/data [--minutes 20] [--tokens 4] [--batch 8]
    python bench/compact_decoder_belief.py ../shared/data --load runs/decoder_belief.pt --episodes

Learns a map from the query's MiniLM embedding to `--tokens` sparse prompt tokens (256-d) and
fine-tunes LiteMedSAM's mask decoder (click-trained weights) on the training split of `train compact`
(cached embeddings), with the belief net's loss (10 x BCE + Dice) on the 256 x 256 reference in the
tool frame. Then prints the thresholded IoU (tool frame) on the held-out split of: the decoder, the
shipped belief net (`--weights`), and the mean of the two nets' logits. `--load` reads a decoder
this script saved instead of training one; `--episodes` then also plays the held-out episodes
(`evaluate_compact`, the policy's click rule) with the mean (`--combine sum`: the sum) of the two
beliefs as the policy's belief.
"""

from __future__ import annotations

import random
import time

import numpy as np
from _heldout import heldout_parser


def main() -> None:
    ap = heldout_parser(__doc__)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--load", type=str, default=None, help="a decoder saved by this script: skip training")
    ap.add_argument("--episodes", action="store_true", help="also play held-out episodes with the mean belief")
    ap.add_argument("--out", type=str, default="runs/decoder_belief.pt")
    ap.add_argument("--combined-only", action="store_true", help="--episodes: skip the belief net's own episodes")
    ap.add_argument(
        "--combine",
        choices=["mean", "sum"],
        default="mean",
        help="played belief: the mean of the two logit maps, or their sum (keeps the belief net's scale where "
        "the decoder is unsure); both threshold alike",
    )
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.metrics import iou
    from ibisagent.policies.compact import load_net
    from ibisagent.tools.litemedsam_model import build_model, decode_embedded
    from ibisagent.train.compact import belief_loss, build_examples, embed_query_texts, lr_scale
    from ibisagent.train.embedding_cache import cached_embeddings

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train, held = split_by_image(collect_pairs(args.data), args.heldout)
    emb = cached_embeddings(train + held, args.cache_dir)
    pos, _, feats, _ = build_examples(train, emb, 3, args.seed, absent_per_image=0)
    hpos, _, hfeats, _ = build_examples(held, emb, 0, args.seed, absent_per_image=0)
    text_emb = embed_query_texts(pos + hpos, [], print)
    print(f"{len(pos)} training targets, {len(hpos)} held-out")

    sam, _ = build_model("clicks")
    dec, pe = sam.mask_decoder, sam.prompt_encoder
    dense0 = pe.no_mask_embed.weight.detach().reshape(1, -1, 1, 1).expand(1, -1, 64, 64)
    to_tokens = torch.nn.Sequential(torch.nn.Linear(384, 512), torch.nn.ReLU(), torch.nn.Linear(512, args.tokens * 256))
    dec.train()
    opt = torch.optim.AdamW(
        [{"params": dec.parameters(), "lr": args.lr}, {"params": to_tokens.parameters(), "lr": 1e-3}],
        weight_decay=1e-4,
    )
    base_lr = [g["lr"] for g in opt.param_groups]

    def forward(f, txt):
        tokens = to_tokens(txt).reshape(len(txt), args.tokens, 256)
        with torch.autocast("cpu", enabled=False):
            logits, _ = decode_embedded(sam, f, tokens, dense0.expand(len(txt), -1, -1, -1))
        return logits  # B x 1 x 256 x 256

    budget, t0, step, ema = args.minutes * 60, time.perf_counter(), 0, None
    if args.load:
        blob = torch.load(args.load, map_location="cpu", weights_only=True)
        dec.load_state_dict(blob["decoder"])
        to_tokens.load_state_dict(blob["to_tokens"])
        budget = 0
    while time.perf_counter() - t0 < budget:
        frac = (time.perf_counter() - t0) / budget
        for g, lr in zip(opt.param_groups, base_lr):
            g["lr"] = lr * lr_scale(step, frac)
        batch = [pos[rng.randrange(len(pos))] for _ in range(args.batch)]
        f = torch.stack([feats[p[0]].float() for p in batch])
        tgt = torch.from_numpy(np.stack([p[3] for p in batch]).astype(np.float32))[:, None]
        txt = torch.stack([text_emb[rng.choice(p[2])] for p in batch])
        loss, _ = belief_loss(forward(f, txt), tgt, torch.ones(len(batch)))  # every target present
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(dec.parameters()) + list(to_tokens.parameters()), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0:
            print(f"step {step} loss {ema:.3f} {(time.perf_counter() - t0) / 60:.1f} min", flush=True)

    dec.eval()
    net = load_net(args.weights)
    rows = {"decoder": [], "belief net": [], "mean": []}
    scale = {"decoder": [], "belief net": []}
    with torch.no_grad():
        for key, _, texts, t256 in hpos:
            f = hfeats[key].float()[None]
            txt = text_emb[texts[0]][None]
            d = forward(f, txt)[0, 0]
            b = F.interpolate(net.belief(net.reduce(f), txt), size=256, mode="bilinear")[0, 0]
            scale["decoder"].append(d.abs().median().item())
            scale["belief net"].append(b.abs().median().item())
            for name, lg in (("decoder", d), ("belief net", b), ("mean", (d + b) / 2)):
                rows[name].append(iou(lg.numpy() > 0, t256))
    if not args.load:
        print(f"{step} steps in {args.minutes} min")
    for name, v in rows.items():
        print(f"{name}: thresholded IoU {np.mean(v):.4f} over {len(v)} held-out targets")
    for name, v in scale.items():
        print(f"{name}: median |logit| {np.mean(v):.2f} (mean over targets)")
    if not args.load:
        torch.save({"decoder": dec.state_dict(), "to_tokens": to_tokens.state_dict()}, args.out)
    if args.episodes:
        play_episodes(args, net, forward)


def play_episodes(args, net, decoder_forward) -> None:
    """Held-out episodes of the compact policy whose belief is the mean (or sum, `--combine`) of the
    belief net's logits (upsampled to 256 x 256) and the decoder's; presence and novelty stay the
    belief net's."""
    import torch.nn.functional as F
    from _heldout import heldout_samples, print_episodes, with_belief

    def combined(feats, text):
        logits, presence = net(feats, text)
        both = F.interpolate(logits, size=256, mode="bilinear", align_corners=False) + decoder_forward(feats, text)
        return (both / 2 if args.combine == "mean" else both), presence

    held, emb_files = heldout_samples(args)
    if not args.combined_only:
        print_episodes("belief", "belief net", f"compact:{args.weights}", held, emb_files)
    print_episodes("belief", args.combine, with_belief(args.weights, combined), held, emb_files)


if __name__ == "__main__":
    main()
