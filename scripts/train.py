"""Train or fine-tune SG-DETR with a recipe: ``accelerate launch scripts/train.py --recipe qvhighlights ...``.

``--help`` lists the options; see ``sgdetr_hf.training`` for the loop and the recipes.
"""

import sys

from sgdetr_hf.training.commands import train_main

if __name__ == "__main__":
    sys.exit(train_main())
