"""Video decoding for the SG-DETR processor: one small interface, three decoders.

* [`PyAVDecoder`] (default): sequential decoding with frame threading, frames matched to the
  requested indices by their presentation timestamps; seeks only to skip a trimmed-off start.
* [`DecordDecoder`]: ``VideoReader.get_batch`` (exact frames; ``seek``/``next`` are never used).
  decord is known to segfault on some corrupt files, so the ``"decord"`` backend runs it in a child
  process ([`IsolatedDecoder`]) by default: a crash then becomes a ``VideoDecodingError`` naming the file.
* [`FrameArrayDecoder`]: frames already in memory (a (F, H, W, 3) uint8 array and an fps).

Every decoder exposes ``metadata`` ([`VideoMetadata`]: presentation time of every frame, duration,
size) and ``iter_frames(indices, batch_size)``, which yields the requested frames as uint8 RGB
(n, H, W, 3) arrays of at most ``batch_size`` frames, so the memory use does not grow with the video.
This module imports neither torch nor decord at load time (decord only inside ``try``), so it stays
cheap to import in the decoding child process and optional as Hub remote code.

Why PyAV is the default (``scripts/benchmark_processor.py``: 150 s of 720p H.264 on a shared 2-core CPU,
best of 3): the whole processor (decode, resize, normalise) ran at 19x real-time with PyAV, 20x with
decord in this process (its native threads overlap decoding with our resizing) and 17x with decord
isolated in a child process (frames cross a pipe), the only safe way to run decord on untrusted files;
peak memory was 0.87, 1.02 and 0.86 GB. decord also failed on some frame widths (72 px:
"DECORDArrayCopyFromTo: The size must exactly match"; 2x2 frames, GIFs) and has no wheels for Linux aarch64
or Apple Silicon. So a file decord cannot read is tried with PyAV before it is called corrupt, and the
error says which backend reads it. A PyAV failure needs no such check: decord decodes with the same
FFmpeg libraries, so a file FFmpeg cannot read, decord cannot either.
"""

import contextlib
import itertools
import logging
import math
import numbers
import os
import queue
import re
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe

import numpy as np

try:
    import av
except ImportError:  # reported when a PyAV decoder is requested
    av = None


logger = logging.getLogger(__name__)


class VideoDecodingError(ValueError):
    """A video file that cannot be read (missing, not a video, no frames, corrupt or truncated)."""


class _UnusableVideoError(VideoDecodingError):
    """The file has no video stream, no video frames or no timestamps: a fact about the file, not a decoder
    failure."""


# The lowest frame rate accepted for in-memory frames: below it a handful of frames spans hours of clips.
MIN_ARRAY_FPS = 1e-3
# A gap between consecutive frames longer than both of these (the typical period is the median gap) is a
# long still or a broken timestamp: it is warned about, and refused when it makes the video longer than
# _MAX_VIDEO_SECONDS (24 h, the longest duration the dataset readers accept): one bad pts makes a 1e6-s video.
_MAX_GAP_PERIODS, _MAX_GAP_SECONDS = 100.0, 60.0
_MAX_VIDEO_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class VideoMetadata:
    """What the clip sampler needs to know about a video.

    Attributes:
        path: the file (or ``"<array>"`` for in-memory frames).
        frame_times: (F,) presentation time of every frame in seconds, from the first frame, non-decreasing.
        duration: seconds from the first frame's start to the last frame's end.
        width, height: frame size in pixels.
    """

    path: str
    frame_times: np.ndarray
    duration: float
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)

    @property
    def fps(self) -> float:
        """Average frame rate (frames per second)."""
        return self.num_frames / self.duration


def _frame_period(frame_times: np.ndarray, nominal_fps: float | None) -> float:
    """Display duration of the last frame: the median inter-frame gap, else 1 / nominal fps, else 1 s."""
    gaps = np.diff(frame_times)
    gaps = gaps[gaps > 0]
    if len(gaps):
        return float(np.median(gaps))
    return 1.0 / nominal_fps if nominal_fps else 1.0


