"""Attention-head statistics and head masks (Mask-LRP Section 4.2)."""
