"""Extract InternVideo2 features for videos and queries into a feature folder (see sgdetr_hf.extract_features).

    python scripts/extract_features.py --model internvideo2-stage2-1b --videos videos/ \
        --annotations highlight_val_release.jsonl --output features/qvhighlights
    accelerate launch --multi_gpu --num_processes 8 scripts/extract_features.py ...   # sharded
"""

import argparse
import logging
import sys

from sgdetr_hf import extract_features

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    extract_features.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(extract_features.run(parser.parse_args()))
