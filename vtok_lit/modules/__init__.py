"""Thin LightningModules over the VTok core."""
