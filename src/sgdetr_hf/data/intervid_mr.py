"""InterVid-MR generation (paper §4.3.2, eq. 16-18): pre-training data from InternVid captions.

Two stages, because features are only worth extracting for the captions that survive filtering:

1. :func:`filter_captions` (step 1): InternVid-10M-FLT rows -> filtered captions, each with a ``qid``.
   The feature extraction then writes ``videos/<ytid>.safetensors`` (whole-video 2-s clip features,
   ``video_features`` (L, d)) and ``queries/<qid>.safetensors`` (``text_features`` (N, d), row 0 = the
   projected [CLS] sentence embedding): the :class:`~sgdetr_hf.data.builder.FeatureFolder` format.
2. :func:`generate_intervid_mr` (steps 2-12): for each caption, a window of at most 150 s around its
   interval, the clip-caption cosine similarities (eq. 16), the threshold ``S_min`` (eq. 17), the new
   positive intervals and the grades 1-4 (eq. 18), written as QVHighlights-format rows in resumable
   JSON Lines shards, plus ``summary.json`` and ``window_lengths.png``. Each shard stores a digest of what
   made it (the settings, its captions, its videos' durations and its features' fingerprint); a rerun keeps
   the shards whose digest matches and redoes the others, as the Parquet builder does with its shards.

Bad input is an error naming it: a caption record without a field or with a bad timestamp (``file:line``
when the caller passes ``locations``), a duration that is not a finite number of seconds > 0 (the ytid),
and NaN / infinite features in a caption's window or embedding (the ytid and qid).

Caption filter rules (§4.3.2 step 1; a caption is dropped by the first rule that fires, and the
reason is counted):

- ``word_count``: fewer than 3 or more than 40 words;
- ``characters``: under 90 % letters / spaces / basic punctuation, or a URL, ``@`` or ``#``;
- ``repetition``: unique-word ratio under 0.5, or a word repeated 3+ times in a row;
- ``content_words``: fewer than two distinct content words (alphabetic, 3+ letters, not a function
  word). This replaces a "no noun or no verb by a POS tagger" rule: no English tagger installs
  offline from a package registry (NLTK's and spaCy's models are separate downloads), and LLM captions such
  as "a close up of a plate of food" are good queries without a verb;
- ``blacklist``: black / blank / white / dark / blurry screens or frames, text / words / logo / title /
  watermark / subtitles as the subject, subscribe / channel / copyright, unknown / nothing / no description;
- ``duplicate``: a caption already seen in the same video (the first is kept), and every copy of a caption
  that appears more than 3 times in one video (templated text).

Deviation from §4.3.2: the window start is a multiple of the clip length (2 s) rather than
any integer, so a window's clip features are rows of the whole-video features; when no aligned start
keeps the interval inside the window, the interval is clipped to it (by less than one clip).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_write_json, atomic_write_jsonl, strict_json
from .builder import FeatureSource
from .schema import binary_clip_saliency

logger = logging.getLogger(__name__)

_CONTENT_CHARACTERS = re.compile(r"[A-Za-z .,'!?;:()\-\"]")
_LINK = re.compile(r"https?://|www\.|\.com\b|[@#]")
_WORD = re.compile(r"[A-Za-z']+")
# Function words do not count towards the two content words a caption needs.
_FUNCTION_WORDS_TEXT = """
a an the and or but of to in on at by for with from into onto over under up down out off is are was were
be been being it its this that these those there here his her their our your my some any
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_BLACKLIST = re.compile(
    r"\b(black|blank|white|dark|blurry|blurred)\s+(screen|frame|background|image)s?\b"
    r"|^\W*(a |the )?(text|words|logo|title|watermark|subtitles?)\b"
    r"|\b(subscribe|channel|copyright)\b"
    r"|\b(unknown|nothing|no description)\b",
    re.IGNORECASE,
)
_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def _finite_number(value: Any) -> bool:
    """A finite int or float (a JSON number), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class InterVidMRConfig:
    """Every threshold of the generation (defaults: paper §4.3.2)."""

    clip_length: float = 2.0
    max_window: float = 150.0
    min_interval: float = 1.0
    min_words: int = 3
    max_words: int = 40
    min_content_fraction: float = 0.9
    min_unique_ratio: float = 0.5
    max_caption_copies: int = 3
    threshold_sigmas: float = 3.0
    grade_sigmas: float = 1.5
    max_gap_clips: int = 1
    max_coverage: float = 0.8
    max_windows: int = 8
    num_annotators: int = 3
    validation_size: int = 2000
    seed: int = 0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not _finite_number(value):
                raise ValueError(f"InterVid-MR setting {name} must be a finite number, got {value!r}")
        problems = [
            f"{name} = {getattr(self, name)!r} (must be {rule})"
            for name, rule, ok in (
                ("clip_length", "> 0", self.clip_length > 0),
                ("max_window", ">= clip_length", self.max_window >= self.clip_length),
                ("min_interval", ">= 0", self.min_interval >= 0),
                ("max_words", ">= min_words", self.max_words >= self.min_words),
                ("grade_sigmas", ">= 0", self.grade_sigmas >= 0),
                ("max_gap_clips", ">= 0", self.max_gap_clips >= 0),
                ("max_coverage", "in (0, 1]", 0 < self.max_coverage <= 1),
                ("max_windows", ">= 1", self.max_windows >= 1),
                ("num_annotators", ">= 1", self.num_annotators >= 1),
                ("validation_size", ">= 0", self.validation_size >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"bad InterVid-MR settings: {'; '.join(problems)}")


# ------------------------------------------------------------------------------------------ step 1
def _seconds(value: Any) -> float:
    """Seconds from a number or an ``HH:MM:SS.mmm`` timestamp (InternVid's format)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not _finite_number(value):
            raise ValueError(f"timestamp {value!r} is not a finite number of seconds")
        return float(value)
    match = _TIMESTAMP.match(str(value).strip())
    if not match:
        raise ValueError(f"timestamp {value!r} is neither seconds nor HH:MM:SS.mmm")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_internvid_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One InternVid-10M-FLT row -> ``{ytid, start, end, query}`` (seconds; ``query`` is the caption).

    Accepts InternVid's column names (``YoutubeID``, ``Start_timestamp``, ``End_timestamp``, ``Caption``)
    or ``ytid, start, end, caption``. Raises ValueError on a missing field or a bad timestamp.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    names = (
        ("YoutubeID", "ytid"),
        ("Start_timestamp", "start"),
        ("End_timestamp", "end"),
        ("Caption", "query"),
    )
    values = []
    for official, short in names:
        if official not in record and short not in record:
            raise ValueError(f"missing field {official!r} (or {short!r})")
        values.append(record.get(official, record.get(short)))
    ytid, start, end, caption = values
    if not isinstance(ytid, str) or not isinstance(caption, str):
        raise ValueError("YoutubeID and Caption must be strings")
    return {"ytid": ytid, "start": _seconds(start), "end": _seconds(end), "query": caption.strip()}


def caption_rejection(caption: str, config: InterVidMRConfig) -> str | None:
    """The first caption rule (module docstring) that ``caption`` breaks, or None when it is kept."""
    words = caption.lower().split()
    if not config.min_words <= len(words) <= config.max_words:
        return "word_count"
    if len(_CONTENT_CHARACTERS.findall(caption)) < config.min_content_fraction * len(caption) or _LINK.search(
        caption
    ):
        return "characters"
    repeated_run = any(a == b == c for a, b, c in zip(words, words[1:], words[2:]))
    if len(set(words)) < config.min_unique_ratio * len(words) or repeated_run:
        return "repetition"
    content = {w for w in _WORD.findall(caption.lower()) if len(w) >= 3 and w not in _FUNCTION_WORDS}
    if len(content) < 2:
        return "content_words"
    if _BLACKLIST.search(caption):
        return "blacklist"
    return None


def _where(locations: Sequence[str] | None, index: int) -> str:
    return locations[index] if locations is not None else f"record {index + 1}"


def filter_captions(
    records: Iterable[Mapping[str, Any]],
    config: InterVidMRConfig | None = None,
    *,
    locations: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], Counter]:
    """Step 1: keep the meaningful captions of InternVid rows (see the module docstring for the rules).

    Args:
        locations: where each record comes from (e.g. ``"flt.jsonl:17"``), named in the errors; default
            ``"record <n>"`` (1-based).

    Returns:
        ``(captions, reasons)``: the kept ``{qid, ytid, start, end, query}`` rows in input order, with
        ``qid`` their index as a string (the name of the caption's feature file), and the count of each
        rejection reason.

    Raises:
        ValueError: ``"<location>: <what is wrong>"`` for a record without a field or with a bad timestamp.
    """
    config = config or InterVidMRConfig()
    parsed = []
    for index, record in enumerate(records):
        try:
            parsed.append(parse_internvid_record(record))
        except ValueError as error:
            raise ValueError(f"{_where(locations, index)}: {error}") from None
    reasons: Counter = Counter()
    copies = Counter((row["ytid"], row["query"].lower()) for row in parsed)
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in parsed:
        key = (row["ytid"], row["query"].lower())
        reason = caption_rejection(row["query"], config)
        if reason is None and (key in seen or copies[key] > config.max_caption_copies):
            reason = "duplicate"
        seen.add(key)
        if reason:
            reasons[reason] += 1
        else:
            kept.append({"qid": str(len(kept)), **row})
    return kept, reasons


