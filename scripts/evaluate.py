"""Evaluate a trained (or, zero-shot, a pre-trained) SG-DETR on a dataset split.

``python scripts/evaluate.py --model DIR_OR_ID --dataset DIR_OR_ID --split validation --output-dir OUT``
(the same as ``sgdetr evaluate-model``) writes ``OUT/predictions_<split>.jsonl`` and
``OUT/metrics_<split>.json``; ``--help`` lists the options.
"""

import sys

from sgdetr_hf.commands import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-model", *sys.argv[1:]]))
