"""SGDetrVideoProcessor and the decoding backends, on real files and on videos painted with frame indices."""

import os
import signal
import struct

import av
import numpy as np
import pytest
import torch

from internvideo2_testing import read_index, write_video
from sgdetr_hf import SGDetrVideoProcessor, video_io_sgdetr
from sgdetr_hf.video_io_sgdetr import IsolatedDecoder, VideoDecodingError, VideoMetadata, open_video
from sgdetr_hf.video_processing_sgdetr import IMAGENET_MEAN, IMAGENET_STD

BACKENDS = ["pyav", "decord"]
SMALL = {"height": 16, "width": 16}  # enough to read the painted index back, cheap to resize


def processor(**kwargs) -> SGDetrVideoProcessor:
    return SGDetrVideoProcessor(**{"size": SMALL, **kwargs})


def metadata(frame_times, duration) -> VideoMetadata:
    return VideoMetadata("<test>", np.asarray(frame_times, dtype=np.float64), duration, 64, 48)


def test_clip_plan_of_a_5_28_second_25_fps_video():
    """3 clips, the last one 1.28 s; samples at the centres of 4 equal sub-intervals, frame on screen."""
    plan = SGDetrVideoProcessor().plan_clips(metadata(np.arange(132) / 25, 5.28))
    np.testing.assert_allclose(plan.timestamps, [[0, 2], [2, 4], [4, 5.28]])
    # clip 0 samples 0.25, 0.75, 1.25, 1.75 s -> frames 6.25, 18.75, 31.25, 43.75 (floored); clip 2 4.16 ... 5.12 s
    assert plan.frame_indices.tolist() == [[6, 18, 31, 43], [56, 68, 81, 93], [104, 112, 120, 128]]


def test_clip_plan_of_a_1_fps_video_stays_inside_each_clip():
    plan = SGDetrVideoProcessor().plan_clips(metadata(np.arange(5.0), 5.0))
    assert plan.frame_indices.tolist() == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 4, 4]]


def test_clip_plan_with_trim_and_one_second_clips():
    plan = SGDetrVideoProcessor(clip_length=1.0, frames_per_clip=2).plan_clips(
        metadata(np.arange(250) / 25, 10.0), start=3.0, end=5.5
    )
    np.testing.assert_allclose(plan.timestamps, [[3, 4], [4, 5], [5, 5.5]])
    assert plan.frame_indices.tolist() == [[81, 93], [106, 118], [128, 134]]
    with pytest.raises(ValueError, match="outside"):
        SGDetrVideoProcessor().plan_clips(metadata(np.arange(10) / 10, 1.0), start=1.5)
    with pytest.raises(ValueError, match="must be after start"):
        SGDetrVideoProcessor().plan_clips(metadata(np.arange(10) / 10, 1.0), start=0.5, end=0.5)
    last_instant = np.nextafter(3.0, 0.0)  # was one clip 4e-16 s long
    with pytest.raises(ValueError, match=r"must be after start \(2.9999999999999996 s\) by at least 1e-06 s"):
        SGDetrVideoProcessor().plan_clips(metadata(np.arange(30) / 10, 3.0), start=last_instant)