# ------------------------------------------------------------------------------------- steps 2-3
def trim_window(
    start: float, end: float, duration: float, rng: np.random.Generator, config: InterVidMRConfig
) -> tuple[float, float] | str:
    """Steps 2-3: a window ``(u, W)`` in seconds that holds ``[start, end]``, or a rejection reason.

    ``W = min(max_window, c * floor(D / c))`` (whole clips), ``u`` a random multiple of the clip length
    ``c`` with ``u <= start`` and ``u + W >= end`` (random so that moments have no centre prior).
    """
    c = config.clip_length
    if duration < c:
        return "video_shorter_than_a_clip"
    window = min(config.max_window, c * math.floor(duration / c + 1e-9))
    if start < 0 or end > duration + 1e-6 or not config.min_interval <= end - start <= config.max_window:
        return "interval_invalid"
    if end - start > window:
        return "interval_longer_than_window"
    low = math.ceil(max(0.0, end - window) / c - 1e-9)
    high = math.floor(min(start, duration - window) / c + 1e-9)
    u = int(rng.integers(low, high + 1)) if low <= high else min(math.floor(start / c), high)
    return u * c, window


# ------------------------------------------------------------------------------------ steps 5-11
def clip_similarities(video_features: np.ndarray, caption_embedding: np.ndarray) -> np.ndarray:
    """Eq. 16: (L,) cosine similarity of every clip feature (L, d) with the caption embedding (d,)."""
    video = np.asarray(video_features, dtype=np.float64)
    caption = np.asarray(caption_embedding, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(video, axis=1) * np.linalg.norm(caption), 1e-12)
    return video @ caption / norms


