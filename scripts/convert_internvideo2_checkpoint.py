"""Convert the official InternVideo2 Stage-2 checkpoint to a native folder (see sgdetr_hf.convert_internvideo2).

    python scripts/convert_internvideo2_checkpoint.py --checkpoint InternVideo2-stage2_1b-224p-f4.pt \
        --vocab bert-large-uncased/vocab.txt --output internvideo2-stage2-1b
"""

import argparse
import logging
import sys

from sgdetr_hf import convert_internvideo2

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    convert_internvideo2.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(convert_internvideo2.run(parser.parse_args()))
