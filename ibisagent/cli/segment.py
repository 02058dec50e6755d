"""`ibisagent segment IMAGE --query ...`: one agent episode on one image, printed as it runs.

Writes into OUT: mask.png (the final mask), step_NN.png (the overlay after each step, with the
clicks and the outline drawn for people), reasoning.md (each step's reasoning, action and
answer) and episode.json (the full record; `ibisagent.env.episode.Episode.load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import (
    AxisOpt,
    MaxStepsOpt,
    StrategyOpt,
    ToolOpt,
    WindowOpt,
    fail,
    make_tool_from_opts,
    run_guarded,
)
from ibisagent.errors import IbisInputError

app = typer.Typer()


@app.command()
def segment(
    image: Annotated[
        Path,
        typer.Argument(
            help="Image file (PNG/JPG/TIFF/BMP, 8/16-bit, grey/RGB/RGBA), a DICOM file, a DICOM series folder "
            "or a NIfTI volume (.nii, .nii.gz)"
        ),
    ],
    query: Annotated[str, typer.Option("--query", "-q", help="What to segment, e.g. 'Segment the liver'")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="compact | oracle | hf:PATH | openai:URL[#MODEL] | human | centre | ... (default: compact; oracle with --reference)",
            is_eager=True,
            callback=lambda ctx, value: _list_if_asked(ctx, value, "policy"),
        ),
    ] = None,
    reference: Annotated[Path | None, typer.Option(help="Reference mask: IoU per step (and the oracle policy)")] = None,
    init_mask: Annotated[Path | None, typer.Option(help="A given mask to refine (refinement task)")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/segment/NAME/)")] = None,
    max_steps: MaxStepsOpt = 20,
    history: Annotated[bool, typer.Option(help="VLM sees the whole chat (released: off)")] = False,
    sample: Annotated[bool, typer.Option(help="VLM samples instead of greedy decoding (released: greedy)")] = False,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (with --sample)")] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling (with --sample)")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per assistant turn (released: 512)")] = 512,
    base: Annotated[Path | None, typer.Option(help="hf: base model folder of a LoRA adapter")] = None,
    device: Annotated[str, typer.Option(help="hf: auto, cpu, cuda, cuda:1 ...")] = "auto",
    timeout: Annotated[float, typer.Option(min=0.1, help="openai: seconds per request")] = 120.0,
    retries: Annotated[int, typer.Option(min=0, help="openai: retries of a failed request")] = 3,
    clicks: Annotated[
        list[str] | None, typer.Option("--click", help="human: scripted commands ('p 0.5,0.4', 'n X,Y', 'stop')")
    ] = None,
    axis: AxisOpt = "axial",
    slices: Annotated[
        str | None, typer.Option(help="Volumes: slices to run, START:STOP[:STEP] or one index (default all)")
    ] = None,
    window: WindowOpt = "auto",
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    list_structures: Annotated[
        bool,
        typer.Option(
            "--list-structures",
            is_eager=True,
            callback=lambda ctx, value: _list_if_asked(ctx, value, "list"),
            help="Print the structures the compact policy (--policy compact[:PATH]) was trained on, and exit",
        ),
    ] = False,
) -> None:
    """Let a policy segment QUERY in IMAGE by reasoning and clicking.

    Examples:
      ibisagent segment ibisagent/assets/demo/images/08_MRI_heart.png -q "Segment the left heart ventricle."
      ibisagent segment scan.png -q "Segment the liver" --reference liver.png     (oracle clicks)
      ibisagent segment scan.png -q "Segment the liver" --policy openai:http://localhost:8000/v1
      ibisagent segment ct.nii.gz -q "Segment the liver" --slices 40:60 --window liver
      ibisagent segment dicom_series/ -q "Segment the liver"

    Outputs go to runs/segment/NAME/ unless --out is given (never next to the input).
    A NIfTI volume, a DICOM file or a DICOM series folder is segmented slice by slice along --axis
    with the same default policy; the mask is written as OUT/mask.nii.gz with the input's geometry
    (opens over the original in 3D Slicer or ITK-SNAP).
    """
    opts = dict(
        history=history,
        sample=sample,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        max_new_tokens=max_new_tokens,
        base=base,
        device=device,
        timeout=timeout,
        retries=retries,
        clicks=clicks,
    )
    from ibisagent.data.scans import is_scan_path

    if is_scan_path(image):
        vol = dict(axis=axis, slices=slices, window=window)
        run_guarded(
            _segment_volume, image, query, policy, reference, init_mask, out, max_steps, opts, tool, strategy, vol
        )
        return
    run_guarded(_segment, image, query, policy, reference, init_mask, out, max_steps, opts, tool, strategy)


def _list_if_asked(ctx: typer.Context, value, which: str):
    """Eager callback of --list-structures and --policy (either order on the command line): once
    both are known and listing was asked for, print the policy's structures and exit before IMAGE
    and --query are required."""
    if ctx.resilient_parsing:
        return value
    ctx.meta.setdefault("ibisagent_list", {})[which] = value
    seen = ctx.meta["ibisagent_list"]
    if seen.get("list") and "policy" in seen:
        run_guarded(print_structures, seen["policy"] or "compact")
        raise typer.Exit(0)
    return value


def print_structures(spec: str) -> None:
    """`segment --list-structures`: what the compact policy of `spec` knows, one name a line."""
    from ibisagent.policies import known_structures

    names = known_structures(spec)
    typer.echo(f"{len(names)} structures known to {spec} (other words for them, typos and plurals are read too):")
    for name in names:
        typer.echo(name)


def _segment_volume(volume_path, query, spec, reference, init_path, out, max_steps, opts, tool, strategy, vol):
    """Slice by slice: one episode per slice with the same policy and tool; a NIfTI mask out."""
    from ibisagent.data.segment_volume import segment_volume
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode

    if not query.strip():
        raise IbisInputError("--query", "the query is empty")
    if reference is not None or init_path is not None:
        raise IbisInputError(volume_path, "--reference and --init-mask are for 2D images; for volumes give a policy")
    spec = spec or "compact"
    policy = make_policy(spec, **policy_kwargs(spec, opts))
    if policy.needs_reference:
        raise IbisInputError(spec, "this policy reads a reference mask, which volumes do not take")
    env = IbisEnv(make_tool_from_opts(tool, strategy), max_steps=max_steps)
    out = out or default_out(volume_path)
    typer.echo(f"{volume_path.name}: {query!r} with {spec}, slice by slice along {vol['axis']}")

    def segment_slice(image):
        return run_episode(env, policy, image, query).final_mask

    def progress(i, total):
        typer.echo(f"slice {i + 1}/{total}")

    res = segment_volume(volume_path, segment_slice, out / "mask.nii.gz", on_slice=progress, **vol)
    typer.echo(f"mask: {res.path} ({len(res.slices)} slices, {res.voxels} voxels, {res.seconds:.1f} s)")


def default_out(path: Path) -> Path:
    """runs/segment/NAME: outputs never go into the input's folder unless --out says so."""
    name = path.resolve().name
    for suffix in (".gz", ".nii", ".dcm", ".dicom"):
        name = name.removesuffix(suffix)
    return Path("runs") / "segment" / (Path(name).stem if path.is_file() else name)


