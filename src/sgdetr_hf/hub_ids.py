"""Hub repository ids the installed package uses at run time (the release tooling in ``scripts/`` has the rest)."""

#: The released model: ``sgdetr predict``'s and the demo Space's default.
DEFAULT_MODEL_REPO = "sgdetr-hf/sg-detr-qvhighlights"

#: The weights behind ``DEFAULT_MODEL_REPO`` are not published yet; what to do instead, for messages.
HOW_TO_GET_A_MODEL = (
    f"the released SG-DETR weights are not on the Hub yet ({DEFAULT_MODEL_REPO} is a placeholder id), so give "
    "--model a local model folder: a trained one (best_model/ or final_model/ of `sgdetr train`, with "
    "--encoder DIR from `sgdetr convert-internvideo2` if it has no encoder/), or, to try the whole path with "
    "RANDOM weights (meaningless moments), build one with `sgdetr build-tiny-repo tiny-sgdetr` and pass "
    "--model tiny-sgdetr"
)