def _runs(mask: np.ndarray) -> np.ndarray:
    """(R, 2) [first, last] clip index of every run of True in a 1-D bool mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1], axis=1)


def annotate_moments(
    similarity: np.ndarray, interval: tuple[float, float], window: float, config: InterVidMRConfig
) -> dict[str, Any] | str:
    """Steps 6-11 on one window: new positive intervals and grades from the clip similarities.

    Args:
        similarity: (L,) eq. 16 scores of the window's clips.
        interval: the caption's ``(start, end)`` in window seconds.
        window: W, seconds.

    Returns:
        ``{relevant_windows, relevant_clip_ids, saliency_scores, s_min, grades}``, or the rejection reason
        ``"coverage"`` (positives > ``max_coverage`` of the clips) / ``"fragmented"`` (> ``max_windows``).
    """
    c = config.clip_length
    similarity = np.asarray(similarity, dtype=np.float64)
    num_clips = len(similarity)
    original = binary_clip_saliency(np.array([interval]), c, num_clips)  # step 6, with centre fallback
    s_min = similarity[original].mean() - config.threshold_sigmas * similarity[original].std()  # eq. 17
    positive = similarity >= s_min  # step 8: ">=" keeps a single original clip (std 0) positive
    positive[original] = True
    runs = _runs(positive)  # step 9: close the gaps of at most max_gap_clips clips between positive runs
    gaps = _runs(~positive)
    inner = (gaps[:, 0] > runs[0, 0]) & (gaps[:, 1] < runs[-1, 1])
    small = gaps[inner & (gaps[:, 1] - gaps[:, 0] + 1 <= config.max_gap_clips)]
    fill = np.zeros(num_clips + 1, dtype=np.int64)
    np.add.at(fill, small[:, 0], 1)
    np.add.at(fill, small[:, 1] + 1, -1)
    positive |= np.cumsum(fill)[:-1] > 0
    runs = _runs(positive)
    if positive.mean() > config.max_coverage:  # step 10
        return "coverage"
    if len(runs) > config.max_windows:
        return "fragmented"
    clip_ids = np.flatnonzero(positive)
    scores = similarity[clip_ids]  # step 11, eq. 18, over the final positive set
    mean, std = scores.mean(), scores.std()
    spread = config.grade_sigmas * std
    grades = np.select([scores > mean + spread, scores > mean, scores > mean - spread], [4, 3, 2], default=1)
    if std == 0:  # every positive is equally (and so maximally) similar
        grades[:] = 4
    windows = np.stack([runs[:, 0] * c, np.minimum((runs[:, 1] + 1) * c, window)], axis=1)
    return {
        "relevant_windows": windows.tolist(),
        "relevant_clip_ids": clip_ids.tolist(),
        "saliency_scores": np.repeat(grades[:, None], config.num_annotators, axis=1).tolist(),
        "s_min": float(s_min),
        "grades": grades,
    }


def _window_vid(ytid: str, start: float, end: float) -> str:
    return f"{ytid}_{start:.1f}_{end:.1f}"


class WindowFeatures:
    """A feature source for the generated rows: window ``"{ytid}_{u}_{u + W}"`` -> clip rows of its video.

    Wraps the whole-video source used for generation (e.g. a ``FeatureFolder``), so building the
    InterVid-MR dataset needs no second extraction: window clips are rows ``[u / c, (u + W) / c)``.
    """

    def __init__(self, videos: FeatureSource, clip_length: float = 2.0):
        self.videos = videos
        self.clip_length = clip_length

    def _window(self, vid: str) -> tuple[str, int, int]:
        ytid, start, end = vid.rsplit("_", 2)
        return ytid, round(float(start) / self.clip_length), round(float(end) / self.clip_length)

    def video_shape(self, vid: str) -> tuple[int, ...] | None:
        ytid, first, last = self._window(vid)
        shape = self.videos.video_shape(ytid)
        return None if shape is None or shape[0] < last else (last - first, *shape[1:])

    def video(self, vid: str) -> np.ndarray:
        ytid, first, last = self._window(vid)
        return self.videos.video(ytid)[first:last]

    def text_shape(self, qid: str) -> tuple[int, ...] | None:
        return self.videos.text_shape(qid)

    def text(self, qid: str) -> np.ndarray:
        return self.videos.text(qid)

    def fingerprint(self, kind: str, keys: Sequence[str]) -> str | None:
        """The wrapped source's fingerprint of the windows' videos (or of the queries), with the windows and the
        clip length for videos, so that a rebuild keeps the shards made from the same features; None when the
        wrapped source has no fingerprint (every shard is then rewritten)."""
        fingerprint = getattr(self.videos, "fingerprint", None)
        if fingerprint is None:
            return None
        if kind != "video":
            return fingerprint(kind, keys)
        videos = fingerprint(kind, list(dict.fromkeys(self._window(key)[0] for key in keys)))
        windows = strict_json([self.clip_length, list(keys)], "the windows")
        return hashlib.sha256((videos + windows).encode()).hexdigest()

    def feature_files(self, kind: str, key: str) -> list[str]:
        """The wrapped source's files of a window's video (or of a query), for the builder's errors."""
        files = getattr(self.videos, "feature_files", None)
        return files(kind, self._window(key)[0] if kind == "video" else key) if files is not None else []