def _check_frame_gaps(path: str, frame_times: np.ndarray) -> None:
    """Flag a timestamp jump far beyond the typical frame period: a warning (a slideshow's long still is real),
    an error when it makes the video longer than 24 h (one bad pts makes a 1e6-s video)."""
    gaps = np.diff(frame_times)
    positive = gaps[gaps > 0]
    if not len(positive):
        return
    period = float(np.median(positive))
    (jumps,) = np.nonzero(gaps > max(_MAX_GAP_PERIODS * period, _MAX_GAP_SECONDS))
    if not len(jumps):
        return
    index = int(jumps[0])
    jump = (
        f"frame {index + 1} is {gaps[index]:.3f} s after frame {index} (typical frame period {period:.3f} s)"
    )
    if frame_times[-1] > _MAX_VIDEO_SECONDS:
        raise VideoDecodingError(
            f"{path} has a broken timestamp: {jump}, which makes the video {frame_times[-1]:.0f} s long; the "
            "file is corrupt: re-encode it"
        )
    logger.warning(
        "%s: %s, one of %d such gaps: a long still, or a broken timestamp (then re-encode the file)",
        path,
        jump,
        len(jumps),
    )


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodingError(f"video file not found: {path}")
    if not os.path.isfile(path):
        raise VideoDecodingError(f"not a file: {path}")
    if os.path.getsize(path) == 0:
        raise VideoDecodingError(f"{path} is empty (0 bytes)")


