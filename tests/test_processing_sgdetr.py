"""SGDetrProcessor: tokenizer + video processor, save/load, AutoProcessor and Hub remote code."""

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, BertTokenizer

from internvideo2_testing import VOCAB, read_index, save_tiny_checkpoint, tiny_processor, write_video
from sgdetr_hf import SGDetrProcessor
from sgdetr_hf.loading_sgdetr import CheckpointError


def test_tokenizer_built_from_the_vocab_file_knows_its_words():
    processor = tiny_processor()
    encoding = processor(text=["A man rides a BIG red bike.", "the dog"])
    # [CLS]=3 a=11 man=14 rides=25 a=11 big=46 red=48 bike=22 .=6 [SEP]=4 (vocab.txt line numbers, from 0)
    assert encoding["input_ids"].tolist() == [
        [3, 11, 14, 25, 11, 46, 48, 22, 6, 4],
        [3, 13, 18, 4, 0, 0, 0, 0, 0, 0],
    ]
    assert encoding["attention_mask"].tolist() == [[1] * 10, [1] * 4 + [0] * 6]
    assert "token_type_ids" not in encoding
    assert len(processor.tokenizer) == len(VOCAB.read_text().split())  # not the 5-token vocab of vocab_file=


def test_long_queries_are_truncated_with_a_warning(caplog):
    processor = SGDetrProcessor(
        tiny_processor().video_processor, tiny_processor().tokenizer, max_query_length=6
    )
    with caplog.at_level(logging.WARNING, logger="sgdetr_hf.processing_sgdetr"):
        encoding = processor(text=["a man rides a big red bike", "a dog"])
    assert "1 query(ies) longer than max_query_length=6" in caplog.text and "query 0: 9 tokens" in caplog.text
    assert encoding["input_ids"].tolist() == [[3, 11, 14, 25, 11, 4], [3, 11, 18, 4, 0, 0]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "query 0 is empty"),
        (["a dog", "   "], "query 1 is empty"),
        # characters the tokenizer drops: zero-width space, byte-order mark, NUL, a lone combining accent
        (["a dog", "\u200b\ufeff"], r"query 1 \('\\u200b\\ufeff'\) has no word"),
        ("\x00\u0301", "query 0 .* has no word"),
        ([], "no query"),
        ([3], "query 0 is a int"),
    ],
)
def test_bad_queries(text, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor()(text=text)


def test_queries_of_emoji_or_punctuation_are_words():
    # punctuation is a token (8: "!"), out-of-vocabulary characters are [UNK] (2): words, unlike characters the
    # tokenizer drops (the zero-width space)
    encoding = tiny_processor()(text=["\U0001f6b2", "!", "a \u200bdog"])
    assert encoding["input_ids"].tolist() == [[3, 2, 4, 0], [3, 8, 4, 0], [3, 11, 18, 4]]


def test_nothing_to_process():
    with pytest.raises(ValueError, match="give a video"):
        tiny_processor()()
    with pytest.raises(ValueError, match="max_query_length"):
        SGDetrProcessor(tiny_processor().video_processor, tiny_processor().tokenizer, max_query_length=2)
    for length in (5.5, True, "32"):
        with pytest.raises(ValueError, match="max_query_length must be an int"):
            SGDetrProcessor(
                tiny_processor().video_processor, tiny_processor().tokenizer, max_query_length=length
            )


def test_video_and_text_together(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=100)
    output = tiny_processor()(videos=path, text="a dog runs", start=1.0)
    assert read_index(output["pixel_values"]).tolist() == [[31, 43, 56, 68], [78, 84, 90, 96]]
    np.testing.assert_allclose(output["clip_timestamps"], [[1, 3], [3, 4]])
    assert output["input_ids"].tolist() == [[3, 11, 18, 27, 4]]


def test_save_load_round_trip(tmp_path):
    processor = SGDetrProcessor(
        tiny_processor(clip_length=1.0, frames_per_clip=8).video_processor,
        tiny_processor().tokenizer,
        max_query_length=12,
    )
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["video_processor"]["clip_length"] == 1.0 and config["max_query_length"] == 12
    for reloaded in (SGDetrProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(reloaded) is SGDetrProcessor
        assert reloaded.max_query_length == 12
        settings = {
            key: value for key, value in processor.video_processor.to_dict().items() if key != "auto_map"
        }
        assert reloaded.video_processor.to_dict() == settings
        assert isinstance(reloaded.tokenizer, BertTokenizer)
        queries = ["butterfly over the trees", "a woman cooking"]
        assert torch.equal(reloaded(text=queries)["input_ids"], processor(text=queries)["input_ids"])


REMOTE_CODE_CHECK = textwrap.dedent(
    """
    import importlib.util, sys
    sys.modules["sgdetr_hf"] = None  # the package is not installed on the loading side
    assert importlib.util.find_spec("torchvision") is None
    import torch
    from transformers import AutoModel, AutoProcessor
    folder, video, expected = sys.argv[1:4]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    inputs = processor(videos=video, text=["a man rides a bike"])
    with torch.no_grad():
        features = model.get_video_features(inputs["pixel_values"]).pooler_output
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).token_embeds
    torch.testing.assert_close(torch.cat([features.flatten(), text.flatten()]), torch.load(expected))
    print("remote code OK")
    """
)


@torch.no_grad()
def test_hub_remote_code_without_the_package_or_torchvision(tmp_path):
    """The saved folder carries the flat modules and loads with trust_remote_code in a process where
    sgdetr_hf cannot be imported; it decodes a video and gives the same features."""
    folder = save_tiny_checkpoint(tmp_path / "hub")
    assert {
        "processing_sgdetr.py",
        "video_processing_sgdetr.py",
        "video_io_sgdetr.py",
        "modeling_internvideo2.py",
    } <= {path.name for path in folder.iterdir()}
    video = write_video(tmp_path / "v.mp4", num_frames=60)
    from sgdetr_hf import InternVideo2Model

    model, processor = (
        InternVideo2Model.from_pretrained(folder).eval(),
        SGDetrProcessor.from_pretrained(folder),
    )
    inputs = processor(videos=video, text=["a man rides a bike"])
    expected = torch.cat(
        [
            model.get_video_features(inputs["pixel_values"]).pooler_output.flatten(),
            model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).token_embeds.flatten(),
        ]
    )
    torch.save(expected, tmp_path / "expected.pt")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_CHECK, str(folder), str(video), str(tmp_path / "expected.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_a_folder_without_processor_files_is_an_error_not_a_default_processor(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path} has no processor_config.json"):
        SGDetrProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("vocabulary", ["tokenizer.json", "vocab.txt"])
def test_a_folder_without_its_tokenizer_vocabulary_is_an_error_not_all_unk(tmp_path, vocabulary):
    tiny_processor().save_pretrained(tmp_path)
    if (
        vocabulary == "vocab.txt"
    ):  # the WordPiece vocabulary instead of tokenizer.json loads the same tokenizer
        (tmp_path / "tokenizer.json").unlink()
        (tmp_path / "vocab.txt").write_text(VOCAB.read_text())
        expected = tiny_processor().tokenize_queries("the dog")["input_ids"]
        assert torch.equal(
            SGDetrProcessor.from_pretrained(tmp_path).tokenize_queries("the dog")["input_ids"], expected
        )
    (tmp_path / vocabulary).unlink()
    with pytest.raises(
        CheckpointError, match=r"has no tokenizer vocabulary \(tokenizer.json, or vocab.txt\)"
    ):
        SGDetrProcessor.from_pretrained(tmp_path)


def test_an_unknown_video_processor_key_names_the_file(tmp_path):
    tiny_processor().save_pretrained(tmp_path)
    config_file = tmp_path / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["video_processor"]["clip_lenght"] = 1.0
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"{config_file}: video_processor: .*\['clip_lenght'\]"):
        SGDetrProcessor.from_pretrained(tmp_path)
