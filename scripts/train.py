"""Train or fine-tune SG-DETR with a recipe: ``accelerate launch scripts/train.py --recipe qvhighlights ...``.

The same as ``sgdetr train``; ``--help`` lists the options; see ``sgdetr_hf.training`` for the loop and
the recipes.
"""

import sys

from sgdetr_hf.commands import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