class VideoDecoder(ABC):
    """One open video. Subclasses set ``self.metadata`` in ``__init__``; use as a context manager."""

    metadata: VideoMetadata

    @abstractmethod
    def iter_frames(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Yield the frames at ``indices`` (non-decreasing; repeats allowed) in order, as uint8 RGB arrays
        of shape (n, H, W, 3) with n <= ``batch_size``."""

    @abstractmethod
    def close(self) -> None:
        """Release the file and any decoder resources."""

    def __enter__(self) -> "VideoDecoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _batched(frames: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Group single (H, W, 3) frames into (n, H, W, 3) batches of at most ``batch_size``."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


class FrameArrayDecoder(VideoDecoder):
    """Frames already in memory: (F, H, W, 3) uint8 RGB at a constant ``fps``."""

    def __init__(self, frames: np.ndarray, fps: float):
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VideoDecodingError(
                f"in-memory video must be a (frames, height, width, 3) uint8 RGB array, got {frames.dtype} "
                f"{frames.shape}"
            )
        if len(frames) == 0:
            raise VideoDecodingError("in-memory video has no frames")
        if frames.shape[1] == 0 or frames.shape[2] == 0:
            raise VideoDecodingError(
                f"in-memory video frames are empty (height {frames.shape[1]}, width {frames.shape[2]})"
            )
        if fps is None:
            raise VideoDecodingError("an in-memory video needs its frame rate: pass fps > 0")
        real = isinstance(fps, numbers.Real) and not isinstance(fps, (bool, np.bool_))
        if not (real and math.isfinite(fps) and fps >= MIN_ARRAY_FPS):
            raise VideoDecodingError(
                f"an in-memory video needs its frame rate: pass a finite fps >= {MIN_ARRAY_FPS} frames/s "
                f"(got {fps!r})"
            )
        self._frames = frames
        times = np.arange(len(frames)) / float(fps)
        self.metadata = VideoMetadata(
            "<array>", times, len(frames) / float(fps), frames.shape[2], frames.shape[1]
        )

    def iter_frames(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(indices), batch_size):
            yield self._frames[indices[start : start + batch_size]]

    def close(self) -> None:
        self._frames = None


def _declared_span(container: "av.container.InputContainer", stream) -> tuple[float, float, str] | None:
    """(start, end, who declares it) in seconds of presentation time: the video stream's own span where the
    file gives one, else the container's, else None."""
    # FFmpeg estimates a stream's duration (from the container's, or the bit rate) when it found none of the
    # stream's timestamps, and then leaves its start time unset: only a stream with both declares one.
    if stream.duration and stream.start_time is not None:
        start = stream.start_time * float(stream.time_base)
        return start, start + stream.duration * float(stream.time_base), "its video stream"
    if container.duration:
        start, duration = (container.start_time or 0) / av.time_base, container.duration / av.time_base
        # Matroska's duration counts from time 0, not from the first frame: a valid MKV whose frames start at
        # 5 s and last 1 s declares 6 s. Either reading may be meant, so the earlier end is taken.
        return (
            start,
            min(start + duration, duration) if duration > start else start + duration,
            "the container",
        )
    return None


def _check_declared_duration(path: str, declared: tuple[float, float, str] | None, video_end: float) -> None:
    """Compare where the video's frames end (``video_end``, seconds of presentation time) with the span the file
    declares (:func:`_declared_span`). The frame index catches truncated MP4/AVI files; MKV and WebM have none,
    so a truncated or damaged one would silently be a shorter video. The stream's own duration is about the
    video alone: falling short of it is an error. The container's covers every track (an audio track may
    outlast the video): falling short of it is only a warning."""
    if declared is None:
        return
    declared_start, declared_end, source = declared
    missing = declared_end - video_end
    if missing <= max(1.0, 0.1 * (declared_end - declared_start)):
        return
    message = (
        f"{path}: the video frames end at {video_end:.3f} s but {source} declares {declared_end:.3f} s; "
        "the file is probably truncated or corrupt"
    )
    if source == "its video stream":
        raise VideoDecodingError(message)
    logger.warning("%s (or another track outlasts the video)", message)


def _quarter_turns(frame: "av.VideoFrame") -> int:
    """The counter-clockwise quarter turns that show ``frame`` as the file means it to be seen (its display
    matrix: a phone's portrait video is stored as landscape frames with a 90-degree rotation)."""
    return round((frame.rotation or 0) / 90) % 4


def _upright_rgb(frame: "av.VideoFrame") -> np.ndarray:
    """``frame`` as (H, W, 3) uint8 RGB, rotated as displayed, as decord and FFmpeg's command line show it."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class PyAVDecoder(VideoDecoder):
    """Sequential decoding with PyAV (FFmpeg), exact frames, memory bounded by ``batch_size``.

    The probe reads packet timestamps only (no decoding). Reading decodes forward from the keyframe before
    the first requested frame and converts only the requested frames to RGB. Frames are identified by
    their timestamps, so a seek that lands early is harmless; one that lands late is retried from the start.

    Args:
        path: video file.
        num_threads: decoder threads, 0 = FFmpeg's choice (one per core).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 0):
        if av is None:
            raise ImportError("the PyAV backend needs the `av` package: pip install av")
        self.path = os.fspath(path)
        _check_file(self.path)
        try:
            self._container = av.open(self.path)
        except av.FFmpegError as error:
            raise VideoDecodingError(f"cannot open {self.path} as a video: {error}") from error
        try:
            if not self._container.streams.video:
                raise _UnusableVideoError(f"{self.path} has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = num_threads
            self.metadata = self._probe()
        except BaseException:
            self._container.close()
            raise

    def _probe(self) -> VideoMetadata:
        stream = self._stream
        try:
            packets = [
                (packet.pts, packet.duration) for packet in self._container.demux(stream) if packet.size
            ]
        except av.FFmpegError as error:
            raise VideoDecodingError(f"{self.path} is corrupt or truncated: {error}") from error
        if not packets:
            raise _UnusableVideoError(f"{self.path} has no video frames")
        if stream.frames > len(packets):  # the container's index (MP4, AVI) lists frames the file lacks
            raise VideoDecodingError(
                f"{self.path} is truncated: its index lists {stream.frames} frames, only {len(packets)} are present"
            )
        if untimed := sum(pts is None for pts, _ in packets):
            # A raw elementary stream (.h264, .hevc, .m4v): its frame rate and duration would be FFmpeg's guess
            # (25 fps unless told), and it cannot be seeked.
            raise _UnusableVideoError(
                f"{self.path} has {untimed} of {len(packets)} frames without timestamps (format "
                f"{self._container.format.name}): a raw video stream, whose frame rate and duration are unknown. "
                "Put it in a container with its real frame rate, e.g. "
                f"`ffmpeg -framerate 30 -i {os.path.basename(self.path)} -c copy video.mp4`"
            )
        nominal_fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        pts, durations = np.asarray(packets, dtype=np.float64).T
        order = np.argsort(pts, kind="stable")
        self._pts = pts[order].astype(np.int64)
        times = (self._pts - self._pts[0]) * float(stream.time_base)
        last_duration = durations[order[-1]] * float(stream.time_base)
        last_period = last_duration if last_duration > 0 else _frame_period(times, nominal_fps)
        _check_frame_gaps(self.path, times)
        video_end = self._pts[-1] * float(stream.time_base) + last_period
        _check_declared_duration(self.path, _declared_span(self._container, stream), video_end)
        duration = float(times[-1]) + last_period
        width, height = stream.codec_context.width, stream.codec_context.height
        try:  # the display rotation is on the decoded frames: one decode of the first frame
            first = next(self._decode_from(0), None)
        except av.FFmpegError as error:
            raise VideoDecodingError(
                f"{self.path} is corrupt: its first frame cannot be decoded ({error})"
            ) from error
        if first is not None and _quarter_turns(first[1]) % 2:
            width, height = height, width
        return VideoMetadata(self.path, times, duration, width, height)

    def _decode_from(self, first_index: int) -> Iterator[tuple[int, "av.VideoFrame"]]:
        """(index, frame) pairs in presentation order, from the keyframe at or before ``first_index``."""
        target = int(self._pts[first_index])
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        for count, frame in enumerate(self._container.decode(self._stream)):
            index = count if frame.pts is None else int(np.searchsorted(self._pts, frame.pts))
            yield index, frame

    def _iter_single_frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        first = int(indices[0])
        frames = self._decode_from(first)
        if first > 0:
            head = next(frames, None)
            if head is None or head[0] > first:  # the seek landed after the first wanted frame: start over
                frames = self._decode_from(0)
            else:
                frames = itertools.chain([head], frames)
        position, last_index = 0, -1  # position: next entry of `indices` to serve
        for index, frame in frames:
            last_index = index
            if index < indices[position]:
                continue
            # Serve every request up to this frame. A request below `index` means the decoder dropped that
            # frame (damaged stream): the next decoded frame is the nearest one there is.
            rgb = _upright_rgb(frame)
            while position < len(indices) and indices[position] <= index:
                yield rgb
                position += 1
            if position == len(indices):
                return
        if last_index < 0:
            raise VideoDecodingError(f"{self.path}: no frame could be decoded; the file is corrupt")
        raise VideoDecodingError(
            f"{self.path}: decoding stopped after frame {last_index} of {self.metadata.num_frames}; "
            "the file is truncated or corrupt"
        )

    def iter_frames(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return
        try:
            yield from _batched(self._iter_single_frames(indices), batch_size)
        except av.FFmpegError as error:
            raise VideoDecodingError(f"{self.path} is corrupt or truncated: {error}") from error

    def close(self) -> None:
        self._container.close()


def _pyav_reads(path: str) -> bool | None:
    """Whether PyAV opens ``path`` and decodes its first and last frames (None: PyAV is not installed).
    A file without video (no video stream or no frames) raises PyAV's error, which says so."""
    if av is None:
        return None
    try:
        with PyAVDecoder(path, num_threads=1) as decoder:
            last = decoder.metadata.num_frames - 1
            return sum(len(batch) for batch in decoder.iter_frames(np.array([0, last]), 2)) == 2
    except _UnusableVideoError:
        raise
    except VideoDecodingError:
        return False


def _decord_failure(path: str, error: Exception, action: str) -> VideoDecodingError:
    """The error for a file decord could not ``action`` ("open" or "decode"). decord fails on some valid
    files (72-px-wide or 2x2 frames, GIFs), so PyAV is asked before the file is called corrupt."""
    # decord prefixes its messages with "[hh:mm:ss] /path/of/its/source.cc:123: ": noise to a user
    reason = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(error)).strip()
    try:
        readable = _pyav_reads(path)
    except _UnusableVideoError as no_video:  # e.g. an audio-only file: say that, not "corrupt"
        return VideoDecodingError(f"{no_video} (decord cannot {action} it: {reason})")
    if readable:
        return VideoDecodingError(
            f"decord cannot {action} {path} ({reason}), but the file is a valid video that PyAV reads: "
            "use backend='pyav' (decord fails on some valid files, e.g. 72-px-wide frames and GIFs)"
        )
    if readable is None:
        return VideoDecodingError(
            f"decord cannot {action} {path} ({reason}): the file is corrupt or one decord cannot decode "
            "(it fails on some valid files); install PyAV (pip install av) and use backend='pyav'"
        )
    return VideoDecodingError(
        f"{path} is corrupt or truncated: decord cannot {action} it ({reason}) and PyAV cannot read it either"
    )


def _header_span(path: str) -> tuple[float, float, str] | None:
    """The span ``path``'s header declares for its first video stream (:func:`_declared_span`), read with PyAV
    (the header only, no demuxing); None without PyAV or when PyAV cannot open the file."""
    if av is None:
        return None
    try:
        with av.open(path) as container:
            return _declared_span(container, container.streams.video[0]) if container.streams.video else None
    except av.FFmpegError:
        return None


class DecordDecoder(VideoDecoder):
    """decord ``VideoReader`` in this process; ``get_batch`` per batch of frames (never ``seek``/``next``,
    which return wrong frames). Prefer the isolated form ([`IsolatedDecoder`]) for untrusted files."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 0):
        try:
            import decord
        except ImportError as error:
            raise ImportError(
                "the decord backend needs `decord` (pip install decord), or use backend='pyav'"
            ) from error
        self.path = os.fspath(path)
        _check_file(self.path)
        try:
            self._reader = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=num_threads)
            num_frames = len(self._reader)
            stamps = self._reader.get_frame_timestamp(np.arange(num_frames)) if num_frames else None
            height, width = self._reader[0].shape[:2] if num_frames else (0, 0)
        except Exception as error:  # decord raises RuntimeError or its own DECORDError(Exception)
            raise _decord_failure(self.path, error, "open") from error
        if not num_frames:
            raise VideoDecodingError(f"{self.path} has no video frames")
        times = stamps[:, 0] - stamps[0, 0]
        _check_frame_gaps(self.path, times)
        if (declared := _header_span(self.path)) is not None:
            # decord's times count from the stream's start, the declared span's in presentation time
            _check_declared_duration(self.path, declared, declared[0] + float(stamps[-1, 1]))
        self.metadata = VideoMetadata(self.path, times, float(stamps[-1, 1] - stamps[0, 0]), width, height)

    def iter_frames(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), batch_size):
            unique, inverse = np.unique(indices[start : start + batch_size], return_inverse=True)
            try:
                frames = self._reader.get_batch(unique.tolist()).asnumpy()
            except Exception as error:
                raise _decord_failure(self.path, error, "decode") from error
            yield frames[inverse]

    def close(self) -> None:
        self._reader = None


def _serve(fd: int, backend: str, num_threads: int) -> None:
    """Decoding child's loop, speaking plain Python/numpy objects only (the child loads this file under
    another module name). Requests: ("open", path) -> metadata fields; ("read", indices, batch_size) -> the
    first batch; ("next",) -> the next batch (None when done); ("stop",). Batches are pulled one at a time,
    so a reader that stops early leaves nothing queued in the pipe."""
    connection = Connection(fd)
    decoder_class = {"pyav": PyAVDecoder, "decord": DecordDecoder}[backend]
    decoder, batches = None, iter(())
    warnings = _WarningCollector()  # this file's warnings go back to the parent with the reply
    logger.addHandler(warnings)
    logger.propagate = False
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the parent exited
            return
        if request[0] == "stop":
            return
        warnings.messages = []
        try:
            if request[0] == "open":
                if decoder is not None:
                    decoder.close()
                decoder = None
                decoder = decoder_class(request[1], num_threads)
                reply = vars(decoder.metadata)
            else:
                if request[0] == "read":
                    batches = decoder.iter_frames(request[1], request[2])
                reply = next(batches, None)
            connection.send(("ok", reply, warnings.messages))
        except (ValueError, ImportError) as error:
            message = f"{type(error).__name__}: {error}" if isinstance(error, ImportError) else str(error)
            connection.send(("error", message, warnings.messages))


class _WarningCollector(logging.Handler):
    """Keeps the messages logged in a decoding child, for its reply."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# Seconds a decoding child may take to answer one request (one batch of frames) before it counts as hung.
_REPLY_TIMEOUT = 600.0
# Loads this very file in a fresh interpreter: no import of the package (or of the user's __main__, which
# multiprocessing's spawn would re-run), so the child starts in a fraction of a second.
_BOOTSTRAP = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_sgdetr_video_worker', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))\n"
)