def policy_kwargs(spec: str, opts: dict, ask=None) -> dict:
    """make_policy keyword arguments for the policy kind named by `spec`."""
    kind = spec.partition(":")[0]
    temp = opts["temperature"] if opts["sample"] else 0.0
    if kind == "hf":
        return dict(
            base=opts["base"],
            history=opts["history"],
            do_sample=opts["sample"],
            temperature=opts["temperature"],
            top_p=opts["top_p"],
            seed=opts["seed"],
            max_new_tokens=opts["max_new_tokens"],
            device=opts["device"],
        )
    if kind == "openai":
        return dict(
            history=opts["history"],
            temperature=temp,
            top_p=opts["top_p"] if opts["sample"] else 1.0,
            seed=opts["seed"],
            max_tokens=opts["max_new_tokens"],
            timeout=opts["timeout"],
            retries=opts["retries"],
        )
    if kind == "human":
        return {"commands": opts["clicks"]} if opts["clicks"] else {"ask": ask}
    return {}


def _segment(image_path, query, spec, reference, init_path, out, max_steps, opts, tool, strategy):
    from ibisagent.env.env import IbisEnv
    from ibisagent.io.images import load_image, load_mask
    from ibisagent.policies import make_policy
    from ibisagent.policies.openai_compat import PolicyServerError
    from ibisagent.policies.runner import run_episode

    if not query.strip():
        raise IbisInputError("--query", "the query is empty")
    img = load_image(image_path)
    shape = img.shape[:2]
    ref = load_mask(reference, shape=shape) if reference else None
    init = load_mask(init_path, shape=shape) if init_path else None
    spec = spec or ("oracle" if ref is not None else "compact")
    out = out or default_out(image_path)
    writer = StepWriter(out, img)  # files are written atomically: OUT appears with the first, not on an early error
    policy = make_policy(spec, **policy_kwargs(spec, opts, ask=writer.ask))
    if policy.needs_reference and ref is None:
        raise IbisInputError(spec, "this policy reads the reference mask: give --reference MASK")
    env = IbisEnv(make_tool_from_opts(tool, strategy), max_steps=max_steps)
    typer.echo(f"{image_path.name}: {query!r} with {spec} (at most {max_steps} steps)")
    error = None
    try:
        episode = run_episode(
            env, policy, img, query, gt_mask=ref, init_mask=init, image_name=str(image_path),
            on_step=lambda obs, reward, info: writer.step(env.episode),
        )  # fmt: skip
    except PolicyServerError as exc:
        episode, error = env.episode, exc
        episode.stop_reason = "policy_error"
        episode.meta["error"] = str(exc)
    writer.finish(episode)
    if error is not None:
        fail(f"{error} ({len(episode.steps)} step(s) kept in {out})", 1)


