"""Training recipes (YAML), one per dataset; see ``sgdetr_hf.training.recipe``."""
