"""compliance_sync: segmentation-to-planning compliance sync (see README)."""