class _DecoderWorker:
    """A long-lived child interpreter serving one backend (its start-up cost is paid once, not per file)."""

    def __init__(self, backend: str, num_threads: int):
        self.connection, child_connection = Pipe()
        fd = child_connection.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(fd), backend, str(num_threads)],
            pass_fds=(fd,),
        )
        child_connection.close()
        self.in_use = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: tuple, path: str):
        """Send one request and return the child's reply. A crash of the child, or no reply within
        ``_REPLY_TIMEOUT`` seconds (a hung decoder), becomes a VideoDecodingError."""
        deadline, hung = time.monotonic() + _REPLY_TIMEOUT, False
        try:
            self.connection.send(request)
            while not self.connection.poll(0.2):
                hung = time.monotonic() > deadline
                if hung or not self.alive():
                    raise EOFError
            status, reply, warnings = self.connection.recv()
        except (EOFError, OSError):
            self.stop()
            what = (
                f"hung for {_REPLY_TIMEOUT:.0f} s"
                if hung
                else f"crashed (exit code {self.process.returncode})"
            )
            raise VideoDecodingError(
                f"the video decoder {what} while reading {path}; the file is probably corrupt: re-encode it or "
                "use backend='pyav'"
            ) from None
        for message in warnings:
            logger.warning("%s", message)
        if status == "error":
            raise (ImportError if reply.startswith("ImportError: ") else VideoDecodingError)(reply)
        return reply

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.connection.close()


