"""Hub repository ids the installed package uses at run time (the release tooling in ``scripts/`` has the rest)."""

#: The released model: ``sgdetr predict``'s and the demo Space's default.
DEFAULT_MODEL_REPO = "sgdetr-hf/sg-detr-qvhighlights"
