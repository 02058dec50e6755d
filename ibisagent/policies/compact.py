"""The compact click policy: the default agent on a laptop, no VLM needed.

It plays the same game as the VLM through the same environment and protocol. From the
segmentation tool's image embedding (already computed for the tool, so free), the query's
sentence embedding (MiniLM, offline) and nothing else, a small FiLM-conditioned conv net
predicts a *belief map* of where the queried target is (64 x 64 logits over the tool's
256 x 256 input frame) and whether the target is present at all. Each step it looks ahead
through the tool: for a few candidate clicks (a positive one deep in each part the mask misses
where the belief is sure, a negative one deep in each part the mask wrongly covers) it asks the
tool for the mask that click would give, from the cached image embedding, places the click
whose mask agrees best with the belief, and stops when no click would bring the mask closer.
The text it writes states exactly those facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ibisagent.clicker import error_distance
from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.errors import IbisInputError
from ibisagent.geometry import pixel_to_norm
from ibisagent.policies.base import Policy

GUESS_WIDTH = 1.0  # a best guess (`best_guess`) is where the belief is within this many logits of its peak


def belief_logits(logits, emb) -> np.ndarray:
    """64 x 64 belief logits (or 256 x 256, the tool's low-res frame) -> H x W float32 logits at the
    original image size."""
    import torch.nn.functional as F

    from ibisagent.tools.litemedsam_model import LOWRES, lowres_to_original

    side = logits.shape[-1]
    up = logits.reshape(1, 1, side, side)
    if side != LOWRES:
        up = F.interpolate(up, size=(LOWRES, LOWRES), mode="bilinear", align_corners=False)
    return lowres_to_original(up, emb.input_size, emb.original_size)


class Belief(NamedTuple):
    """The policy's belief about one (image, query): `logits` H x W float32 (the target is where
    they are above 0), `presence` the probability that the target is in the image at all, `taught`
    the number of examples of a taught structure's probe the map comes from (0: the belief net's)."""

    logits: np.ndarray
    presence: float
    taught: int = 0

    def regions(self, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """H x W bool (target, surely inside, surely outside): logit above 0, above +margin, below
        -margin (margin 0: inside = target, outside = its complement)."""
        target = self.logits > 0
        if not margin:
            return target, target, ~target
        return target, self.logits > margin, self.logits < -margin

    def probability(self) -> np.ndarray:
        """H x W float32 in [0, 1]."""
        return sigmoid(self.logits)

    def peak(self) -> float:
        """The highest probability anywhere in the map, in [0, 1]."""
        return float(sigmoid(self.logits.max()))


def sigmoid(logits):
    """Logits (array or scalar) -> probabilities in [0, 1], overflow-safe."""
    return 1 / (1 + np.exp(-np.clip(logits, -30, 30)))


def best_guess(logits: np.ndarray, floor: float, width: float = GUESS_WIDTH) -> np.ndarray | None:
    """When no pixel of a belief map (logits, any shape) reaches 50% but its peak is above
    `floor` (a logit), the map shifted so that the region within `width` logits of its peak is
    the target: the policy's low-confidence best guess, played by the same rule. None when the
    map already has a target (nothing to guess) or its peak is at or below `floor`."""
    peak = float(logits.max())
    if peak > 0 or peak <= floor:
        return None
    return logits + (width - peak)


def where(mask: np.ndarray) -> str:
    """Position words for a mask's centre: "upper left", "centre", ..."""
    ys, xs = np.nonzero(mask)
    H, W = mask.shape
    cx, cy = xs.mean() / W, ys.mean() / H
    v = "upper" if cy < 0.4 else "lower" if cy > 0.6 else ""
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    return " ".join(w for w in (v, h) if w) or "central"


Click = tuple[int, int, int, float]  # (x, y) pixels, label 1 positive / 0 negative, depth in pixels


