"""`ibisagent teach DATA --out DIR`: the compact policy learns new structures (or a known one on a
new kind of image) from a few image/mask pairs, starting from the shipped weights.

Where the structure is: each taught structure gets an exemplar probe (`policies.exemplar_probe`),
a per-cell logistic regression on the image embedding fitted on its pairs alone, which answers on
images of the kind it was taught on; the belief network's weights stay as they were, so nothing it
knew is forgotten. Whether it is there: the presence head's text branch learns the new queries
(present on their images, out-of-domain queries absent), and the queries of the structures it
already knew must keep the presence of the starting weights on the new images (self-distillation).
The new structures' queries join the known queries, so the policy reads them, and their typos and
synonyms, as known. `TeachConfig.finetune_belief` instead also fine-tunes the belief network's
text-conditioned layers (each FiLM block's text-to-modulation layer and the belief head), held to
the starting weights' beliefs for the known queries: the earlier recipe, kept for comparison
(docs/experiments.md: it learns little from 5 pairs and costs the other sources).

Input is checked before anything is trained; a bad input is an IbisInputError naming the file,
never a half-written policy: DIR/compact_policy.pt, DIR/model_card.json and DIR/model_card.md are
each written atomically at the end.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes


@dataclass
class TeachConfig:
    minutes: float = 3.0  # training time at most (embedding the new images comes before it, about 1 s an image)
    max_steps: int = 300
    min_pairs: int = 5  # image/mask pairs per structure, at least
    batch_size: int = 12
    lr: float = 1e-3
    keep_weight: float = 1.0  # weight of the self-distillation loss that keeps what the policy knew
    keep_queries: int = 2  # known queries distilled per new image and step
    shift_cells: int = 4  # augmentation as in training (`train.compact.sft.augment`)
    channel_dropout: float = 0.1
    query_variants: int = 3
    finetune_belief: bool = False  # also fine-tune the belief net's text-conditioned layers (the earlier recipe)
    trunk: bool = False  # with finetune_belief: the conv trunk too (more to learn a new look, more to forget)
    probe_weight_decay: float = 1e-3  # L2 of the exemplar probes (`exemplar_probe.fit_probe`)
    probe_hidden: int = 16  # hidden units of each probe (0: a linear probe)
    seed: int = 0


def check_pairs(samples, known: list[str], min_pairs: int) -> tuple[dict[str, int], list[str]]:
    """Check teaching data before any training: every pair readable, every mask non-empty, at least
    `min_pairs` pairs per structure. -> (structure -> pairs, decisions stated for the model card).
    A structure with the name of a known one (after normalising case, spelling and plurals) refines
    the known structure: its pairs are more examples of it (e.g. the same organ in a new kind of
    image). A name that reads as a known structure under other words is taught under the name given.
    Raises IbisInputError naming the first bad file, or the structures with too few pairs."""
    from ibisagent.data.vocabulary import Vocabulary

    if not samples:
        raise IbisInputError("DATA", "no image/mask pairs found")
    for s in samples:
        if s.mask is None and s.loader is None:
            raise IbisInputError(s.image, f"no mask given for '{s.structure}' (teach needs image/mask pairs)")
        try:
            _, mask = s.load()
        except IbisInputError as exc:
            raise IbisInputError(exc.args[0] if exc.args else s.image, f"unreadable: {exc}") from None
        if mask is None or not mask.any():
            raise IbisInputError(s.mask or s.image, f"the mask of '{s.structure}' is empty: nothing to learn from")
    counts = Counter(s.structure for s in samples)
    few = {k: v for k, v in sorted(counts.items()) if v < min_pairs}
    if few:
        listed = ", ".join(f"'{k}' has {v}" for k, v in few.items())
        raise IbisInputError(
            "DATA", f"teach needs at least {min_pairs} image/mask pairs per structure: {listed} (add pairs)"
        )
    vocab = Vocabulary(known)
    decisions = []
    for name in counts:
        res = vocab.resolve(f"Segment the {name}.")
        if res.structure is not None and res.how == "exact":
            decisions.append(
                f"'{name}' is a structure the policy already knows ('{res.structure}'): its pairs refine it"
            )
        elif res.structure is not None:
            decisions.append(f"'{name}' reads as the known '{res.structure}' ({res.how}); taught under the name given")
        else:
            decisions.append(f"'{name}' is new to the policy")
    return dict(counts), decisions


def teach(
    samples,
    emb_files: dict,
    out: Path,
    base: Path | None = None,
    cfg: TeachConfig | None = None,
    log=print,
    on_step=None,
):
    """Fine-tune the compact policy of `base` (default: the shipped weights) on `samples` (checked
    with `check_pairs`; `emb_files`: image -> cached embedding, `train.embedding_cache`). Writes
    OUT/compact_policy.pt and OUT/model_card.json / .md; returns the card. `on_step(step)` is called
    after every step (the app's progress); an exception it raises abandons the run, nothing written."""
    import torch

    from ibisagent.data.queries import out_of_domain_queries
    from ibisagent.data.vocabulary import Vocabulary, structures_of_queries
    from ibisagent.policies.belief_net import WEIGHTS, load_net, pool_features, save_net
    from ibisagent.policies.exemplar_probe import fit_probe
    from ibisagent.policies.text_encoder import embed_texts
    from ibisagent.train.compact.sft import augment, belief_loss, build_examples, embed_query_texts, lr_scale, use_bf16

    cfg = cfg or TeachConfig()
    base = Path(base) if base else WEIGHTS
    t0 = time.perf_counter()
    net = load_net(base)
    old = load_net(base)
    known = structures_of_queries(net.known_texts)
    counts, decisions = check_pairs(samples, known, cfg.min_pairs)
    for d in decisions:
        log(d)
    missing = [s.image for s in samples if not isinstance(emb_files.get(s.image), Path)]
    if missing:
        raise IbisInputError(missing[0], "image not embedded (unreadable by the tool's encoder)")
    pos, feats, of_structure, skipped = [], {}, {}, 0
    for name in counts:  # one structure at a time: each probe fits its own pairs
        group = [s for s in samples if s.structure == name]
        p, _, f, k = build_examples(group, emb_files, cfg.query_variants, cfg.seed, None, 0)
        of_structure[name] = p
        pos, feats, skipped = pos + p, feats | f, skipped + k
    if skipped or not pos:
        raise IbisInputError("DATA", f"{skipped} of {len(samples)} pairs give no target in the tool's frame")
    text_emb = embed_query_texts(pos, [], log=log)
    keys = list(feats)
    row = {k: i for i, k in enumerate(keys)}
    with torch.no_grad():
        reduced = torch.stack([net.reduce(feats[k].float()[None])[0] for k in keys])
        pooled = torch.stack([pool_features(feats[k].float()[None])[0] for k in keys])
        standardised = net.presence.standardise(pooled)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    old_texts = list(old.known_texts) or ["Segment the target."]
    old_emb = old.known_emb if len(old.known_texts) else embed_texts(old_texts)
    ood = out_of_domain_queries(random.Random(f"{cfg.seed}:teach-ood"), 32)
    ood_emb = embed_texts(ood)

    probes = {}
    if not cfg.finetune_belief:
        for name, group in of_structure.items():
            idx = torch.tensor([row[p[0]] for p in group])
            target = torch.from_numpy(np.stack([p[1] for p in group]))
            probes[name] = fit_probe(
                reduced[idx],
                target,
                standardised[idx],
                name,
                weight_decay=cfg.probe_weight_decay,
                hidden=cfg.probe_hidden,
            )
        log(f"fitted {len(probes)} exemplar probe(s) in {time.perf_counter() - t0:.0f} s")

    for p in net.parameters():
        p.requires_grad_(False)
    films = [b.film for b in [*net.blocks, *getattr(net, "coarse", [])]] if cfg.finetune_belief else []
    trunk = [net.proj, *(b.conv for b in net.blocks), *(b.norm for b in net.blocks)] if cfg.trunk and films else []
    head = [net.head] if cfg.finetune_belief else []
    params = [p for m in [*films, *trunk, *head, net.presence.text] for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    bf16 = use_bf16("auto")
    net.train()
    net.presence.eval()  # its dropout off: the presence head is fitted on fixed pooled features
    budget, t1, step, losses = cfg.minutes * 60, time.perf_counter(), 0, []
    zero = torch.zeros(())
    while time.perf_counter() - t1 < budget and step < cfg.max_steps:
        frac = max((time.perf_counter() - t1) / budget, step / cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_scale(step, frac)
        batch = [pos[rng.randrange(len(pos))] for _ in range(cfg.batch_size)]
        idx = torch.tensor([row[b[0]] for b in batch])
        txt = torch.stack([text_emb[rng.choice(b[2])] for b in batch]).float()
        k_idx = idx.repeat_interleave(cfg.keep_queries)
        k_txt = old_emb[torch.randint(0, len(old_emb), (len(k_idx),))].float()
        loss, keep, dice = zero, zero, zero
        if cfg.finetune_belief:
            f = reduced[idx]
            tgt = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
            f, tgt = augment(f, tgt, cfg.shift_cells, cfg.channel_dropout, rng, 0.0)
            fk = reduced[k_idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net.belief(torch.cat([f, fk]), torch.cat([txt, k_txt])).float()
                with torch.no_grad():
                    want_belief = old.belief(fk, k_txt).float().sigmoid()
            loss, dice = belief_loss(logits[: len(batch)], tgt, torch.ones(len(batch)))
            keep = torch.nn.functional.binary_cross_entropy_with_logits(logits[len(batch) :], want_belief) * 10
        # presence: the new queries are present on their images, out-of-domain queries are not
        pres_new = net.presence(pooled[idx], txt)
        ood_idx = torch.randint(0, len(ood), (len(batch),))
        pres_ood = net.presence(pooled[idx], ood_emb[ood_idx])
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
            torch.cat([pres_new, pres_ood]), torch.cat([torch.ones(len(batch)), torch.zeros(len(batch))])
        )
        # keep: the known queries on the new images answer as the starting weights did
        with torch.no_grad():
            want_presence = old.presence(pooled[k_idx], k_txt).sigmoid()
        keep = keep + torch.nn.functional.binary_cross_entropy_with_logits(
            net.presence(pooled[k_idx], k_txt), want_presence
        )
        loss = loss + cfg.keep_weight * keep
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if on_step is not None:
            on_step(step)
        if step % 50 == 0:
            log(f"step {step} loss {np.mean(losses[-50:]):.3f} dice-loss {dice.mean().item():.3f}")
    net.eval()
    with torch.no_grad():
        txt = torch.stack([text_emb[p[2][0]] for p in pos]).float()
        f = reduced[torch.tensor([row[p[0]] for p in pos])]
        tgt = torch.from_numpy(np.stack([p[1] for p in pos]))[:, None]
        if probes:
            after = torch.cat(
                [probes[k](reduced[torch.tensor([row[p[0]] for p in g])]) for k, g in of_structure.items()]
            )
        else:
            after = net.belief(f, txt)
        _, dice_after = belief_loss(after, tgt, torch.ones(len(pos)))
        _, dice_before = belief_loss(old.belief(f, txt), tgt, torch.ones(len(pos)))
    new_texts = sorted({t for p in pos for t in p[2]} - set(net.known_texts))
    if new_texts:
        net.known_texts = list(net.known_texts) + new_texts
        net.known_emb = torch.cat([net.known_emb, torch.stack([text_emb[t] for t in new_texts]).float()])
    vocab = Vocabulary(structures_of_queries(net.known_texts))
    for name, probe in probes.items():  # keyed as the policy reads the name (a known one's own spelling)
        probe.structure = vocab.resolve(f"Segment the {name}.").structure or name
        net.probes[probe.structure] = probe
    card = {
        "base": str(base),
        "structures": counts,
        "pairs": [{"image": str(s.image), "mask": str(s.mask), "structure": s.structure} for s in samples],
        "decisions": decisions,
        "config": asdict(cfg),
        "steps": step,
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "taught_pairs_belief_dice": {
            "before": round(1 - float(dice_before.mean()), 3),
            "after": round(1 - float(dice_after.mean()), 3),
        },
        "loss_first_last": [round(losses[0], 4), round(float(np.mean(losses[-20:])), 4)] if losses else None,
        "belief": "fine-tuned text-conditioned layers" if cfg.finetune_belief else "exemplar probe per structure",
        "probes": {k: {"examples": p.examples, "radius": round(float(p.radius), 3)} for k, p in net.probes.items()},
        "use": f"--policy compact:{out / 'compact_policy.pt'}",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_net(net, out / "compact_policy.pt", taught=card, steps=step)
    atomic_write_bytes(out / "model_card.json", json.dumps(card, indent=1).encode())
    atomic_write_bytes(out / "model_card.md", model_card_markdown(card).encode())
    log(
        f"taught {', '.join(counts)} in {step} steps ({card['minutes']} min); belief Dice on the taught pairs "
        f"{card['taught_pairs_belief_dice']['before']:.3f} -> {card['taught_pairs_belief_dice']['after']:.3f}"
    )
    return card


def model_card_markdown(card: dict) -> str:
    lines = [
        "# Taught compact policy",
        "",
        f"Started from `{card['base']}`; {card['steps']} steps, {card['minutes']} min.",
        f"Use it with `{card['use']}`.",
        "",
        "| structure | pairs |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in card["structures"].items()],
        "",
        *[f"- {d}" for d in card["decisions"]],
        f"- belief Dice on the taught pairs (a fit, not a held-out figure): "
        f"{card['taught_pairs_belief_dice']['before']:.3f} before, {card['taught_pairs_belief_dice']['after']:.3f} after",
        "",
        *(
            [
                "Only the text-conditioned layers moved; the queries it knew before were held to their old answers on "
                "these images (self-distillation)."
            ]
            if card["belief"].startswith("fine-tuned")
            else [
                "Where each structure is: an exemplar probe fitted on its pairs, used on images of the kind it was "
                "taught on (the belief net answers elsewhere, unchanged). Whether it is there: the presence head's "
                "text branch learned the new queries; the queries it knew before were held to their old answers "
                "on these images (self-distillation)."
            ]
        ),
    ]
    return "\n".join(lines) + "\n"