def generate_sample(
    caption: Mapping[str, Any],
    video_features: np.ndarray,
    text_features: np.ndarray,
    duration: float | None,
    config: InterVidMRConfig,
) -> dict[str, Any] | str:
    """Steps 2-11 for one caption: a QVHighlights-format row, or the reason it was dropped.

    Args:
        caption: ``{qid, ytid, start, end, query}`` from :func:`filter_captions`.
        video_features: (L_full, d) features of the whole video, clip i = [i c, (i + 1) c).
        text_features: (N, d) caption token features; row 0 is the sentence embedding F_c.
        duration: the video's length in seconds; None: ``L_full * c``.
    """
    c = config.clip_length
    duration = len(video_features) * c if duration is None else duration
    if not _is_duration(duration):
        raise ValueError(
            f"caption {caption['qid']!r}: the duration of video {caption['ytid']!r} is {duration!r}; it must be "
            "a finite number of seconds > 0"
        )
    rng = np.random.default_rng([config.seed, zlib.crc32(str(caption["qid"]).encode())])
    placed = trim_window(caption["start"], caption["end"], duration, rng, config)
    if isinstance(placed, str):
        return placed
    u, window = placed
    first, num_clips = round(u / c), round(window / c)
    clips = np.asarray(video_features)[first : first + num_clips]
    if len(clips) < num_clips:
        return "features_shorter_than_window"
    text = np.asarray(text_features)
    if text.ndim != 2 or len(text) == 0:
        raise ValueError(
            f"caption {caption['qid']!r}: text features of shape {text.shape}, expected (N >= 1, d)"
        )
    checks = (
        (f"video {caption['ytid']!r} (its window's clips {first}..{first + num_clips - 1})", clips),
        ("its text features (row 0, the sentence embedding)", text[0]),
    )
    for what, values in checks:
        if not np.isfinite(values).all():
            raise ValueError(
                f"caption {caption['qid']!r}: the features of {what} hold {int((~np.isfinite(values)).sum())} "
                "NaN or infinite values; re-extract them"
            )
    interval = (max(0.0, caption["start"] - u), min(window, caption["end"] - u))
    moments = annotate_moments(clip_similarities(clips, text[0]), interval, window, config)
    if isinstance(moments, str):
        return moments
    return {
        "qid": str(caption["qid"]),
        "query": caption["query"],
        "vid": _window_vid(caption["ytid"], u, u + window),
        "duration": window,
        "relevant_windows": moments["relevant_windows"],
        "relevant_clip_ids": moments["relevant_clip_ids"],
        "saliency_scores": moments["saliency_scores"],
    }


