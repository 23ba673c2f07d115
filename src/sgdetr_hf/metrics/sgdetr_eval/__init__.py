"""The metric's Hub folder: ``evaluate`` module (``sgdetr_eval.py``), its numpy logic
(``mr_hd_metrics.py``), card (``README.md``) and Space app (``app.py``).

This file only makes the folder a sub-package of ``sgdetr_hf.metrics``; it is not uploaded.
"""
