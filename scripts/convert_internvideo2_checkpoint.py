"""Convert the official InternVideo2 Stage-2 checkpoint to a native folder: ``sgdetr convert-internvideo2``.

    python scripts/convert_internvideo2_checkpoint.py --checkpoint InternVideo2-stage2_1b-224p-f4.pt \
        --vocab bert-large-uncased/vocab.txt --output internvideo2-stage2-1b
"""

import sys

from sgdetr_hf.commands import main

if __name__ == "__main__":
    sys.exit(main(["convert-internvideo2", *sys.argv[1:]]))