def test_durations_a_hair_over_whole_clips_do_not_add_a_clip():
    plan = SGDetrVideoProcessor().plan_clips(metadata(np.arange(3750) / 25, 150.0000001))
    assert plan.num_clips == 75


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, codec, pix_fmt, size",
    [
        ("h264.mp4", "libx264", "yuv420p", (80, 48)),
        ("vp9-odd-size.webm", "libvpx-vp9", "yuv420p", (65, 49)),
        ("mjpeg.avi", "mjpeg", "yuvj420p", (81, 47)),
    ],
)
def test_exact_frames_for_each_codec(tmp_path, backend, name, codec, pix_fmt, size):
    path = write_video(tmp_path / name, num_frames=125, codec=codec, pix_fmt=pix_fmt, size=size)
    output = processor(backend=backend)(path)
    assert output["pixel_values"].shape == (3, 4, 3, 16, 16)
    expected = [[6, 18, 31, 43], [56, 68, 81, 93], [103, 109, 115, 121]]  # 5 s: the last clip is 1 s long
    assert read_index(output["pixel_values"]).tolist() == expected
    np.testing.assert_allclose(output["clip_timestamps"], [[0, 2], [2, 4], [4, 5]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_uses_timestamps(tmp_path, backend):
    gaps = np.where(np.arange(39) % 2, 0.04, 0.2)  # alternating 200 ms / 40 ms
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    path = write_video(tmp_path / "vfr.mp4", num_frames=40, frame_times=times)
    with open_video(path, backend=backend) as decoder:
        np.testing.assert_allclose(decoder.metadata.frame_times, times, atol=1e-3)
    output = processor(backend=backend, clip_length=1.0)(path)
    samples = output["clip_timestamps"][:, :1].numpy() + (np.arange(4) + 0.5) / 4 * np.diff(
        output["clip_timestamps"].numpy()
    )
    on_screen = np.searchsorted(times, samples, side="right") - 1
    assert read_index(output["pixel_values"]).tolist() == on_screen.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_fps_and_half_second_videos(tmp_path, backend):
    one_fps = processor(backend=backend)(write_video(tmp_path / "1fps.mp4", num_frames=5, fps=1))
    assert read_index(one_fps["pixel_values"]).tolist() == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 4, 4]]
    short = processor(backend=backend)(
        write_video(tmp_path / "short.webm", num_frames=12, fps=24, codec="libvpx-vp9")
    )
    assert read_index(short["pixel_values"]).tolist() == [[1, 4, 7, 10]]
    np.testing.assert_allclose(short["clip_timestamps"], [[0, 0.5]], atol=2e-3)  # WebM counts milliseconds


@pytest.mark.parametrize("backend", BACKENDS)
def test_trimmed_extraction_seeks_to_the_right_frames(tmp_path, backend):
    path = write_video(tmp_path / "gop.mp4", num_frames=300, gop_size=25)  # 12 s, a keyframe every second
    output = processor(backend=backend, frames_per_clip=2)(path, start=7.3, end=10.0)
    np.testing.assert_allclose(output["clip_timestamps"], [[7.3, 9.3], [9.3, 10.0]])
    # samples at 7.8, 8.8, 9.475, 9.825 s
    assert read_index(output["pixel_values"]).tolist() == [[195, 220], [236, 245]]


def test_chunks_stream_and_join_to_the_whole(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mp4", num_frames=1500)  # 60 s: 30 clips, 120 sampled frames
    video_processor = processor(clips_per_chunk=3)
    whole = video_processor(path)
    delivered = []

    def recording_open_video(*args, **kwargs):
        decoder = open_video(*args, **kwargs)
        iter_frames = decoder.iter_frames

        def counting(indices, batch_size):
            for frames in iter_frames(indices, batch_size=4):  # small batches to observe streaming
                delivered.append(len(frames))
                yield frames

        decoder.iter_frames = counting
        return decoder

    monkeypatch.setattr("sgdetr_hf.video_processing_sgdetr.open_video", recording_open_video)
    chunks = video_processor.iter_clips(path)
    first = next(chunks)
    decoded_before_first_chunk = sum(delivered)
    rest = list(chunks)
    assert [len(chunk["pixel_values"]) for chunk in [first, *rest]] == [3] * 10
    # 3 clips x 4 frames were needed; the decoding thread may run at most 3 batches of 4 ahead, not to 120
    assert 12 <= decoded_before_first_chunk <= 24
    assert sum(delivered) == 120
    joined = torch.cat([chunk["pixel_values"] for chunk in [first, *rest]])
    torch.testing.assert_close(joined, whole["pixel_values"], rtol=0, atol=0)


def test_resize_squashes_without_crop_and_normalises_with_imagenet_constants():
    frames = np.zeros((1, 100, 448, 3), np.uint8)
    frames[:, :, 224:] = (255, 0, 128)  # right half coloured, 4.48:1 aspect
    resized = SGDetrVideoProcessor().resize(frames)[0]
    assert resized.shape == (3, 224, 224)
    assert (resized[:, :, :110] == 0).all()  # no crop: the left half stays the left half
    assert resized[:, :, 114:].permute(1, 2, 0).reshape(-1, 3).unique(dim=0).tolist() == [[255, 0, 128]]
    normalised = SGDetrVideoProcessor().normalize(resized)
    expected = [
        (value / 255 - mean) / std for value, mean, std in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)
    ]
    torch.testing.assert_close(normalised[:, 0, -1], torch.tensor(expected))