# ----------------------------------------------------------------------------------- sharded run
def _is_duration(value: Any) -> bool:
    return _finite_number(value) and value > 0


def check_durations(durations: Mapping[str, Any], source: str = "durations") -> None:
    """ValueError naming ``source`` and the first video whose duration is not a finite number of seconds > 0."""
    if not isinstance(durations, Mapping):
        raise ValueError(
            f"{source}: expected a JSON object {{ytid: seconds}}, got {type(durations).__name__}"
        )
    for ytid, value in durations.items():
        if not _is_duration(value):
            raise ValueError(
                f"{source}: video {ytid!r} has duration {value!r}; durations must be finite numbers of seconds > 0"
            )


def check_captions(captions: Sequence[Mapping[str, Any]], locations: Sequence[str] | None = None) -> None:
    """ValueError ``"<location>: ..."`` for a caption that :func:`filter_captions` could not have written."""
    first: dict[str, int] = {}
    for index, caption in enumerate(captions):
        where = _where(locations, index)
        if not isinstance(caption, Mapping):
            raise ValueError(f"{where}: expected a caption object, got {type(caption).__name__}")
        missing = [key for key in ("qid", "ytid", "start", "end", "query") if key not in caption]
        if missing:
            raise ValueError(f"{where}: caption lacks {missing}; write the captions with the filter step")
        qid, ytid = caption["qid"], caption["ytid"]
        if isinstance(qid, bool) or not isinstance(qid, int | str) or not str(qid).strip():
            raise ValueError(f"{where}: qid {qid!r} must be a non-blank string or an integer")
        if not isinstance(ytid, str) or not ytid.strip() or not isinstance(caption["query"], str):
            raise ValueError(f"{where}: ytid {ytid!r} and query must be strings, ytid non-blank")
        for key in ("start", "end"):
            value = caption[key]
            if not _finite_number(value):
                raise ValueError(f"{where}: {key} {value!r} must be a finite number of seconds")
        if str(qid) in first:
            raise ValueError(
                f"{where}: qid {str(qid)!r} repeats {_where(locations, first[str(qid)])} (it names the "
                "caption's feature file)"
            )
        first[str(qid)] = index