_shared_workers: dict[tuple[str, int], _DecoderWorker] = {}


class IsolatedDecoder(VideoDecoder):
    """Decodes in a child interpreter, so that a crash in native code (decord segfaults on some corrupt
    files) raises ``VideoDecodingError`` here instead of killing this process. One child is shared by the
    files opened one after another (and replaced after a crash); frames travel through a pipe."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 0, backend: str = "decord"):
        self.path = os.fspath(path)
        _check_file(self.path)
        key = (backend, num_threads)
        worker = _shared_workers.get(key)
        if worker is None or not worker.alive():
            worker = _shared_workers[key] = _DecoderWorker(backend, num_threads)
        elif worker.in_use:  # another file is open: this one gets a private child
            worker = _DecoderWorker(backend, num_threads)
        self._worker, self._private = worker, worker is not _shared_workers[key]
        worker.in_use = True
        try:
            self.metadata = VideoMetadata(**worker.call(("open", self.path), self.path))
        except BaseException:
            self.close()
            raise

    def iter_frames(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        request = ("read", np.asarray(indices, dtype=np.int64), batch_size)
        while (frames := self._worker.call(request, self.path)) is not None:
            yield frames
            request = ("next",)

    def close(self) -> None:
        self._worker.in_use = False
        if self._private:
            self._worker.stop()


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` items ahead (decoding and resizing release the
    GIL, so the next chunk is prepared while the model encodes the current one). Exceptions are re-raised
    here, in order."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    finished = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
            buffer.put((finished, None))
        except BaseException as error:  # handed to the consumer
            buffer.put((finished, error))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is finished:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                buffer.get(timeout=0.1)


BACKENDS = ("pyav", "decord")


def open_video(
    video: "str | os.PathLike | np.ndarray",
    backend: str = "pyav",
    fps: float | None = None,
    num_threads: int = 0,
    isolate: bool | None = None,
) -> VideoDecoder:
    """Open a video file (or wrap in-memory frames) with the chosen decoding backend.

    Args:
        video: a path, or a (F, H, W, 3) uint8 RGB array (then ``fps`` is required).
        backend: ``"pyav"`` or ``"decord"``.
        num_threads: decoder threads (0 = the library's choice).
        isolate: decode in a child process so that a native crash cannot take this process down.
            Default: ``True`` for decord (known to segfault on some corrupt files), ``False`` for PyAV.
    """
    if not isinstance(video, (str, os.PathLike)):
        return FrameArrayDecoder(video, fps)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if isolate if isolate is not None else backend == "decord":
        return IsolatedDecoder(video, num_threads, backend)
    return (PyAVDecoder if backend == "pyav" else DecordDecoder)(video, num_threads)


__all__ = [
    "BACKENDS",
    "DecordDecoder",
    "FrameArrayDecoder",
    "IsolatedDecoder",
    "PyAVDecoder",
    "VideoDecoder",
    "VideoDecodingError",
    "VideoMetadata",
    "open_video",
    "prefetch",
]
