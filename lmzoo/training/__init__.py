"""Training: the loop shared by the base, importance and fine-tune stages (``loop``), its settings
record (``settings``, torch-free) and the DDP plumbing (``distributed``)."""