def _features_identity(features: FeatureSource, ytids: Sequence[str], qids: Sequence[str]) -> Any:
    """What the features of these videos and captions are: the source's fingerprint of their files (or, for
    a source without one, a hash of the arrays), and which of them are absent."""
    fingerprint = getattr(features, "fingerprint", None)
    if fingerprint is not None:
        try:  # the usual case, every file present: no header is read
            return [fingerprint("video", list(ytids)), fingerprint("text", list(qids))]
        except FileNotFoundError:
            pass
    videos = [ytid for ytid in ytids if features.video_shape(ytid) is not None]
    texts = [qid for qid in qids if features.text_shape(qid) is not None]
    absent = [sorted(set(ytids) - set(videos)), sorted(set(qids) - set(texts))]
    if fingerprint is not None:
        return [fingerprint("video", videos), fingerprint("text", texts), absent]
    digest = hashlib.sha256()
    for kind, keys, load in (("video", videos, features.video), ("text", texts, features.text)):
        for key in keys:
            array = np.ascontiguousarray(load(key))
            digest.update(f"{kind}\0{key}\0{array.dtype.str}\0{array.shape}\n".encode())
            digest.update(array.tobytes())
    return [digest.hexdigest(), absent]


def _shard_digest(
    part: Sequence[Mapping[str, Any]],
    features: FeatureSource,
    durations: Mapping[str, float],
    config: InterVidMRConfig,
) -> str:
    """SHA-256 of what makes a shard: the settings (all but ``validation_size``, which only splits the
    finished rows), its captions, its videos' durations and the identity of their features."""
    ytids = sorted({caption["ytid"] for caption in part})
    settings = {key: value for key, value in asdict(config).items() if key != "validation_size"}
    inputs = {
        "settings": settings,
        "captions": [dict(caption) for caption in part],
        "durations": {ytid: durations.get(ytid) for ytid in ytids},
        "features": _features_identity(features, ytids, [str(caption["qid"]) for caption in part]),
    }
    return hashlib.sha256(strict_json(inputs, "the shard's inputs", sort_keys=True).encode()).hexdigest()


def _stored_digest(path: Path) -> str | None:
    """The digest a finished shard was written with (its last line), or None (absent, or written without)."""
    try:
        last = path.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1]
        return json.loads(last).get("_digest")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class ShardStats:
    """What one shard produced: samples written and the reasons for the others."""

    samples: int = 0
    reasons: dict[str, int] | None = None
    window_lengths: list[float] | None = None
    num_windows: list[int] | None = None
    coverage: list[float] | None = None
    grades: list[int] | None = None
    missing_examples: list[str] | None = None  # a few of the absent features, e.g. "video 'yt1'"


