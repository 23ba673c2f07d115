"""Extract InternVideo2 features for videos and queries into a feature folder: ``sgdetr extract-features``.

    python scripts/extract_features.py --model internvideo2-stage2-1b --videos videos/ \
        --annotations highlight_val_release.jsonl --output features/qvhighlights
    accelerate launch --multi_gpu --num_processes 8 scripts/extract_features.py ...   # sharded
"""

import sys

from sgdetr_hf.commands import main

if __name__ == "__main__":
    sys.exit(main(["extract-features", *sys.argv[1:]]))
