"""Evaluate a trained (or, zero-shot, a pre-trained) SG-DETR on a dataset split.

``python scripts/evaluate.py --model DIR_OR_ID --dataset DIR_OR_ID --split validation --output-dir OUT``
writes ``OUT/predictions_<split>.jsonl`` and ``OUT/metrics_<split>.json``; ``--help`` lists the options.
"""

import sys

from sgdetr_hf.training.commands import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