def _run_shard(
    captions: Sequence[Mapping[str, Any]],
    features: FeatureSource,
    durations: Mapping[str, float],
    config: InterVidMRConfig,
    progress: tqdm,
) -> tuple[list[dict[str, Any]], ShardStats]:
    rows, reasons = [], Counter()
    lengths, num_windows, coverage, grades, missing = [], [], [], [], []
    cached_ytid, video = None, None
    for caption in captions:  # one caption at a time: each step inside is vectorised over clips
        progress.update(1)
        if caption["ytid"] != cached_ytid:  # captions of a video are adjacent: load its features once
            cached_ytid = caption["ytid"]
            video = features.video(cached_ytid) if features.video_shape(cached_ytid) is not None else None
        if video is None or features.text_shape(caption["qid"]) is None:
            reasons["missing_features"] += 1
            absent = f"video {cached_ytid!r}" if video is None else f"query {str(caption['qid'])!r}"
            if len(missing) < 5 and absent not in missing:
                missing.append(absent)
            continue
        row = generate_sample(
            caption, video, features.text(caption["qid"]), durations.get(caption["ytid"]), config
        )
        if isinstance(row, str):
            reasons[row] += 1
            continue
        rows.append(row)
        windows = np.asarray(row["relevant_windows"])
        lengths += (windows[:, 1] - windows[:, 0]).tolist()
        num_windows.append(len(windows))
        coverage.append(len(row["relevant_clip_ids"]) * config.clip_length / row["duration"])
        grades += [g[0] for g in row["saliency_scores"]]
    stats = ShardStats(len(rows), dict(reasons), lengths, num_windows, coverage, grades, missing)
    return rows, stats


def _shard_path(output_dir: Path, index: int, count: int) -> Path:
    return output_dir / "shards" / f"shard-{index:05d}-of-{count:05d}.jsonl"