def deepest_points(region: np.ndarray, label: int, k: int) -> list[Click]:
    """The deepest pixel (farthest from the region's boundary) of each of the k deepest
    connected components of `region` (H x W bool), deepest first, as clicks with `label`."""
    import cv2

    if k <= 0 or not region.any():
        return []
    depth = error_distance(region)
    _, comp = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    idx = np.flatnonzero(region)
    idx = idx[np.argsort(-depth.flat[idx], kind="stable")]
    _, first = np.unique(comp.flat[idx], return_index=True)  # each component's deepest pixel
    best = idx[np.sort(first)][:k]
    W = region.shape[1]
    return [(int(i % W), int(i // W), label, float(depth.flat[i])) for i in best]


def candidate_clicks(
    mask: np.ndarray, target: np.ndarray, inside: np.ndarray, outside: np.ndarray, k: int
) -> list[Click]:
    """The clicks the policy considers, on H x W bool maps of one frame (the current mask, the
    belief, surely inside, surely outside): up to k positive ones, at the deepest points of the
    parts the belief is sure of and the mask misses, and up to k negative ones in the parts the
    mask covers where the belief is sure there is no target. With no mask yet and nothing sure,
    the belief's own parts."""
    missed = (inside & ~mask) if (mask.any() or inside.any()) else target
    return deepest_points(missed, 1, k) + deepest_points(mask & outside, 0, k)


def soft_iou(prob: np.ndarray, mask: np.ndarray) -> float:
    """Expected agreement of a mask with the belief: IoU with the belief's probabilities
    (H x W float in [0, 1]) as soft memberships."""
    inter = float(prob[mask].sum())
    union = float(prob.sum()) + float(mask.sum()) - inter
    return inter / union if union > 0 else 1.0


class Decision(NamedTuple):
    """One step of the compact click rule. kind: "click"; "stop_match" (no disagreement left
    where the belief is sure); "stop_no_gain" (no candidate click brings the mask closer to the
    belief). click: the chosen candidate or None; index: its position among the candidates.
    agree: soft IoU of the mask with the belief now; after: the best candidate's (= agree when
    there is none)."""

    kind: str
    click: Click | None
    index: int | None
    agree: float
    after: float
    considered: int


def decide(mask: np.ndarray, prob: np.ndarray, candidates: list[Click], outcomes: list[np.ndarray], min_gain: float):
    """The click rule of `CompactPolicy`, shared with the RL stage's rollouts (`train.compact.grpo`):
    of the candidate clicks (`candidate_clicks`) and the masks the tool returns for each
    (`outcomes`, H x W bool, the same frame as `mask` and `prob`), take the one whose mask agrees
    best with the belief (`soft_iou`), if it beats the current mask's agreement by more than
    `min_gain`; else stop. -> Decision."""
    agree = soft_iou(prob, mask) if mask.any() else 0.0
    if not candidates:
        return Decision("stop_match", None, None, agree, agree, 0)
    scores = [soft_iou(prob, m) for m in outcomes]
    best = int(np.argmax(scores))
    if scores[best] <= agree + min_gain:
        return Decision("stop_no_gain", None, None, agree, scores[best], len(candidates))
    return Decision("click", candidates[best], best, agree, scores[best], len(candidates))


class Reading(NamedTuple):
    """How `CompactPolicy.read` reads a query: `query` the text the belief net gets, `structure`
    the known structure it names (None: not named, or unknown), `known` False for a structure the
    policy does not know (it then shows a marked guess), `note` what it says about the reading,
    `similarity` / `closest` the nearest training query and its cosine similarity."""

    query: str
    structure: str | None
    known: bool
    note: str
    similarity: float
    closest: str


def policy_settings() -> dict:
    """The default settings of `CompactPolicy` (stop and click rules), recorded in training reports."""
    import inspect

    params = inspect.signature(CompactPolicy.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "weights")}


class CompactPolicy(Policy):
    """See the module docstring. Each step it looks ahead: it asks the tool what mask each of a
    few candidate clicks would give (`candidate_clicks`: `lookahead` positive and `lookahead`
    negative ones at most) and places the one whose mask agrees best with its belief, or stops
    when none improves that agreement by more than `min_gain` (`decide`). The tool answers from
    the cached image embedding, so a look costs one mask decode.
    `presence_threshold`: below it (and with no sure region, `absent_peak`) the target is judged
    absent and the policy stops at once, giving both figures as its evidence;
    `novelty_threshold`: a query that names no known structure (`read`) and whose MiniLM cosine
    similarity to every training query is below it names something the policy never learned: it
    says so and shows its best candidate as a low-confidence guess (medical paraphrases of known
    targets score about 0.7 and above, everyday objects and nonsense 0.2 to 0.55).
    `click_margin`: a belief-logit margin; candidate clicks go only where the belief is confident
    (positive where the logit exceeds +margin and the mask misses, negative where it is below
    -margin and the mask covers): the blurry rim of the belief is not worth a click. 0 = any
    disagreement with the belief thresholded at 50%.
    `guess_floor`: a belief logit; when the target is judged present but no pixel reaches 50%
    belief, and the belief's peak is above this floor, the policy segments its best guess
    (`best_guess`: where the belief is within 1 logit of its peak) and says it is a low-confidence
    guess; at or below the floor it stops without a mask (default -30: it always guesses).
    `absent_peak`: the target is said absent only with evidence: the presence head below
    `presence_threshold` *and* no pixel of the belief map above this probability; with presence
    low but a sure region in the map it segments that region as a low-confidence answer.
    Queries are read first (`read`): a known structure under other words (a typo, a plural, a
    synonym, `data.vocabulary`) is looked for under its known name; a structure it does not know
    still gets its best candidate, marked as a low-confidence guess that says what it rests on.
    One instance plays one episode at a time (`begin` resets it), as `env.runner.run_episode`,
    the evaluation workers and the web app use it."""

    name = "compact"

    def __init__(
        self,
        weights: str | Path | None = None,
        lookahead: int = 5,
        min_gain: float = 0.005,
        presence_threshold: float = 0.5,
        novelty_threshold: float = 0.6,
        click_margin: float = 6.0,
        guess_floor: float = -30.0,
        absent_peak: float = 0.5,
    ):
        if lookahead < 1:
            raise IbisInputError("lookahead", f"expected at least 1 candidate click per sign, got {lookahead}")
        from ibisagent.policies.belief_net import load_net

        self.net = load_net(weights)
        self.lookahead = lookahead
        self.min_gain = min_gain
        self.presence_threshold = presence_threshold
        self.novelty_threshold = novelty_threshold
        self.click_margin = click_margin
        self.guess_floor = guess_floor
        self.absent_peak = absent_peak
        self._readings: dict[str, Reading] = {}
        self._vocabulary = None
        self.tool = None
        self._belief_key = None
        self._prior: dict[tuple, object] = {}

    def attach(self, tool) -> None:
        from ibisagent.tools.litemedsam_model import LITEMEDSAM_FEATURES

        if getattr(tool, "embedding_kind", None) != LITEMEDSAM_FEATURES:
            raise IbisInputError(getattr(tool, "name", tool), "the compact policy reads LiteMedSAM image embeddings")
        self.tool = tool

    def begin(self, query: str, gt_mask=None) -> None:
        self._belief_key = None
        self._prior = {}

    def _tool(self):
        if self.tool is None:
            from ibisagent.tools.litemedsam import LiteMedSAMTool

            self.tool = LiteMedSAMTool()
        return self.tool

    def belief(self, image: np.ndarray, query: str, structure: str | None = None) -> Belief:
        """The belief about the target of `query` in `image`, cached per (image, query). For a
        `structure` taught from examples (`exemplar_probe`) on an image of the kind it was taught
        on, the map is its probe's; elsewhere the belief net's. Presence is always the net's."""
        import torch

        from ibisagent.policies.belief_net import pool_features
        from ibisagent.policies.text_encoder import embed_texts

        emb = self._tool().embed(image)
        key = (emb.key, query, structure)
        if self._belief_key != key:
            feats = emb.features.float()
            with torch.inference_mode():
                logits, presence = self.net(feats, embed_texts([query]))
                probe, taught = self.net.probes.get(structure or ""), 0
                if probe is not None and bool(probe.covers(self.net.presence.standardise(pool_features(feats)))[0]):
                    logits, taught = probe(self.net.reduce(feats)), probe.examples
            self._belief = Belief(belief_logits(logits, emb), float(torch.sigmoid(presence[0])), taught)
            self._belief_key = key
        return self._belief

    def novelty(self, query: str) -> tuple[float, str]:
        """(highest cosine similarity of the query to a training query, that query); (1.0, "")
        when the weights carry no training queries."""
        from ibisagent.policies.text_encoder import embed_texts

        if not len(self.net.known_texts):
            return 1.0, ""
        sims = self.net.known_emb @ embed_texts([query])[0].float()
        best = int(sims.argmax())
        return float(sims[best]), self.net.known_texts[best]

    def known_structures(self) -> list[str]:
        """The structure names this policy was trained on (from the training queries in its weights)."""
        from ibisagent.data.vocabulary import structures_of_queries

        return structures_of_queries(self.net.known_texts)

    def read(self, query: str) -> Reading:
        """How the policy reads a query (cached): a known structure under other words is looked
        for under its known name ("Segment the kidny." -> "Segment the kidney."); a query that names
        no known structure but is close to a training query (a reasoning query) is kept as it is;
        anything else is an unknown structure, for which the policy shows a marked best guess."""
        if query in self._readings:
            return self._readings[query]
        from ibisagent.data.vocabulary import Vocabulary

        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self.known_structures())
        res = self._vocabulary.resolve(query)
        similarity, closest = self.novelty(query)
        if res.reworded:
            reading = Reading(f"Segment the {res.structure}.", res.structure, True, res.note, similarity, closest)
        elif res.structure is not None or similarity >= self.novelty_threshold:
            reading = Reading(query, res.structure, True, res.note, similarity, closest)
        else:
            what = f'"{res.phrase}"' if res.phrase else "what the query asks for"
            note = (
                f"I do not know {what}: it is none of the {len(self.known_structures())} structures I was trained on "
                f'(closest known query "{closest}", similarity {similarity:.2f}).'
            )
            reading = Reading(query, None, False, note, similarity, closest)
        self._readings = {query: reading} if len(self._readings) > 64 else self._readings | {query: reading}
        return reading

    def outcomes(self, image: np.ndarray, clicks: list[tuple[int, int, int]], candidates: list[Click]) -> list:
        """The masks (H x W bool) the tool returns for the clicks so far ((x, y, label) pixels,
        as the environment holds them) plus each candidate, from the same previous logits as the
        environment's: the tool's answers to the clicks so far, remembered from earlier looks
        (or replayed from the clicks when they came from elsewhere, e.g. a person)."""
        tool = self._tool()
        emb = tool.embed(image)
        clicks = tuple(tuple(c) for c in clicks)
        # Only the answers along the clicks placed so far can be needed again (memory: 256 KB each).
        self._prior = {k: v for k, v in self._prior.items() if k == clicks[: len(k)]}
        for n in range(1, len(clicks) + 1):  # the prior logits of a click sequence seen nowhere yet
            if clicks[:n] not in self._prior:
                self._prior[clicks[:n]] = self._predict(emb, clicks[:n], self._prior.get(clicks[: n - 1]))[1]
        prior = self._prior.get(clicks)
        masks = []
        for x, y, label, _ in candidates:
            after = clicks + ((x, y, label),)
            mask, self._prior[after] = self._predict(emb, after, prior)
            masks.append(mask)
        return masks

    def _predict(self, emb, clicks: tuple, prior):
        out = self.tool.predict(
            emb, np.array([(x, y) for x, y, _ in clicks]), np.array([lab for _, _, lab in clicks]), prior
        )
        return out.mask, out.logits

    def act(self, obs: Observation, episode: Episode) -> str:
        reading = self.read(obs.query)
        belief = self.belief(obs.original, reading.query, reading.structure)
        peak = belief.peak()
        lead = f"{reading.note} " if reading.note else ""
        if belief.taught:
            lead += (
                f"I look for the {reading.structure} as I was taught it from {belief.taught} examples of this "
                "kind of image. "
            )
        doubt = ""
        if reading.known and belief.presence < self.presence_threshold:
            if peak <= self.absent_peak:
                return format_response(
                    f"{lead}I look for what the query asks for and judge it absent: my presence check gives "
                    f"{belief.presence:.2f} and no part of the image reaches more than {100 * peak:.0f}% belief.",
                    "stop",
                    answer="No, the target is not visible in this image.",
                )
            doubt = (
                f"My presence check doubts the target is here ({belief.presence:.2f}), but part of the image reaches "
                f"{100 * peak:.0f}% belief, so I segment it. "
            )
        guess = best_guess(belief.logits, self.guess_floor)
        if guess is not None:
            belief = Belief(guess, belief.presence, belief.taught)
        target, inside, outside = belief.regions(self.click_margin)
        H, W = target.shape
        if not target.any():
            return format_response(
                f"{lead}The target may be present (confidence {belief.presence:.2f}), but the most likely place for "
                f"it reaches only {100 * peak:.0f}% belief, too little to place a click on.",
                "stop",
                answer="I could not locate the target in this image.",
            )
        yes = "Yes, the target is segmented."
        if not reading.known:
            yes = (
                "Low-confidence guess: this is not a structure I know, so the mask is only the region my belief "
                f"ranks highest for the query (peak {100 * peak:.0f}%); check it, or click to correct it."
            )
        elif guess is not None or doubt:
            yes = f"Yes, but with low confidence: the mask is my best guess (peak belief {100 * peak:.0f}%)."
        area = 100 * target.mean()
        if not reading.known:
            seen = (
                f"My best candidate, where my belief for this query is highest (peak {100 * peak:.0f}%), covers about "
                f"{area:.1f}% of the image, in the {where(target)} part."
            )
        elif guess is None:
            seen = f"The target I see covers about {area:.1f}% of the image, in the {where(target)} part."
        else:
            seen = (
                f"No part of the image reaches 50% belief; my best guess is where the belief is highest (peak "
                f"{100 * peak:.0f}%): about {area:.1f}% of the image, in the {where(target)} part."
            )
        seen = lead + doubt + seen
        candidates = candidate_clicks(obs.mask, target, inside, outside, self.lookahead)
        outcomes = self.outcomes(obs.original, obs.clicks, candidates)
        d = decide(obs.mask, belief.probability(), candidates, outcomes, self.min_gain)
        if d.kind == "stop_match":
            return format_response(
                f"{seen} The mask (overlap {d.agree:.2f}) differs from it at most along its uncertain rim, where I "
                "am not sure enough to click, so I stop.",
                "stop",
                answer=yes,
            )
        if d.kind == "stop_no_gain":
            return format_response(
                f"{seen} The mask overlaps it by {d.agree:.2f}; none of the {d.considered} clicks I considered would "
                f"bring it closer (best {d.after:.2f}), so I stop.",
                "stop",
                answer=yes,
            )
        x, y, label, depth = d.click
        nx, ny = pixel_to_norm(x, y, W, H)
        gain = (
            f"of the {d.considered} clicks I considered, this one brings the overlap to {d.after:.2f}"
            if d.considered > 1
            else f"the one click I considered brings the overlap to {d.after:.2f}"
        )
        if not obs.mask.any():
            why = f"{seen} There is no mask yet, so I place a positive point deep inside it ({gain})."
        elif label == 1:
            why = (
                f"{seen} The mask (overlap {d.agree:.2f}) misses a part about {2 * depth:.0f} px across; I add a "
                f"positive point there ({gain})."
            )
        else:
            why = (
                f"{seen} The mask (overlap {d.agree:.2f}) spills over a region about {2 * depth:.0f} px across; I add "
                f"a negative point there ({gain})."
            )
        return format_response(why, "positive" if label == 1 else "negative", nx, ny)
