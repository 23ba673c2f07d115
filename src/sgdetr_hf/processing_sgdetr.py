"""SGDetrProcessor: the InternVideo2 BERT-uncased tokenizer for queries + SGDetrVideoProcessor for videos, and
the post-processing of the model's outputs into windows in seconds."""

import inspect
import logging
import os

import numpy as np
from transformers import ProcessorMixin
from transformers.image_processing_utils import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin

from .loading_sgdetr import PROCESSOR_FOLDER, CheckpointError
from .postprocessing_sgdetr import DEFAULT_TOP_K, is_integer, post_process_moment_retrieval
from .video_processing_sgdetr import SGDetrVideoProcessor

#: Tokens per query, [CLS] and [SEP] included (Moment-DETR / CG-DETR's 32; the TACoS recipe uses 64).
DEFAULT_MAX_QUERY_TOKENS = 32

logger = logging.getLogger(__name__)
#: The shortest query cap: room for [CLS] word [SEP].
MIN_QUERY_LENGTH = 3


class SGDetrProcessor(ProcessorMixin):
    r"""
    Prepares raw inputs for feature extraction with InternVideo2: a video becomes clips of normalised frames
    ([`SGDetrVideoProcessor`]), queries become `[CLS] wordpieces [SEP]` ids (bert-uncased WordPiece).

    Args:
        video_processor ([`SGDetrVideoProcessor`]): the video side.
        tokenizer ([`BertTokenizer`]): WordPiece tokenizer over the bert-large-uncased vocabulary. Build one
            offline with `BertTokenizer(vocab="vocab.txt", model_max_length=32)` (transformers 5 ignores
            `vocab_file=`).
        max_query_length (`int`, defaults to 32): queries are truncated to this many tokens (with [CLS] and
            [SEP]), with a warning. The one query-length cap of the project: training recipes cap their token
            features at the same number (`max_query_tokens`, 64 for TACoS) and save the processor with it,
            so a model sees at inference the query length it was trained on.
    """

    def __init__(
        self, video_processor=None, tokenizer=None, max_query_length: int = DEFAULT_MAX_QUERY_TOKENS, **kwargs
    ):
        if not is_integer(max_query_length):
            raise ValueError(f"max_query_length must be an int (tokens per query), got {max_query_length!r}")
        if max_query_length < MIN_QUERY_LENGTH:
            raise ValueError(
                f"max_query_length must leave room for [CLS] word [SEP] (>= {MIN_QUERY_LENGTH}), got {max_query_length}"
            )
        self.max_query_length = max_query_length
        super().__init__(video_processor, tokenizer, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # transformers resolves the expected video processor class by name, which needs torchvision.
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # Build the video processor from its nested config instead of going through AutoVideoProcessor,
        # which refuses to work without torchvision. The tokenizer is always BERT WordPiece: loading it by
        # class avoids AutoTokenizer following an `auto_map` in the folder's config.json, which would ask
        # the trust-remote-code question where the package is not installed.
        from transformers import BertTokenizer

        # transformers hands an empty dict for a folder without processor_config.json, and builds a tokenizer
        # of the special tokens alone without a vocabulary: both would run, with default video settings and
        # every word an [UNK]. Refuse them, naming the file.
        where = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        where = where.rstrip(os.sep)
        if not processor_dict or "video_processor" not in processor_dict:
            raise CheckpointError(
                f"{where} has no processor_config.json with the video settings: expected {PROCESSOR_FOLDER}"
            )
        video_kwargs = dict(processor_dict["video_processor"])
        video_kwargs.pop("video_processor_type", None)
        try:
            video_processor = SGDetrVideoProcessor(**video_kwargs)
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"{os.path.join(where, 'processor_config.json')}: video_processor: {error}"
            ) from None
        tokenizer = BertTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
            raise CheckpointError(
                f"{where} has no tokenizer vocabulary (tokenizer.json, or vocab.txt): every word would be "
                f"[UNK]; expected {PROCESSOR_FOLDER}"
            )
        return [video_processor, tokenizer]

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        # transformers >= 5.25 builds the sub-processors here instead of in _get_arguments_from_pretrained
        # (and through AutoVideoProcessor, hence torchvision): the same loading, in the form this hook returns,
        # with the kwargs the loaders took (the Hub ones) left out, as transformers' own version does
        video_processor, tokenizer = cls._get_arguments_from_pretrained(
            pretrained_model_name_or_path, processor_dict, **kwargs
        )
        processor_dict = {**processor_dict, "video_processor": video_processor, "tokenizer": tokenizer}
        init_arguments = inspect.signature(cls.__init__).parameters
        return processor_dict, {key: value for key, value in kwargs.items() if key in init_arguments}

    def tokenize_queries(self, text: str | list[str]) -> BatchFeature:
        """Tokenise one or more queries, padded to the longest.

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask`, int64 tensors of shape (num_queries, N).

        Raises:
            ValueError: a query that is not a string or has no word (empty, only whitespace, or only
                characters the tokenizer drops).
        """
        queries = [text] if isinstance(text, str) else list(text)
        if not queries:
            raise ValueError("no query given: pass a non-empty string or list of strings")
        for number, query in enumerate(queries):
            if not isinstance(query, str):
                raise ValueError(f"query {number} is a {type(query).__name__}, expected a string")
            if not query.strip():
                raise ValueError(f"query {number} is empty; every query needs at least one word")
        lengths = np.array([len(ids) for ids in self.tokenizer(queries)["input_ids"]])
        # control, zero-width and lone combining characters pass strip() but the tokenizer drops them: such a
        # query is [CLS] [SEP] alone, and the model would answer it as if it had words
        if (wordless := np.flatnonzero(lengths <= self.tokenizer.num_special_tokens_to_add())).size:
            number = wordless[0]
            raise ValueError(
                f"query {number} ({queries[number]!r}) has no word: the tokenizer drops all its characters "
                "(control, zero-width or combining ones); every query needs at least one word"
            )
        if (too_long := np.flatnonzero(lengths > self.max_query_length)).size:
            logger.warning(
                "%d query(ies) longer than max_query_length=%d tokens were truncated (e.g. query %d: %d tokens)",
                too_long.size,
                self.max_query_length,
                too_long[0],
                lengths[too_long[0]],
            )
        encoding = self.tokenizer(
            queries,
            padding="longest",
            truncation=True,
            max_length=self.max_query_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return BatchFeature(dict(encoding))

    def __call__(
        self,
        videos: str | os.PathLike | np.ndarray | None = None,
        text: str | list[str] | None = None,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Process one video and/or queries.

        Args:
            videos: a video file or (F, H, W, 3) uint8 frames at `fps` (see [`SGDetrVideoProcessor`]).
            text: one query or a list of queries.
            start, end: optional trim of the video in seconds.

        Returns:
            `BatchFeature` with `pixel_values` (L, T, 3, H, W) and `clip_timestamps` (L, 2) for the video,
            `input_ids` and `attention_mask` (num_queries, N) for the text.
        """
        if videos is None and text is None:
            raise ValueError("give a video (videos=...), queries (text=...), or both")
        if videos is None and kwargs:
            raise TypeError(f"unexpected arguments without a video: {sorted(kwargs)}")
        data = {}
        if videos is not None:
            data.update(self.video_processor(videos, fps=fps, start=start, end=end, **kwargs))
        if text is not None:
            data.update(self.tokenize_queries(text))
        return BatchFeature(data)

    def post_process_moment_retrieval(
        self,
        outputs,
        durations=None,
        video_mask=None,
        top_k: int = DEFAULT_TOP_K,
        *,
        config=None,
        clip_length: float | None = None,
        **settings,
    ) -> list[dict[str, list]]:
        """Windows in seconds (best first) and per-clip saliency for every query of a batch of model outputs.

        The function :func:`~sgdetr_hf.post_process_moment_retrieval` (see it for the arguments, the fusion /
        NMS / rounding ``settings`` and the result), with one default of the processor's own: without
        ``config`` or ``clip_length``, clips last as long as this processor cuts them
        (``video_processor.clip_length``).
        """
        if clip_length is None and config is None:
            clip_length = self.video_processor.clip_length
        return post_process_moment_retrieval(
            outputs, durations, video_mask, top_k, config=config, clip_length=clip_length, **settings
        )

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["MIN_QUERY_LENGTH", "SGDetrProcessor"]