def generate_intervid_mr(
    captions: Sequence[Mapping[str, Any]],
    features: FeatureSource,
    output_dir: str | Path,
    *,
    config: InterVidMRConfig | None = None,
    durations: Mapping[str, float] | None = None,
    shard_size: int = 1000,
    caption_reasons: Mapping[str, int] | None = None,
    locations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Steps 2-12 over all captions, in resumable shards; returns the summary (also ``summary.json``).

    Captions are sorted by video, then cut into shards of ``shard_size``. Shard k is written as
    ``shards/shard-k-of-n.jsonl``: rows in the QVHighlights format, then one last line
    ``{"_stats": ..., "_digest": ...}``, all in one atomic write, so a shard file is either complete or
    absent. The digest covers what made the shard (the config but ``validation_size``, its captions, its
    videos' durations, the fingerprint of its features' files, or a hash of the arrays for a source without
    one). A re-run keeps every shard whose digest matches and redoes the others (other settings, captions,
    durations or features), so a run killed at any moment loses only the shard in progress, and a run with
    other inputs never reuses old rows; shards of another shard count are deleted. Every random choice is
    seeded by ``(config.seed, qid)``: the output does not depend on the sharding.

    Finally, ``train.jsonl`` / ``validation.jsonl`` (``validation_size`` samples, whole videos, chosen by a
    hash of the YouTube id), ``summary.json`` and ``window_lengths.png`` are written.

    Args:
        captions: :func:`filter_captions` output.
        features: videos by YouTube id (whole video, (L, d)), caption token features by qid.
        durations: video lengths in seconds by YouTube id; a missing one is ``L * clip_length``.
        caption_reasons: the rejection counts of :func:`filter_captions`, for the summary.
        locations: where each caption comes from (e.g. ``"captions.jsonl:3"``), named in the errors.

    Raises:
        ValueError: a malformed caption (naming its location), a duration that is not a finite number of
            seconds > 0, or NaN / infinite features (naming the video and caption).
    """
    config = config or InterVidMRConfig()
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    check_captions(captions, locations)
    durations = durations or {}
    check_durations(durations)
    output_dir = Path(output_dir)
    (output_dir / "shards").mkdir(parents=True, exist_ok=True)
    for leftover in (output_dir / "shards").glob(".*.tmp"):  # a killed write's temporary file
        leftover.unlink()
    ordered = sorted(captions, key=lambda caption: caption["ytid"])  # stable: input order within a video
    count = max(1, math.ceil(len(ordered) / shard_size))
    reused = redone = 0
    with tqdm(total=len(ordered), desc="InterVid-MR", unit="caption") as progress:
        for index in range(count):
            part = ordered[index * shard_size : (index + 1) * shard_size]
            path = _shard_path(output_dir, index, count)
            digest = _shard_digest(part, features, durations, config)
            stored = _stored_digest(path) if path.is_file() else None
            if stored == digest:
                reused += 1
                progress.update(len(part))
                continue
            redone += path.is_file()
            rows, stats = _run_shard(part, features, durations, config, progress)
            atomic_write_jsonl(path, [*rows, {"_stats": asdict(stats), "_digest": digest}])
    current = {_shard_path(output_dir, index, count).name for index in range(count)}
    for stale in (output_dir / "shards").glob("shard-*-of-*.jsonl"):  # another shard count's
        if stale.name not in current:
            stale.unlink()
    if redone:
        logger.info("redid %d shards made from other settings, captions, durations or features", redone)
    if reused:
        logger.info("kept %d shards made from the same inputs", reused)
    return _finalise(output_dir, count, len(captions), caption_reasons or {}, config)


def _read_shard(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:-1]], json.loads(lines[-1])["_stats"]


def _finalise(
    output_dir: Path, count: int, num_captions: int, caption_reasons: Mapping[str, int], config
) -> dict:
    """Splits, summary and histogram from the finished shards."""
    rows, stats = [], []
    for index in range(count):
        shard_rows, shard_stats = _read_shard(_shard_path(output_dir, index, count))
        rows += shard_rows
        stats.append(shard_stats)
    # Validation: whole source videos in a fixed hash order until validation_size samples are reached.
    per_video = Counter(row["vid"].rsplit("_", 2)[0] for row in rows)
    ordered = sorted(per_video, key=lambda ytid: (zlib.crc32(ytid.encode()), ytid))
    taken = np.cumsum([per_video[y] for y in ordered])
    num_validation_videos = (
        int(np.searchsorted(taken, config.validation_size)) + 1 if config.validation_size else 0
    )
    if num_validation_videos >= len(
        per_video
    ):  # a run too small for a validation split keeps all for training
        num_validation_videos = 0
    validation_videos = set(ordered[:num_validation_videos])
    splits = {"train": [], "validation": []}
    for row in rows:
        splits["validation" if row["vid"].rsplit("_", 2)[0] in validation_videos else "train"].append(row)
    for split, split_rows in splits.items():
        atomic_write_jsonl(output_dir / f"{split}.jsonl", split_rows)

    reasons = Counter()
    missing: list[str] = []
    for shard in stats:
        reasons.update(shard["reasons"])
        missing += [m for m in shard.get("missing_examples") or [] if m not in missing][: 5 - len(missing)]
    lengths = np.concatenate([np.asarray(s["window_lengths"], dtype=np.float64) for s in stats])
    grades = np.concatenate([np.asarray(s["grades"], dtype=np.int64) for s in stats])
    num_windows = np.concatenate([np.asarray(s["num_windows"], dtype=np.int64) for s in stats])
    coverage = np.concatenate([np.asarray(s["coverage"], dtype=np.float64) for s in stats])
    summary = {
        "input_rows": num_captions + sum(caption_reasons.values()),
        "captions_after_filter": num_captions,
        "caption_filter_reasons": dict(sorted(caption_reasons.items())),
        "samples": len(rows),
        "sample_filter_reasons": dict(sorted(reasons.items())),
        "missing_features_examples": missing,
        "splits": {split: len(split_rows) for split, split_rows in splits.items()},
        "windows_per_sample": {str(k): int(v) for k, v in zip(*np.unique(num_windows, return_counts=True))},
        "grades": {str(k): int(v) for k, v in zip(*np.unique(grades, return_counts=True))},
        "mean_window_seconds": float(lengths.mean()) if lengths.size else 0.0,
        "mean_coverage": float(coverage.mean()) if coverage.size else 0.0,
        "config": asdict(config),
    }
    atomic_write_json(output_dir / "summary.json", summary)
    _plot_window_lengths(lengths, output_dir / "window_lengths.png")
    dropped = sum(reasons.values()) / max(1, num_captions)
    if dropped > 0.3:
        logger.warning(
            "%.0f%% of the captions were dropped after filtering: revisit the caption filter", 100 * dropped
        )
    return summary


def _plot_window_lengths(lengths: np.ndarray, path: Path) -> None:
    """Histogram of the relevant-window lengths (seconds), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(lengths, bins=np.arange(0, 152, 4))
    axis.set_xlabel("relevant window length (s)")
    axis.set_ylabel("windows")
    axis.set_title(f"InterVid-MR: {lengths.size} windows")
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