class StepWriter:
    """Prints each step and writes its overlay; at the end the mask, reasoning and record."""

    def __init__(self, out: Path, image):
        self.out, self.image = out, image
        # Overlays of an earlier, longer run in the same folder would read as steps of this one.
        for stale in out.glob("step_[0-9][0-9].png"):
            stale.unlink()

    def step(self, episode) -> None:
        from ibisagent.env.protocol import parse_response
        from ibisagent.io.images import save_png
        from ibisagent.overlay import render_overlay

        rec = episode.steps[-1]
        action = parse_response(rec.response)
        what = rec.kind if rec.click is None else f"{rec.kind} click at ({rec.click[0]}, {rec.click[1]}) px"
        if rec.error:
            what += f" [{rec.error}]"
        iou = "" if rec.iou is None else f"  IoU {rec.iou:.3f}"
        typer.echo(f"step {rec.index:2d}: {what}{iou}  ({rec.policy_s:.2f} s policy, {rec.tool_s:.2f} s tool)")
        if action.think:
            typer.echo("         " + " ".join(action.think.split())[:200])
        mask = episode.final_mask
        save_png(
            self.out / f"step_{rec.index:02d}.png",
            render_overlay(self.image, mask, clicks=episode.clicks, contour=True),
        )

    def ask(self, obs, episode) -> str:
        """The human policy's prompt: show the current state, read one command."""
        from ibisagent.io.images import save_png
        from ibisagent.overlay import render_overlay

        path = self.out / "current.png"
        save_png(path, render_overlay(obs.original, obs.mask, clicks=obs.clicks, contour=True))
        return typer.prompt(f"step {len(episode.steps) + 1} (see {path}): p X,Y | n X,Y | stop")

    def finish(self, episode) -> None:
        from ibisagent.io.images import atomic_write_bytes, save_mask_png

        mask = episode.final_mask
        save_mask_png(self.out / "mask.png", mask)
        episode.save(self.out / "episode.json")
        atomic_write_bytes(self.out / "reasoning.md", reasoning_markdown(episode).encode())
        ious = [s.iou for s in episode.steps if s.iou is not None]
        final = f", IoU {ious[-1]:.3f}" if ious else ""
        typer.echo(
            f"done: {len(episode.steps)} step(s), stopped by {episode.stop_reason}{final}; "
            f"mask {int(mask.sum())} px -> {self.out}/mask.png"
        )
        if episode.answer:
            typer.echo(f"answer: {episode.answer}")


def reasoning_markdown(episode) -> str:
    """Each step's reasoning, action and answer as Markdown."""
    from ibisagent.env.protocol import parse_response

    lines = [f"# {episode.query}", "", f"Stopped by: {episode.stop_reason}", ""]
    for rec in episode.steps:
        a = parse_response(rec.response)
        lines += [f"## Step {rec.index}: {rec.kind}" + (f" (IoU {rec.iou:.3f})" if rec.iou is not None else ""), ""]
        lines += [a.think or "(no reasoning)", ""]
        if rec.error:
            lines += [f"Unparsable turn: {rec.error}", "", "```", rec.response[:2000], "```", ""]
        if rec.answer:
            lines += [f"Answer: {rec.answer}", ""]
    return "\n".join(lines)