def test_bicubic_resize_hand_computed():
    """Halving a row: outputs sample source positions 0.5, 2.5, 4.5 with the cubic weights (a = -0.75)
    -3/32, 19/32, 19/32, -3/32 on the pixels left and right (edges replicated), then clamp and round."""
    rows = np.array(
        [[0, 100, 200, 255, 255, 255], [0, 0, 0, 255, 0, 0], [255, 255, 255, 0, 255, 255]], np.uint8
    )
    frames = np.repeat(rows[:, None, :, None], 3, axis=3)  # three 1 x 6 RGB frames
    resized = SGDetrVideoProcessor(size={"height": 1, "width": 3}).resize(frames)[:, 0, 0]
    # 19/32*100 - 3/32*200 = 40.625 -> 41;  -3/32*100 + 19/32*(200 + 255) - 3/32*255 = 236.875 -> 237
    # 19/32*255 = 151.4 -> 151;  -3/32*255 = -23.9 -> 0;  -3/32*255*2 + 19/32*255 = 103.6 -> 104;  278.9 -> 255
    assert resized.tolist() == [[41, 237, 255], [0, 151, 0], [255, 104, 255]]


def test_in_memory_frames():
    frames = np.stack([np.full((32, 32, 3), i, np.uint8) for i in range(30)])
    output = processor()(frames, fps=10)
    np.testing.assert_allclose(output["clip_timestamps"], [[0, 2], [2, 3]])
    red = output["pixel_values"][:, :, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    torch.testing.assert_close(
        red * 255, torch.tensor([[2.0, 7, 12, 17], [21, 23, 26, 28]]), atol=1e-3, rtol=0
    )
    with pytest.raises(ValueError, match="needs its frame rate"):
        processor()(frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_files(shared_data, backend):
    video_processor = SGDetrVideoProcessor(backend=backend)
    bunny = video_processor(shared_data / "videos" / "bigbuckbunny.mp4")
    assert bunny["pixel_values"].shape == (3, 4, 3, 224, 224)
    np.testing.assert_allclose(bunny["clip_timestamps"], [[0, 2], [2, 4], [4, 5.28]])
    bikes = video_processor(shared_data / "videos" / "bikes.mp4")
    assert bikes["pixel_values"].shape == (5, 4, 3, 224, 224)
    if backend == "decord":  # both decoders return bit-identical frames
        reference = SGDetrVideoProcessor(backend="pyav")(shared_data / "videos" / "bikes.mp4")
        assert torch.equal(bikes["pixel_values"], reference["pixel_values"])


def test_save_and_load_round_trip(tmp_path):
    video_processor = SGDetrVideoProcessor(
        clip_length=1.0, frames_per_clip=8, backend="decord", antialias=True
    )
    video_processor.save_pretrained(tmp_path)
    reloaded = SGDetrVideoProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == video_processor.to_dict()
    assert (reloaded.clip_length, reloaded.frames_per_clip, reloaded.backend) == (1.0, 8, "decord")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clip_length": 0}, "clip_length"),
        ({"clip_length": float("inf")}, "clip_length must be a finite number"),  # one clip for any video
        ({"clip_length": float("nan")}, "clip_length must be a finite number"),
        ({"clip_length": "2"}, "clip_length must be a finite number"),
        ({"frames_per_clip": 0}, "frames_per_clip"),
        ({"size": {"height": 224}}, "size"),
        ({"resample": "nearest"}, "resample"),
        ({"backend": "opencv"}, "backend"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGDetrVideoProcessor(**kwargs)
    with pytest.raises(TypeError, match="clip_seconds"):
        SGDetrVideoProcessor(clip_seconds=2)


def no_video_stream(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def zero_frames(path):
    """A video stream with no frame (only audio packets are written)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mjpeg", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p"
        audio = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(audio.encode(frame))
        container.mux(audio.encode())


def truncated(path):
    """The first half of a 'faststart' MP4: the index lists 100 frames, the data stops half-way."""
    source = path.with_suffix(".full.mp4")
    with av.open(str(source), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, (100, 48, 64, 3), dtype=np.uint8)
        for image in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "make, message",
    [
        (None, "not found"),
        (lambda path: path.write_text("not a video\n" * 50), "cannot (open|read)"),
        (lambda path: path.write_bytes(b""), "empty"),
        (no_video_stream, "no video stream|cannot read"),
        (zero_frames, "no video frames|cannot read"),
        (truncated, "truncated|cannot read"),
    ],
    ids=["missing", "not-a-video", "empty", "no-video-stream", "zero-frames", "truncated"],
)
def test_bad_files_raise_a_clear_error_naming_the_file(tmp_path, backend, make, message):
    path = tmp_path / "bad.mkv"
    if make is not None:
        make(path)
    with pytest.raises(VideoDecodingError, match=message) as error:
        processor(backend=backend)(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_a_decoder_crash_does_not_take_the_process_down(tmp_path):
    path = write_video(tmp_path / "ok.mp4", num_frames=50)
    with open_video(path, backend="decord") as decoder:
        assert isinstance(decoder, IsolatedDecoder)
        os.kill(decoder._worker.process.pid, signal.SIGSEGV)  # what decord does on some corrupt files
        with pytest.raises(VideoDecodingError, match=r"crashed \(exit code -11\) while reading .*ok\.mp4"):
            list(decoder.iter_frames(np.arange(10), 4))
    # the next file gets a fresh decoding process
    assert read_index(processor(backend="decord")(path)["pixel_values"]).tolist() == [[6, 18, 31, 43]]


def test_a_hung_decoder_is_stopped(tmp_path, monkeypatch):
    path = write_video(tmp_path / "ok.mp4", num_frames=50)
    monkeypatch.setattr("sgdetr_hf.video_io_sgdetr._REPLY_TIMEOUT", 0.5)
    with open_video(path, backend="decord") as decoder:
        os.kill(decoder._worker.process.pid, signal.SIGSTOP)
        with pytest.raises(VideoDecodingError, match=r"hung for 0 s while reading .*ok\.mp4"):
            list(decoder.iter_frames(np.arange(10), 4))
        assert decoder._worker.process.poll() is not None  # stopped, not left behind


# ------------------------------------------------------- a valid file one backend cannot read
VALID_FILES_DECORD_CANNOT_READ = {
    "72-px-wide": dict(size=(72, 48)),
    "2x2": dict(size=(2, 2)),
    "gif": dict(size=(32, 32), codec="gif", pix_fmt="rgb8", fps=10),
}


@pytest.mark.parametrize("name", VALID_FILES_DECORD_CANNOT_READ)
def test_decord_failing_on_a_valid_file_says_so_and_suggests_pyav(tmp_path, name):
    pytest.importorskip(
        "decord", reason="decord is not installed: the message logic is tested without it below"
    )
    path = write_video(
        tmp_path / f"valid.{'gif' if name == 'gif' else 'mp4'}", 20, **VALID_FILES_DECORD_CANNOT_READ[name]
    )
    assert read_index(processor(backend="pyav")(path)["pixel_values"]).shape == (1, 4)  # the file is fine
    with pytest.raises(
        VideoDecodingError,
        match=r"decord cannot (open|decode) .*valid\.\w+ \(.*\), but the file is a valid video that PyAV reads: use backend='pyav'",
    ) as error:
        processor(backend="decord")(path)
    assert "corrupt" not in str(error.value) and "/github/workspace" not in str(error.value)


def test_decord_failure_messages_without_decord(tmp_path, monkeypatch):
    """The wording of a decord failure depends on what PyAV makes of the file; no decord needed."""
    from sgdetr_hf import video_io_sgdetr

    valid, broken = write_video(tmp_path / "valid.mp4", 20), tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    reason = RuntimeError("[18:52:25] /github/workspace/src/runtime/ndarray.cc:171: Check failed: sizes")
    message = str(video_io_sgdetr._decord_failure(str(valid), reason, "decode"))
    assert message == (
        f"decord cannot decode {valid} (Check failed: sizes), but the file is a valid video that PyAV reads: "
        "use backend='pyav' (decord fails on some valid files, e.g. 72-px-wide frames and GIFs)"
    )
    message = str(video_io_sgdetr._decord_failure(str(broken), reason, "open"))
    assert message.startswith(f"{broken} is corrupt or truncated: decord cannot open it (Check failed")
    assert message.endswith("PyAV cannot read it either")
    monkeypatch.setattr(video_io_sgdetr, "av", None)  # PyAV not installed: nothing to ask
    message = str(video_io_sgdetr._decord_failure(str(valid), reason, "open"))
    assert "corrupt or one decord cannot decode" in message and "pip install av" in message


# ------------------------------------------------------- damaged timestamps and durations, bad arguments
def damaged_mkv(path, damage):
    """A 10-s, 100-frame MKV (no frame index, unlike MP4) cut in half or with 2000 random bytes mid-file."""
    data = bytearray(write_video(path.with_suffix(".full.mkv"), num_frames=100, fps=10).read_bytes())
    middle = len(data) // 2
    if damage == "cut":
        data = data[:middle]
    else:
        data[middle : middle + 2000] = np.random.default_rng(0).bytes(2000)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("isolate", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_a_damaged_mkv_ending_short_of_its_declared_duration_warns(
    tmp_path, caplog, damage, backend, isolate
):
    # decord reads no declared duration: the header is read with PyAV; a decoding child's warning reaches
    # this process's logger
    path = damaged_mkv(tmp_path / "damaged.mkv", damage)
    logs = caplog.at_level("WARNING", logger="sgdetr_hf.video_io_sgdetr")
    with logs, open_video(path, backend=backend, isolate=isolate) as decoder:
        assert decoder.metadata.duration < 8
    (record,) = caplog.records
    assert str(path) in record.getMessage() and "the container declares 10.000 s" in record.getMessage()
    assert "truncated or corrupt" in record.getMessage()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_valid_mkv_does_not_warn(tmp_path, caplog, backend):
    late_start = write_video(tmp_path / "late.mkv", 10, fps=10, frame_times=np.arange(10) / 10 + 5.0)
    for path, frames in ((write_video(tmp_path / "ok.mkv", num_frames=30, fps=10), 30), (late_start, 10)):
        logs = caplog.at_level("WARNING", logger="sgdetr_hf.video_io_sgdetr")
        with logs, open_video(path, backend=backend) as decoder:
            assert decoder.metadata.num_frames == frames
    assert not caplog.records


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_broken_timestamp_is_refused_not_a_million_clips(tmp_path, backend):
    path = write_video(tmp_path / "jump.mkv", 5, fps=10, frame_times=np.array([0, 0.1, 0.2, 0.3, 1e6]))
    with pytest.raises(
        VideoDecodingError,
        match=r"jump\.mkv has a broken timestamp: frame 4 is 99999\d\.\d+ s after .* makes the video 1000000 s",
    ):
        processor(backend=backend)(path)


def test_a_long_pause_is_not_a_broken_timestamp(tmp_path):
    path = write_video(tmp_path / "pause.mkv", 5, fps=10, frame_times=np.array([0, 0.1, 0.2, 0.3, 50.3]))
    with open_video(path) as decoder:
        assert decoder.metadata.duration == pytest.approx(50.4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_still_of_two_hours_is_read_with_a_warning(tmp_path, caplog, backend):
    # a slideshow encoded with variable frame rate: refused as a broken timestamp before
    times = np.array([0, 0.1, 0.2, 7200.2, 7200.3])
    path = write_video(tmp_path / "slides.mkv", 5, fps=10, frame_times=times)
    with caplog.at_level("WARNING", logger="sgdetr_hf.video_io_sgdetr"), open_video(path, backend) as decoder:
        assert decoder.metadata.duration == pytest.approx(7200.4, abs=1e-3)
    (record,) = caplog.records
    assert "frame 3 is 7200.000 s after frame 2 (typical frame period 0.100 s), one of 1 such gaps" in (
        record.getMessage()
    )


@pytest.mark.parametrize(
    "trim",
    [{"start": float("nan")}, {"end": float("nan")}, {"start": True}, {"end": "1"}, {"start": float("inf")}],
)
def test_trim_times_must_be_finite_numbers(trim):
    (name,) = trim
    with pytest.raises(ValueError, match=f"{name} must be a finite number of seconds"):
        SGDetrVideoProcessor().plan_clips(metadata(np.arange(30) / 10, 3.0), **trim)

    frames = np.zeros((30, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=f"{name} must be a finite number of seconds"):
        processor().preprocess(frames, fps=10, **trim)


def test_an_infinite_end_is_the_end_of_the_video():
    video = metadata(np.arange(30) / 10, 3.0)
    plan = SGDetrVideoProcessor().plan_clips(video, end=float("inf"))
    assert plan.timestamps.tolist() == SGDetrVideoProcessor().plan_clips(video).timestamps.tolist()


@pytest.mark.parametrize(
    "frames, fps, message",
    [
        (np.zeros((5, 8, 8, 3), np.uint8), float("inf"), "finite fps >= 0.001"),
        (np.zeros((5, 8, 8, 3), np.uint8), float("nan"), "finite fps >= 0.001"),
        (np.zeros((5, 8, 8, 3), np.uint8), 1e-9, "finite fps >= 0.001"),  # 5e9 s: 37 GiB of clips
        (np.zeros((5, 8, 8, 3), np.uint8), True, "finite fps >= 0.001"),
        (np.zeros((3, 0, 0, 3), np.uint8), 10, r"frames are empty \(height 0, width 0\)"),
        (np.zeros((3, 8, 0, 3), np.uint8), 10, r"frames are empty \(height 8, width 0\)"),
    ],
)
def test_bad_in_memory_frames(frames, fps, message):
    with pytest.raises(VideoDecodingError, match=message):
        processor()(frames, fps=fps)


def test_decord_failure_on_a_file_without_video_says_so(tmp_path):
    """decord fails on an audio-only file; PyAV's diagnosis (no video stream) is passed on, not 'corrupt'."""
    from sgdetr_hf import video_io_sgdetr

    path = tmp_path / "audio.mkv"
    no_video_stream(path)
    reason = RuntimeError("ERROR cannot find video stream with wanted index: -1")
    message = str(video_io_sgdetr._decord_failure(str(path), reason, "open"))
    assert message.startswith(f"{path} has no video stream (decord cannot open it: ERROR cannot find")
    assert "corrupt" not in message


def rotated_mp4(path, source, sine):
    """``source`` (an MP4) with the display matrix of a rotation whose sine is ``sine`` (1, 0 for 180 degrees, or
    -1) in its track header, as phones store portrait video: the frames stay landscape."""
    data = bytearray(source.read_bytes())
    # tkhd (version 0): size, type, version+flags, 5 x 32-bit times and ids, 8 reserved, 4 x 16-bit, then the matrix
    matrix = data.find(b"tkhd") + 4 + 4 + 20 + 8 + 8
    cosine = 0 if sine else -1
    values = (cosine << 16, sine << 16, 0, -sine << 16, cosine << 16, 0, 0, 0, 1 << 30)
    data[matrix : matrix + 36] = struct.pack(">9i", *values)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sine, quarter_turns", [(1, 3), (0, 2), (-1, 1)])
def test_a_rotated_video_is_read_as_displayed(tmp_path, backend, sine, quarter_turns):
    # PyAV returned the stored landscape frames of a portrait phone video, decord the displayed ones
    source = write_video(tmp_path / "landscape.mp4", 6, fps=10, size=(64, 32))
    with open_video(source) as decoder:
        stored = np.stack(list(decoder.iter_frames(np.arange(6), 6))[0])
    with open_video(rotated_mp4(tmp_path / "rotated.mp4", source, sine), backend=backend) as decoder:
        frames = list(decoder.iter_frames(np.arange(6), 6))[0]
        size = (decoder.metadata.width, decoder.metadata.height)
    np.testing.assert_array_equal(frames, np.rot90(stored, quarter_turns, axes=(1, 2)))
    assert size == ((32, 64) if quarter_turns % 2 else (64, 32))


def raw_h264(path, num_frames=30, fps=10):
    """An H.264 elementary stream: no container, so no timestamps (FFmpeg assumes 25 fps, not the 10 here)."""
    container = av.open(str(path), "w", format="h264")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for index in range(num_frames):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * index, np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raw_stream_without_timestamps_is_refused_saying_how_to_fix_it(tmp_path, backend):
    # it read as 1.2 s at a guessed 25 fps (3 s at its real 10), then failed to seek, as "corrupt or truncated"
    path = raw_h264(tmp_path / "clip.h264")
    with pytest.raises(VideoDecodingError) as error:
        processor(backend=backend)(path)
    message = str(error.value)
    assert message.startswith(
        f"{path} has 30 of 30 frames without timestamps (format h264): a raw video stream"
    )
    assert "`ffmpeg -framerate 30 -i clip.h264 -c copy video.mp4`" in message and "corrupt" not in message


def test_frames_ending_short_of_the_video_streams_own_duration_raise(tmp_path):
    """An MP4 stream declares its own duration (2 s here): frames ending 1.5 s short of it is an error."""
    path = write_video(tmp_path / "ok.mp4", num_frames=50)
    with open_video(path) as decoder:
        declared = video_io_sgdetr._declared_span(decoder._container, decoder._stream)
    video_io_sgdetr._check_declared_duration(str(path), declared, 1.5)  # 0.5 s short: within the margin
    with pytest.raises(
        VideoDecodingError,
        match=r"ok\.mp4: the video frames end at 0\.500 s but its video stream declares 2\.000 s",
    ):
        video_io_sgdetr._check_declared_duration(str(path), declared, 0.5)
