"""`ibisagent teach DATA --out DIR`: the compact policy learns structures from a few image/mask pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import run_guarded

app = typer.Typer()


@app.command()
def teach(
    data: Annotated[
        list[Path], typer.Argument(help="Image/mask pairs: pairs.csv files or folders of them (as for eval run --data)")
    ],
    out: Annotated[Path, typer.Option(help="Folder for compact_policy.pt and model_card.json / .md")],
    base: Annotated[
        Path | None, typer.Option("--from", help="Compact weights to start from (default: the shipped policy)")
    ] = None,
    minutes: Annotated[
        float, typer.Option(min=0.05, help="Training minutes at most (after embedding the images)")
    ] = 3.0,
    max_steps: Annotated[int, typer.Option(min=1, help="Stop after this many steps")] = 300,
    min_pairs: Annotated[int, typer.Option(min=2, help="Pairs needed per structure")] = 5,
    seed: Annotated[int, typer.Option(help="Training seed")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache (default: the train commands' cache)")] = None,
) -> None:
    """Teach the compact policy the structures in DATA from as few as 5 image/mask pairs each,
    starting from the shipped policy (about a minute on 2 cores; at most --minutes of training).

    Each structure gets an exemplar probe fitted on its pairs, which finds it on images of the kind
    you taught it on (elsewhere the policy answers as before); the presence check learns the new
    names. A structure with the name of one the policy knows refines it on that kind of image;
    everything else is learnt under the name given. The policy keeps what it knew: its belief
    network does not change, and the known names keep their presence answers.

    Example: ibisagent teach my_pairs/ --out runs/taught, then
    ibisagent segment scan.png -q "Segment the ..." --policy compact:runs/taught/compact_policy.pt
    """
    run_guarded(_teach, data, out, base, minutes, max_steps, min_pairs, seed, cache_dir)


def _teach(data, out, base, minutes, max_steps, min_pairs, seed, cache_dir):
    import time

    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.vocabulary import structures_of_queries
    from ibisagent.policies.belief_net import load_net
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.compact.teach import TeachConfig, check_pairs, teach
    from ibisagent.train.embedding_cache import embed_images

    t0 = time.perf_counter()
    samples = collect_pairs(list(data))
    counts, _ = check_pairs(samples, structures_of_queries(load_net(base).known_texts), min_pairs)
    typer.echo(f"{len(samples)} pairs: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    images = sorted({s.image for s in samples})
    emb_files = embed_images(LiteMedSAMTool(weights="original"), images, cache_dir or DEFAULT_CACHE_DIR)
    typer.echo(f"embedded {len(images)} images in {time.perf_counter() - t0:.0f} s")
    cfg = TeachConfig(minutes=minutes, max_steps=max_steps, min_pairs=min_pairs, seed=seed)
    card = teach(samples, emb_files, out, base, cfg, log=typer.echo)
    typer.echo(
        f"wrote {out / 'compact_policy.pt'} and {out / 'model_card.md'} ({(time.perf_counter() - t0) / 60:.1f} min)"
    )
    typer.echo(f"use it: {card['use']}")
